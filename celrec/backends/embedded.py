"""In-process backends for the one-command run and for unit tests.

The event log keeps Kafka's model (topics, partitions, offsets, consumer-group commits)
so the trainer cannot tell it from Kafka. It is bounded: when a partition holds
``capacity`` records that every group has not yet consumed, producers get
:class:`EventLogUnavailable` (back-pressure, so nothing acknowledged is dropped).
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence

from celrec.backends.base import (
    EventConsumer,
    EventLog,
    EventLogUnavailable,
    EventProducer,
    LogRecord,
    StateStore,
    Subscription,
    TopicPartition,
)


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    if key is None:
        return counter % partitions
    return zlib.crc32(key) % partitions


class _Partition:
    def __init__(self) -> None:
        self.base = 0  # offset of records[0]
        self.records: deque[LogRecord] = deque()

    @property
    def end(self) -> int:
        return self.base + len(self.records)


class EmbeddedEventLog(EventLog):
    def __init__(self, capacity: int = 1_000_000, partitions: int = 4):
        self.capacity = capacity
        self.partitions = partitions
        self._topics: dict[str, list[_Partition]] = {}
        self._commits: dict[str, dict[TopicPartition, int]] = {}
        self._groups: dict[str, set[str]] = {}  # topic -> groups that consume it
        self._cond = threading.Condition()
        self._counter = 0
        self.available = True  # tests flip this to simulate an outage

    def _topic(self, topic: str) -> list[_Partition]:
        parts = self._topics.get(topic)
        if parts is None:
            parts = self._topics[topic] = [_Partition() for _ in range(self.partitions)]
        return parts

    def _trim(self, topic: str, index: int, part: _Partition) -> None:
        """Drop records every consumer group of the topic has committed past."""
        groups = self._groups.get(topic, set())
        floors = [self._commits.get(group, {}).get((topic, index)) for group in groups]
        if not floors or any(f is None for f in floors):
            return
        floor = min(f for f in floors if f is not None)
        while part.records and part.base < floor:
            part.records.popleft()
            part.base += 1

    def append(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        with self._cond:
            if not self.available:
                raise EventLogUnavailable("embedded event log is unavailable")
            parts = self._topic(topic)
            targets = []
            for key, _ in messages:
                self._counter += 1
                targets.append(partition_for(key, self.partitions, self._counter))
            for index in set(targets):
                part = parts[index]
                if len(part.records) + targets.count(index) > self.capacity:
                    self._trim(topic, index, part)
                if len(part.records) + targets.count(index) > self.capacity:
                    raise EventLogUnavailable(
                        f"embedded event log is full ({self.capacity} unconsumed records)"
                    )
            now_ms = int(time.time() * 1000)
            for (key, value), index in zip(messages, targets, strict=True):
                part = parts[index]
                part.records.append(LogRecord(topic, index, part.end, key, value, now_ms))
            self._cond.notify_all()

    def producer(self) -> EventProducer:
        return _EmbeddedProducer(self)

    def consumer(self, topics: Sequence[str], group: str) -> EventConsumer:
        return _EmbeddedConsumer(self, list(topics), group)


class _EmbeddedProducer(EventProducer):
    def __init__(self, log: EmbeddedEventLog):
        self._log = log

    def send(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]],
             timeout_s: float) -> None:
        self._log.append(topic, messages)

    def close(self) -> None:
        pass


class _EmbeddedConsumer(EventConsumer):
    def __init__(self, log: EmbeddedEventLog, topics: list[str], group: str):
        self._log = log
        self._group = group
        with log._cond:
            commits = log._commits.setdefault(group, {})
            self._positions: dict[TopicPartition, int] = {}
            for topic in topics:
                log._groups.setdefault(topic, set()).add(group)
                for index, part in enumerate(log._topic(topic)):
                    start = commits.get((topic, index), part.base)
                    self._positions[(topic, index)] = max(start, part.base)

    def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        deadline = time.monotonic() + timeout_s
        with self._log._cond:
            while True:
                out: list[LogRecord] = []
                for (topic, index), pos in self._positions.items():
                    part = self._log._topics[topic][index]
                    pos = max(pos, part.base)
                    take = min(part.end - pos, max_records - len(out))
                    if take > 0:
                        first = pos - part.base
                        out.extend(part.records[i] for i in range(first, first + take))
                        self._positions[(topic, index)] = pos + take
                    if len(out) >= max_records:
                        break
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self._log._cond.wait(remaining)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        with self._log._cond:
            self._log._commits.setdefault(self._group, {}).update(offsets)

    def committed(self) -> dict[TopicPartition, int]:
        with self._log._cond:
            commits = self._log._commits.get(self._group, {})
            return {tp: off for tp, off in commits.items() if tp in self._positions}

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        with self._log._cond:
            for tp, offset in offsets.items():
                if tp in self._positions:
                    self._positions[tp] = offset

    def end_offsets(self) -> dict[TopicPartition, int]:
        with self._log._cond:
            return {tp: self._log._topics[tp[0]][tp[1]].end for tp in self._positions}

    def position(self) -> dict[TopicPartition, int]:
        with self._log._cond:
            return dict(self._positions)

    def close(self) -> None:
        pass


class _EmbeddedSubscription(Subscription):
    def __init__(self, store: EmbeddedStateStore, channel: str):
        self._store = store
        self._channel = channel
        self.queue: queue.Queue[bytes] = queue.Queue(maxsize=10_000)

    def get(self, timeout_s: float) -> bytes | None:
        try:
            return self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        with self._store._lock:
            subs = self._store._subscribers.get(self._channel, [])
            if self in subs:
                subs.remove(self)


class EmbeddedStateStore(StateStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = {}
        self._lists: dict[str, list[bytes]] = {}
        self._expiry: dict[str, float] = {}
        self._subscribers: dict[str, list[_EmbeddedSubscription]] = {}

    def _expire_due(self, keys: Sequence[str] | None = None) -> None:
        now = time.monotonic()
        for key in list(self._expiry if keys is None else keys):
            deadline = self._expiry.get(key)
            if deadline is not None and deadline <= now:
                self._values.pop(key, None)
                self._lists.pop(key, None)
                del self._expiry[key]

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self._expire_due([key])
            return self._values.get(key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            self._expire_due(keys)
            return [self._values.get(k) for k in keys]

    def put(self, values: Mapping[str, bytes], ttl_s: float | None = None) -> None:
        with self._lock:
            for key, value in values.items():
                self._values[key] = bytes(value)
                if ttl_s is None:
                    self._expiry.pop(key, None)
                else:
                    self._expiry[key] = time.monotonic() + ttl_s

    def delete(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)
                self._lists.pop(key, None)
                self._expiry.pop(key, None)

    def expire(self, keys: Sequence[str], ttl_s: float) -> None:
        with self._lock:
            self._expire_due(keys)  # an expired key must not come back
            deadline = time.monotonic() + ttl_s
            for key in keys:
                if key in self._values or key in self._lists:
                    self._expiry[key] = deadline

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            self._expire_due()
            found = [k for k in (*self._values, *self._lists) if k.startswith(prefix)]
            return sorted(found)

    def list_push(self, key: str, values: Sequence[bytes], max_length: int) -> None:
        with self._lock:
            self._expire_due([key])  # pushing to an expired list starts a new one
            current = self._lists.get(key, [])
            self._lists[key] = ([bytes(v) for v in reversed(values)] + current)[:max_length]

    def list_range(self, key: str, count: int) -> list[bytes]:
        with self._lock:
            self._expire_due([key])
            return list(self._lists.get(key, [])[:count])

    def publish(self, channel: str, message: bytes) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(channel, []))
        for sub in subscribers:
            try:
                sub.queue.put_nowait(bytes(message))
            except queue.Full:  # a stalled reader must not block the writer
                pass

    def subscribe(self, channel: str) -> Subscription:
        sub = _EmbeddedSubscription(self, channel)
        with self._lock:
            self._subscribers.setdefault(channel, []).append(sub)
        return sub

    def memory_bytes(self, keys: Sequence[str]) -> int:
        with self._lock:
            self._expire_due(keys)
            total = 0
            for key in keys:
                if key in self._values:
                    total += len(key) + len(self._values[key])
                elif key in self._lists:
                    total += len(key) + sum(len(v) for v in self._lists[key])
            return total

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["EmbeddedEventLog", "EmbeddedStateStore"]
