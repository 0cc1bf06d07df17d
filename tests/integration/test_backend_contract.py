"""One contract suite for every backend: the same tests run against each implementation.

Event logs: embedded and Kafka. State stores: embedded and Redis. The real servers come
from the session fixtures in tests/conftest.py; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from celrec.backends import (
    EventConsumer,
    EventLog,
    EventLogUnavailable,
    LogRecord,
    StateStore,
    StateStoreUnavailable,
)
from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from tests.localservers import free_port

pytestmark = pytest.mark.timeout(120)

SEND_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- fixtures


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.integration)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(kind: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(kafka=kind == "kafka", produce_timeout_s=5.0)


@pytest.fixture
def event_log(kind: str, settings: Settings) -> Iterator[EventLog]:
    if kind == "kafka":
        from celrec.backends.kafka import KafkaEventLog

        log: EventLog = KafkaEventLog(settings)
    else:
        log = EmbeddedEventLog(capacity=10_000, partitions=2)
    yield log
    log.close()


@pytest.fixture
def topic(settings: Settings) -> str:
    return settings.kafka_events_topic


@pytest.fixture
def group(settings: Settings) -> str:
    return settings.kafka_consumer_group


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "redis":
        from celrec.backends.redis import RedisStateStore

        backend: StateStore = RedisStateStore(request.getfixturevalue("redis_server").url)
    else:
        backend = EmbeddedStateStore()
    yield backend
    backend.close()


@pytest.fixture
def prefix(unique: str) -> str:
    return f"contract-{unique}:"


# ---------------------------------------------------------------- helpers


class Consumers:
    """Opens consumers and closes them all at the end of the test."""

    def __init__(self, log: EventLog):
        self.log = log
        self.open: list[EventConsumer] = []

    def __call__(self, topic: str, group: str) -> EventConsumer:
        consumer = self.log.consumer([topic], group)
        self.open.append(consumer)
        return consumer

    def close(self) -> None:
        for consumer in self.open:
            consumer.close()


@pytest.fixture
def consumer_of(event_log: EventLog) -> Iterator[Consumers]:
    consumers = Consumers(event_log)
    yield consumers
    consumers.close()


def poll_until(consumer: EventConsumer, count: int, timeout_s: float = 20.0) -> list[LogRecord]:
    """Poll until ``count`` records arrived (or the deadline), then check nothing more comes."""
    records: list[LogRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records += consumer.poll(max(1, count - len(records)), 0.5)
    assert len(records) == count, f"got {len(records)} of {count} records"
    assert consumer.poll(100, 0.3) == [], "more records than were produced"
    return records


def produce(event_log: EventLog, topic: str,
            messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = event_log.producer()
    try:
        producer.send(topic, messages, SEND_TIMEOUT_S)
    finally:
        producer.close()


def keyed(count: int, keys: int = 5) -> list[tuple[bytes | None, bytes]]:
    return [(f"user-{i % keys}".encode(), f"value-{i}".encode()) for i in range(count)]


def total(offsets: dict[tuple[str, int], int]) -> int:
    return sum(offsets.values())


# ---------------------------------------------------------------- event log


def test_every_message_is_consumed_once_with_key_and_value(event_log, topic, group, consumer_of):
    messages = keyed(40) + [(None, f"keyless-{i}".encode()) for i in range(10)]
    messages.append((b"binary\x00key", b"\xff\x00 binary value"))
    produce(event_log, topic, messages)
    records = poll_until(consumer_of(topic, group), len(messages))
    assert Counter((r.key, r.value) for r in records) == Counter(messages)
    assert len({(r.partition, r.offset) for r in records}) == len(records)
    assert all(r.topic == topic for r in records)


def test_messages_with_one_key_stay_in_order_in_one_partition(event_log, topic, group,
                                                              consumer_of):
    messages = keyed(120, keys=4)
    producer = event_log.producer()
    for start in range(0, len(messages), 30):  # several sends: order holds across them too
        producer.send(topic, messages[start:start + 30], SEND_TIMEOUT_S)
    producer.close()
    by_key: dict[bytes | None, list[LogRecord]] = {}
    for record in poll_until(consumer_of(topic, group), len(messages)):
        by_key.setdefault(record.key, []).append(record)
    for key, records in by_key.items():
        assert len({r.partition for r in records}) == 1, f"key {key!r} in several partitions"
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets)
        assert [r.value for r in records] == [v for k, v in messages if k == key]


def test_a_new_consumer_of_the_group_resumes_after_the_committed_offsets(
        event_log, topic, group, consumer_of):
    produce(event_log, topic, keyed(30))
    first = consumer_of(topic, group)
    records = poll_until(first, 30)
    assert first.committed() == {}
    # commit about half of each partition
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    commits = {tp: end // 2 for tp, end in ends.items()}
    first.commit(commits)
    assert first.committed() == commits
    first.close()

    second = consumer_of(topic, group)
    assert second.committed() == commits
    assert second.position() == {**{tp: 0 for tp in second.position()}, **commits}
    rest = poll_until(second, 30 - total(commits))
    assert all(r.offset >= commits[(r.topic, r.partition)] for r in rest)
    assert {(r.partition, r.offset) for r in rest} == {
        (r.partition, r.offset) for r in records if r.offset >= commits[(r.topic, r.partition)]
    }
    # another group is independent and starts at the earliest offset
    poll_until(consumer_of(topic, group + "-other"), 30)


def test_seek_rereads_from_the_given_offset(event_log, topic, group, consumer_of):
    produce(event_log, topic, keyed(20, keys=1))  # one key: one partition
    consumer = consumer_of(topic, group)
    records = poll_until(consumer, 20)
    tp = (topic, records[0].partition)
    consumer.seek({tp: 15})
    again = poll_until(consumer, 5)
    assert [r.offset for r in again] == [15, 16, 17, 18, 19]
    assert [r.value for r in again] == [r.value for r in records[15:]]
    consumer.seek({tp: 0})
    assert [r.value for r in poll_until(consumer, 20)] == [r.value for r in records]


def test_end_offsets_and_position_give_the_lag(event_log, topic, group, consumer_of):
    consumer = consumer_of(topic, group)
    assert total(consumer.end_offsets()) == 0
    assert total(consumer.position()) == 0
    produce(event_log, topic, keyed(25))
    deadline = time.monotonic() + 10
    while total(consumer.end_offsets()) < 25 and time.monotonic() < deadline:
        time.sleep(0.05)
    ends = consumer.end_offsets()
    assert total(ends) == 25
    assert total(ends) - total(consumer.position()) == 25  # lag before reading
    poll_until(consumer, 25)
    assert consumer.position() == ends  # no lag after reading everything
    assert set(ends) == {(topic, p) for p in range(len(ends))}


def test_a_consumer_of_an_empty_topic_polls_empty_within_the_timeout(event_log, topic, group,
                                                                     consumer_of):
    consumer = consumer_of(topic, group)
    for timeout_s in (0.0, 0.5):
        began = time.monotonic()
        assert consumer.poll(10, timeout_s) == []
        assert time.monotonic() - began < timeout_s + 2.0
    assert len(consumer.position()) >= 1  # it was assigned every partition of the topic


def unreachable(kind: str, settings: Settings, api_version: str = "0.9") -> EventLog:
    """An event log that cannot reach its backend."""
    if kind == "kafka":
        from celrec.backends.kafka import KafkaEventLog

        return KafkaEventLog(settings.model_copy(update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",  # nothing listens there
            "kafka_api_version": api_version, "produce_timeout_s": 2.0}))
    log = EmbeddedEventLog(capacity=1000, partitions=2)
    log.available = False
    return log


def test_producing_to_an_unreachable_log_fails_fast(kind, settings, topic):
    assert_fails_fast(unreachable(kind, settings), topic)


@pytest.mark.integration
def test_kafka_with_auto_version_detection_fails_fast_too(make_settings, unique):
    settings = make_settings()
    assert_fails_fast(unreachable("kafka", settings, api_version="auto"), f"events-{unique}")


def assert_fails_fast(log: EventLog, topic: str) -> None:
    producer = log.producer()
    for _ in range(2):  # the second attempt must fail just as fast
        began = time.monotonic()
        with pytest.raises(EventLogUnavailable):
            producer.send(topic, [(b"k", b"v")], 2.0)
        assert time.monotonic() - began < 8.0
    producer.close()
    log.close()


def test_the_producer_recovers_when_the_log_comes_back(kind, event_log, topic, group,
                                                       consumer_of, request):
    producer = event_log.producer()
    producer.send(topic, [(b"k", b"before")], SEND_TIMEOUT_S)
    if kind == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        if not hasattr(broker, "stop_broker"):
            pytest.skip("an external broker cannot be stopped")
        broker.stop_broker()
        try:
            with pytest.raises(EventLogUnavailable):
                producer.send(topic, [(b"k", b"during")], 2.0)
        finally:
            broker.start()
    else:
        assert isinstance(event_log, EmbeddedEventLog)
        event_log.available = False
        with pytest.raises(EventLogUnavailable):
            producer.send(topic, [(b"k", b"during")], 2.0)
        event_log.available = True
    deadline = time.monotonic() + 30
    while True:  # the same producer object, no restart of anything
        try:
            producer.send(topic, [(b"k", b"after")], 5.0)
            break
        except EventLogUnavailable:
            if time.monotonic() > deadline:
                raise
    producer.close()
    # A failed send is not reported accepted, but (as with any at-least-once log) Kafka may
    # still deliver it later; event ids make such a duplicate harmless.
    consumer = consumer_of(topic, group)
    values: list[bytes | None] = []
    deadline = time.monotonic() + 20
    while b"after" not in values and time.monotonic() < deadline:
        values += [r.value for r in consumer.poll(10, 0.5)]
    assert values[0] == b"before" and values[-1] == b"after"
    assert set(values[1:-1]) <= {b"during"}


# ---------------------------------------------------------------- state store


def test_get_put_get_many_delete(store, prefix):
    a, b, c = prefix + "a", prefix + "b", prefix + "c"
    assert store.get(a) is None
    store.put({a: b"1", b: b"\x00\xff"})
    assert store.get(a) == b"1"
    assert store.get_many([a, b, c]) == [b"1", b"\x00\xff", None]
    assert store.get_many([]) == []
    store.put({a: b"2"})
    assert store.get(a) == b"2"
    store.delete([a, c])
    assert store.get_many([a, b]) == [None, b"\x00\xff"]
    store.delete([])


def wait_gone(store: StateStore, key: str, timeout_s: float = 5.0) -> float:
    began = time.monotonic()
    while store.get(key) is not None:
        assert time.monotonic() - began < timeout_s, f"{key} did not expire"
        time.sleep(0.05)
    return time.monotonic() - began


def test_keys_expire(store, prefix):
    short, kept, later = prefix + "short", prefix + "kept", prefix + "later"
    store.put({short: b"x"}, ttl_s=0.3)
    store.put({kept: b"x"}, ttl_s=0.3)
    store.put({kept: b"y"})  # a write without TTL makes the key persistent again
    store.put({later: b"x"})
    assert store.get(short) == b"x"
    wait_gone(store, short)
    store.expire([later, prefix + "missing"], 0.3)
    wait_gone(store, later)
    time.sleep(0.2)
    assert store.get(kept) == b"y"
    assert store.keys(prefix) == [kept]


def test_keys_by_prefix(store, prefix):
    store.put({prefix + "x:1": b"1", prefix + "x:2": b"2", prefix + "y": b"3"})
    store.list_push(prefix + "x:list", [b"a"], 10)
    assert store.keys(prefix + "x:") == [prefix + "x:1", prefix + "x:2", prefix + "x:list"]
    assert store.keys(prefix + "z") == []
    # glob characters in a prefix are literal
    store.put({prefix + "g*[1]": b"1", prefix + "gx": b"2"})
    assert store.keys(prefix + "g*[") == [prefix + "g*[1]"]


def test_list_push_keeps_the_newest_first_and_trims(store, prefix):
    key = prefix + "recent"
    assert store.list_range(key, 10) == []
    store.list_push(key, [b"1", b"2", b"3"], 5)
    assert store.list_range(key, 10) == [b"3", b"2", b"1"]
    store.list_push(key, [b"4", b"5", b"6"], 4)
    assert store.list_range(key, 10) == [b"6", b"5", b"4", b"3"]
    assert store.list_range(key, 2) == [b"6", b"5"]
    store.list_push(key, [b"7"], 1)
    assert store.list_range(key, 10) == [b"7"]


def test_publish_reaches_a_subscriber(store, prefix):
    channel = prefix + "updates"
    subscription = store.subscribe(channel)
    other = store.subscribe(prefix + "elsewhere")
    try:
        assert subscription.get(0.1) is None
        store.publish(channel, b"model v1")
        store.publish(channel, b"model v2")
        assert subscription.get(5.0) == b"model v1"
        assert subscription.get(5.0) == b"model v2"
        began = time.monotonic()
        assert subscription.get(0.3) is None
        assert time.monotonic() - began < 2.0
        assert other.get(0.1) is None
    finally:
        subscription.close()
        other.close()


def test_memory_bytes_counts_stored_keys(store, prefix):
    values, items = prefix + "values", prefix + "items"
    store.put({values: b"x" * 1000})
    store.list_push(items, [b"y" * 100] * 10, 100)
    assert store.memory_bytes([values]) >= 1000
    assert store.memory_bytes([values, items]) > store.memory_bytes([values])
    assert store.memory_bytes([prefix + "missing"]) == 0
    assert store.memory_bytes([]) == 0


def test_a_reader_never_sees_half_of_a_multi_key_write(store, prefix):
    a, b = prefix + "a", prefix + "b"
    store.put({a: b"-1", b: b"-1"})
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for v in range(300):
                store.put({a: str(v).encode(), b: str(v).encode()})
                time.sleep(0)  # let the reader in between writes
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    reads = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        finished = done.is_set()
        first, second = store.get_many([a, b])
        assert first == second, f"torn read: {first!r} != {second!r}"
        reads += 1
        if finished:
            break
    writer.join(10)
    assert not errors, errors
    assert done.is_set() and reads > 0
    assert store.get_many([a, b]) == [b"299", b"299"]


def test_ping_succeeds(store):
    store.ping()


@pytest.mark.integration
def test_an_unreachable_redis_raises_state_store_unavailable():
    from celrec.backends.redis import RedisStateStore

    dead = RedisStateStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=1.0)
    began = time.monotonic()
    calls: list[Callable[[], object]] = [
        dead.ping, lambda: dead.get("k"), lambda: dead.put({"k": b"v"}),
        lambda: dead.list_push("l", [b"v"], 3), lambda: dead.publish("c", b"m"),
        lambda: dead.subscribe("c"), lambda: dead.keys("k"), lambda: dead.memory_bytes(["k"]),
    ]
    for call in calls:
        with pytest.raises(StateStoreUnavailable):
            call()
    assert time.monotonic() - began < 20
    dead.close()
