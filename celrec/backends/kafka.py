"""Kafka event log (kafka-python).

The producer waits for ``acks=all`` on every message and reports failure as
:class:`EventLogUnavailable`, so nothing is reported accepted that Kafka has not acknowledged.
The consumer is a single owner of the stream: it ``assign()``s every partition of its topics
(no group rebalancing) and commits offsets for its group explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTP
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from celrec.backends.base import (
    EventConsumer,
    EventLog,
    EventLogUnavailable,
    EventProducer,
    LogRecord,
    TopicPartition,
)
from celrec.settings import Settings

CONSUMER_OP_TIMEOUT_S = 10.0  # commit / committed / end_offsets / position against the broker
RECONNECT_BACKOFF_MAX_MS = 1000  # the default (30 s) would delay recovery after an outage


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by producer, consumer and admin client."""
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.kafka_bootstrap_servers.split(",")],
        "api_version": settings.kafka_api_version_tuple,
        "security_protocol": settings.kafka_security_protocol,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        config["ssl_cafile"] = settings.kafka_ssl_cafile
    return config


def _unavailable(what: str, exc: BaseException) -> EventLogUnavailable:
    return EventLogUnavailable(f"kafka {what} failed: {type(exc).__name__}: {exc}")


class KafkaEventLog(EventLog):
    """Kafka-backed event log.

    ``partitions`` is used only where this class creates topics (brokers newer than 0.9);
    None means the broker's default. ``metadata_timeout_s`` bounds how long ``consumer()``
    waits for a (new) topic's partitions to have leaders.
    """

    def __init__(self, settings: Settings, partitions: int | None = None,
                 metadata_timeout_s: float = 30.0):
        self.settings = settings
        self.partitions = partitions
        self.metadata_timeout_s = metadata_timeout_s
        self._config = client_config(settings)
        self._timeout_ms = int(settings.produce_timeout_s * 1000)
        self._lock = threading.Lock()
        self._metadata_client: KafkaProducer | None = None
        self._created: set[str] = set()

    @property
    def legacy(self) -> bool:
        """A pre-0.11 broker: no admin API (before 0.10.1), no idempotent producer."""
        version = self.settings.kafka_api_version_tuple
        return version is not None and version < (0, 11)

    def new_kafka_producer(self) -> KafkaProducer:
        """A KafkaProducer whose every blocking step is bounded by ``produce_timeout_s``."""
        extra: dict[str, Any] = {}
        if self.legacy:
            # Without idempotence, retries could reorder a key's messages unless one
            # request is in flight at a time.
            extra["max_in_flight_requests_per_connection"] = 1
        return KafkaProducer(
            **self._config, **extra, acks="all", linger_ms=5,
            max_block_ms=self._timeout_ms, request_timeout_ms=self._timeout_ms,
            delivery_timeout_ms=self._timeout_ms + 5, bootstrap_timeout_ms=self._timeout_ms,
        )

    def producer(self) -> EventProducer:
        return _KafkaProducer(self)

    def consumer(self, topics: Sequence[str], group: str) -> EventConsumer:
        self.ensure_topics(topics)
        partitions = [KafkaTP(t, p) for t in topics for p in self.wait_for_partitions(t)]
        try:
            consumer = KafkaConsumer(
                **self._config, group_id=group, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=30_000,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        except KafkaError as exc:
            raise _unavailable("consumer", exc) from exc
        consumer.assign(partitions)
        return _KafkaConsumer(consumer, partitions)

    def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics (brokers after 0.9; 0.9 auto-creates on first metadata)."""
        missing = [t for t in topics if t not in self._created]
        if not missing or self.legacy:
            return
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(**self._config, request_timeout_ms=self._timeout_ms,
                                     bootstrap_timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise _unavailable("admin client", exc) from exc
        try:
            existing = set(admin.list_topics())
            spec = {"num_partitions": self.partitions or -1, "replication_factor": -1}
            for topic in missing:
                if topic not in existing:
                    try:
                        admin.create_topics({topic: spec}, timeout_ms=self._timeout_ms)
                    except TopicAlreadyExistsError:
                        pass  # created concurrently by someone else
                self._created.add(topic)
        except KafkaError as exc:
            raise _unavailable("topic creation", exc) from exc
        finally:
            admin.close()

    def wait_for_partitions(self, topic: str) -> list[int]:
        """All partitions of ``topic`` once each has a leader.

        A just-created topic shows up in metadata before its partitions have leaders, so
        poll the metadata until they all do (or ``metadata_timeout_s`` passes).
        """
        deadline = time.monotonic() + self.metadata_timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                with self._lock:
                    if self._metadata_client is None:
                        self._metadata_client = self.new_kafka_producer()
                    client = self._metadata_client
                partitions = client.partitions_for(topic)
                live = client._metadata.available_partitions_for_topic(topic)  # no public API
                if partitions and live is not None and len(live) == len(partitions):
                    return sorted(partitions)
                client._metadata.request_update()
            except KafkaError as exc:
                last = exc
            time.sleep(0.1)
        raise EventLogUnavailable(
            f"kafka topic {topic!r} has no leader for every partition after "
            f"{self.metadata_timeout_s:.0f}s (last error: {last!r})"
        )

    def close(self) -> None:
        with self._lock:
            if self._metadata_client is not None:
                self._metadata_client.close(timeout=1)
                self._metadata_client = None


class _KafkaProducer(EventProducer):
    def __init__(self, log: KafkaEventLog):
        self._log = log
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _client(self) -> KafkaProducer:
        # Created on first use (and again after a failed creation): with api_version auto
        # the constructor needs a reachable broker, and the service must start without one.
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = self._log.new_kafka_producer()
                except KafkaError as exc:
                    raise _unavailable("producer", exc) from exc
            return self._producer

    def send(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]],
             timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        producer = self._client()
        try:
            futures = [producer.send(topic, value=value, key=key) for key, value in messages]
            # Wait for this request's own acks only: flush() would also wait for every
            # concurrent request's messages, serialising small posts behind each other.
            for future in futures:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaError as exc:
            # Unacknowledged messages may still be delivered later (the client retries
            # until delivery_timeout_ms); event ids make such duplicates harmless.
            raise _unavailable("produce", exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self._log.settings.produce_timeout_s)
                self._producer = None


class _KafkaConsumer(EventConsumer):
    def __init__(self, consumer: KafkaConsumer, partitions: list[KafkaTP]):
        self._consumer = consumer
        self._partitions = partitions
        self._timeout_ms = int(CONSUMER_OP_TIMEOUT_S * 1000)

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                          max_records=max_records)
        except KafkaError as exc:
            raise _unavailable("poll", exc) from exc
        return [
            LogRecord(r.topic, r.partition, r.offset, r.key, r.value,
                      r.timestamp if r.timestamp is not None and r.timestamp >= 0 else None)
            for records in batches.values() for r in records
        ]

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        payload = {KafkaTP(t, p): OffsetAndMetadata(off, "", -1)
                   for (t, p), off in offsets.items()}
        try:
            self._consumer.commit(payload, timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise _unavailable("commit", exc) from exc

    def committed(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        try:
            for tp in self._partitions:
                offset = self._consumer.committed(tp, timeout_ms=self._timeout_ms)
                if offset is not None and offset >= 0:
                    out[(tp.topic, tp.partition)] = offset
        except KafkaError as exc:
            raise _unavailable("committed", exc) from exc
        return out

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        for (topic, partition), offset in offsets.items():
            tp = KafkaTP(topic, partition)
            if tp in self._partitions:
                self._consumer.seek(tp, offset)

    def end_offsets(self) -> dict[TopicPartition, int]:
        try:
            ends = self._consumer.end_offsets(self._partitions, timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise _unavailable("end_offsets", exc) from exc
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}

    def position(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        try:
            for tp in self._partitions:
                offset = self._consumer.position(tp, timeout_ms=self._timeout_ms)
                if offset is None:  # the broker did not answer in time
                    raise EventLogUnavailable(f"kafka position of {tp} unknown")
                out[(tp.topic, tp.partition)] = offset
        except KafkaError as exc:
            raise _unavailable("position", exc) from exc
        return out

    def close(self) -> None:
        self._consumer.close(autocommit=False, timeout_ms=self._timeout_ms)


__all__ = ["KafkaEventLog", "client_config"]
