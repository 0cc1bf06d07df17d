"""The two small interfaces every backend implements: an event log and a state store.

Implementations: ``embedded`` (in-process, for the one-command run and unit tests),
``kafka`` and ``redis``. One contract suite (tests/integration/test_backend_contract.py)
runs against every implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TopicPartition = tuple[str, int]


class BackendUnavailable(RuntimeError):
    """The backend cannot be reached or refused the request; the caller may retry later."""


class EventLogUnavailable(BackendUnavailable):
    pass


class StateStoreUnavailable(BackendUnavailable):
    pass


@dataclass(frozen=True)
class LogRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class EventProducer(ABC):
    @abstractmethod
    def send(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]],
             timeout_s: float) -> None:
        """Append messages, returning only once the log has acknowledged every one.

        Raises :class:`EventLogUnavailable` if that cannot be done within ``timeout_s``;
        then none of the messages may be reported as accepted.
        """

    @abstractmethod
    def close(self) -> None: ...


class EventConsumer(ABC):
    """A consumer with manually assigned partitions (all partitions of its topics)."""

    @abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record, for the consumer group, the next offset to read per partition."""

    @abstractmethod
    def committed(self) -> dict[TopicPartition, int]:
        """The group's committed offsets (partitions without a commit are absent)."""

    @abstractmethod
    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Continue reading each given partition at the given offset."""

    @abstractmethod
    def end_offsets(self) -> dict[TopicPartition, int]:
        """Offset after the last record of each assigned partition (for lag)."""

    @abstractmethod
    def position(self) -> dict[TopicPartition, int]:
        """The next offset this consumer will read per assigned partition."""

    @abstractmethod
    def close(self) -> None: ...


class EventLog(ABC):
    @abstractmethod
    def producer(self) -> EventProducer: ...

    @abstractmethod
    def consumer(self, topics: Sequence[str], group: str) -> EventConsumer:
        """A consumer of all partitions of ``topics`` starting at the group's committed
        offsets (or the earliest retained offset where the group has none)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release shared resources."""


class Subscription(ABC):
    @abstractmethod
    def get(self, timeout_s: float) -> bytes | None:
        """The next message on the channel, or None if none arrived within ``timeout_s``."""

    @abstractmethod
    def close(self) -> None: ...


class StateStore(ABC):
    """A key-value store of byte strings with atomic multi-key writes and pub/sub."""

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    @abstractmethod
    def put(self, values: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        """Write all values atomically: a reader sees all of them or none."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None: ...

    @abstractmethod
    def expire(self, keys: Sequence[str], ttl_s: float) -> None:
        """Let existing keys expire after ``ttl_s`` seconds."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """All keys starting with ``prefix`` (for maintenance and tests, not hot paths)."""

    @abstractmethod
    def list_push(self, key: str, values: Sequence[bytes], max_length: int) -> None:
        """Prepend values (the last given ends up first) and keep the newest ``max_length``."""

    def list_push_many(self, values: Mapping[str, Sequence[bytes]], max_length: int,
                       ttl_s: float | None = None) -> None:
        """:meth:`list_push` for many keys (one round trip where the store allows it),
        each list then expiring ``ttl_s`` after its last push."""
        for key, items in values.items():
            self.list_push(key, items, max_length)
        if ttl_s is not None and values:
            self.expire(list(values), ttl_s)

    @abstractmethod
    def list_range(self, key: str, count: int) -> list[bytes]:
        """The first ``count`` elements (newest first)."""

    @abstractmethod
    def publish(self, channel: str, message: bytes) -> None: ...

    @abstractmethod
    def subscribe(self, channel: str) -> Subscription: ...

    @abstractmethod
    def memory_bytes(self, keys: Sequence[str]) -> int:
        """Bytes the store uses for these keys (approximate where the store only estimates)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StateStoreUnavailable` if the store cannot be reached."""

    @abstractmethod
    def close(self) -> None: ...
