"""Redis state store (redis-py).

Multi-key writes go through MULTI/EXEC, so a reader sees all of a write or none of it.
Every failure to reach Redis surfaces as :class:`StateStoreUnavailable`, one exception
type for callers to handle.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from celrec.backends.base import StateStore, StateStoreUnavailable, Subscription

T = TypeVar("T")

# Failures that mean "Redis cannot serve this now" rather than a bug in the request.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)


@contextmanager
def _guard(what: str) -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StateStoreUnavailable(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class _RedisSubscription(Subscription):
    def __init__(self, pubsub: redis.client.PubSub):
        self._pubsub = pubsub

    def get(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        with _guard("subscription read"):
            while True:
                remaining = deadline - time.monotonic()
                message = self._pubsub.get_message(timeout=max(0.0, remaining))
                if message is not None and message["type"] == "message":
                    return bytes(message["data"])
                if remaining <= 0:
                    return None

    def close(self) -> None:
        try:
            self._pubsub.close()
        except _UNAVAILABLE:
            pass  # the connection is gone anyway


class RedisStateStore(StateStore):
    """State store on one Redis database; ``url`` may be ``redis://`` or ``rediss://`` (TLS)."""

    def __init__(self, url: str, socket_timeout_s: float = 3.0):
        self.url = url
        self.socket_timeout_s = socket_timeout_s
        # One quick retry reconnects a pooled connection that a Redis restart closed.
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1)
        self._client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
            retry=retry, health_check_interval=30,
        )

    def _run(self, what: str, call: Callable[[], T]) -> T:
        with _guard(what):
            return call()

    def get(self, key: str) -> bytes | None:
        return self._run("get", lambda: self._client.get(key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return self._run("get_many", lambda: list(self._client.mget(list(keys))))

    def put(self, values: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        if not values:
            return
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        with _guard("put"):
            pipe = self._client.pipeline(transaction=True)
            for key, value in values.items():
                pipe.set(key, value, px=px)  # a plain SET also drops an earlier TTL
            pipe.execute()

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._run("delete", lambda: self._client.delete(*keys))

    def expire(self, keys: Sequence[str], ttl_s: float) -> None:
        if not keys:
            return
        px = max(1, int(ttl_s * 1000))
        with _guard("expire"):
            pipe = self._client.pipeline(transaction=True)
            for key in keys:
                pipe.pexpire(key, px)
            pipe.execute()

    def keys(self, prefix: str) -> list[str]:
        pattern = _glob_escape(prefix) + "*"
        with _guard("keys"):
            found = {k.decode() for k in self._client.scan_iter(match=pattern, count=1000)}
        return sorted(found)

    def list_push(self, key: str, values: Sequence[bytes], max_length: int) -> None:
        with _guard("list_push"):
            pipe = self._client.pipeline(transaction=True)
            if values:
                pipe.lpush(key, *values)  # pushes left to right: the last ends up first
            if max_length > 0:
                pipe.ltrim(key, 0, max_length - 1)
            else:
                pipe.delete(key)
            pipe.execute()

    def list_push_many(self, values: Mapping[str, Sequence[bytes]], max_length: int,
                       ttl_s: float | None = None) -> None:
        if not values:
            return
        with _guard("list_push_many"):
            pipe = self._client.pipeline(transaction=False)  # one round trip, no MULTI needed
            for key, items in values.items():
                if items:
                    pipe.lpush(key, *items)
                pipe.ltrim(key, 0, max_length - 1) if max_length > 0 else pipe.delete(key)
                if ttl_s is not None:
                    pipe.pexpire(key, max(1, int(ttl_s * 1000)))
            pipe.execute()

    def list_range(self, key: str, count: int) -> list[bytes]:
        if count <= 0:
            return []
        return self._run("list_range", lambda: list(self._client.lrange(key, 0, count - 1)))

    def publish(self, channel: str, message: bytes) -> None:
        self._run("publish", lambda: self._client.publish(channel, message))

    def subscribe(self, channel: str) -> Subscription:
        pubsub = self._client.pubsub()
        with _guard("subscribe"):
            pubsub.subscribe(channel)
            # Wait for the confirmation: a message published before the server has
            # registered the subscription would be lost.
            deadline = time.monotonic() + self.socket_timeout_s
            while True:
                message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    pubsub.close()
                    raise StateStoreUnavailable(f"redis did not confirm subscribe to {channel}")
        return _RedisSubscription(pubsub)

    def memory_bytes(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        with _guard("memory_bytes"):
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)  # 0: count every element, not a sample
            sizes: list[Any] = pipe.execute()
        return sum(int(s) for s in sizes if s is not None)

    def ping(self) -> None:
        self._run("ping", self._client.ping)

    def close(self) -> None:
        self._client.close()


__all__ = ["RedisStateStore"]
