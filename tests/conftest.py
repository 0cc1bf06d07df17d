"""Shared fixtures: real Kafka and Redis servers, and settings with per-test names.

``kafka_broker`` and ``redis_server`` are session-scoped and started on first use. A test
that needs one fails (never skips) when it cannot be started. Give every test its own
topics / key prefix (``make_settings`` does) so tests never see each other's data.

Environment overrides (use servers you already run instead of starting them):
``CELREC_TEST_REDIS_URL``, ``CELREC_TEST_KAFKA_BOOTSTRAP_SERVERS`` (with
``CELREC_TEST_KAFKA_API_VERSION``, default ``auto``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from celrec.settings import Settings
from tests.localservers import LocalKafka, LocalRedis

S = TypeVar("S", LocalKafka, LocalRedis)


@dataclass
class ExternalKafka:
    """A broker given by the environment; it cannot be stopped or restarted by tests."""

    bootstrap_servers: str
    api_version: str = "auto"


@dataclass
class ExternalRedis:
    url: str


def _running(server: S, what: str) -> Iterator[S]:
    """Start ``server`` for the session; failing to start fails the test (never skips)."""
    try:
        server.start()
    except Exception as exc:  # any reason fails the test, with its text
        server.close()
        pytest.fail(f"cannot start {what}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalKafka | ExternalKafka]:
    """A running Kafka: ``.bootstrap_servers``, ``.api_version`` (pass to Settings).

    A LocalKafka (0.9 broker) unless CELREC_TEST_KAFKA_BOOTSTRAP_SERVERS is set. Tests that
    stop or restart it must leave it running (``kafka_broker.start()``).
    """
    external = os.environ.get("CELREC_TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield ExternalKafka(external, os.environ.get("CELREC_TEST_KAFKA_API_VERSION", "auto"))
        return
    yield from _running(LocalKafka(), "a local Kafka broker")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis | ExternalRedis]:
    """A running Redis: ``.url``. A LocalRedis unless CELREC_TEST_REDIS_URL is set."""
    external = os.environ.get("CELREC_TEST_REDIS_URL")
    if external:
        import redis

        try:
            redis.Redis.from_url(external, socket_timeout=3, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            pytest.fail(f"CELREC_TEST_REDIS_URL={external} is unreachable: {exc}",
                        pytrace=False)
        yield ExternalRedis(external)
        return
    yield from _running(LocalRedis(), "a local redis-server")


@pytest.fixture
def unique() -> str:
    """A short random id for this test's topics, groups and keys."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, unique: str) -> Callable[..., Settings]:
    """``make_settings(kafka=False, redis=False, **overrides) -> Settings``.

    Topics, consumer group and state prefix are unique to the test; ``kafka=True`` /
    ``redis=True`` point the settings at the real servers (starting them if needed).
    """

    def build(kafka: bool = False, redis: bool = False, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_events_topic": f"events-{unique}",
            "kafka_dead_letter_topic": f"events-{unique}.dlq",
            "kafka_consumer_group": f"trainer-{unique}",
            "state_prefix": f"test-{unique}",
        }
        if kafka:
            broker = request.getfixturevalue("kafka_broker")
            values.update(event_log="kafka", kafka_bootstrap_servers=broker.bootstrap_servers,
                          kafka_api_version=broker.api_version)
        if redis:
            values.update(state_store="redis",
                          redis_url=request.getfixturevalue("redis_server").url)
        values.update(overrides)
        return Settings(**values)

    return build
