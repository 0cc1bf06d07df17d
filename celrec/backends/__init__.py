"""Event-log and state-store backends, chosen by settings."""

from __future__ import annotations

from celrec.backends.base import (
    BackendUnavailable,
    EventConsumer,
    EventLog,
    EventLogUnavailable,
    EventProducer,
    LogRecord,
    StateStore,
    StateStoreUnavailable,
    Subscription,
    TopicPartition,
)
from celrec.settings import Settings


def make_event_log(settings: Settings) -> EventLog:
    if settings.event_log == "kafka":
        from celrec.backends.kafka import KafkaEventLog

        return KafkaEventLog(settings)
    from celrec.backends.embedded import EmbeddedEventLog

    return EmbeddedEventLog(
        capacity=settings.embedded_log_capacity, partitions=settings.embedded_log_partitions
    )


def make_state_store(settings: Settings) -> StateStore:
    if settings.state_store == "redis":
        from celrec.backends.redis import RedisStateStore

        return RedisStateStore(settings.redis_url)
    from celrec.backends.embedded import EmbeddedStateStore

    return EmbeddedStateStore()


__all__ = [
    "BackendUnavailable", "EventConsumer", "EventLog", "EventLogUnavailable", "EventProducer",
    "LogRecord", "StateStore", "StateStoreUnavailable", "Subscription", "TopicPartition",
    "make_event_log", "make_state_store",
]
