"""Behaviour only the embedded backends have: bounded capacity, trimming, expiry details."""

from __future__ import annotations

import time

import pytest

from celrec.backends import EventLogUnavailable
from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore

pytestmark = pytest.mark.timeout(30)


def fill(log: EmbeddedEventLog, topic: str, count: int) -> None:
    log.producer().send(topic, [(b"k", b"v%d" % i) for i in range(count)], 1.0)


def test_a_full_log_pushes_back_until_consumers_commit():
    log = EmbeddedEventLog(capacity=10, partitions=1)
    consumer = log.consumer(["t"], "g")
    fill(log, "t", 10)
    with pytest.raises(EventLogUnavailable, match="full"):
        fill(log, "t", 1)
    records = consumer.poll(100, 0.1)
    assert len(records) == 10
    with pytest.raises(EventLogUnavailable):  # read but not committed: still retained
        fill(log, "t", 1)
    consumer.commit({("t", 0): 6})
    fill(log, "t", 6)  # the 6 committed records make room
    with pytest.raises(EventLogUnavailable):
        fill(log, "t", 1)
    assert consumer.end_offsets() == {("t", 0): 16}


def test_a_batch_that_does_not_fit_is_rejected_whole():
    log = EmbeddedEventLog(capacity=10, partitions=1)
    log.consumer(["t"], "g")
    fill(log, "t", 8)
    with pytest.raises(EventLogUnavailable):
        fill(log, "t", 3)
    assert log.consumer(["t"], "other").end_offsets() == {("t", 0): 8}


def test_trimming_waits_for_every_group_of_the_topic():
    log = EmbeddedEventLog(capacity=10, partitions=1)
    fast, slow = log.consumer(["t"], "fast"), log.consumer(["t"], "slow")
    fill(log, "t", 10)
    fast.commit({("t", 0): 10})
    with pytest.raises(EventLogUnavailable):  # "slow" has not committed yet
        fill(log, "t", 1)
    slow.commit({("t", 0): 4})
    fill(log, "t", 4)
    # a trimmed-away offset is not served again: a new group starts at the earliest retained
    assert log.consumer(["t"], "late").poll(100, 0.1)[0].offset == 4


def test_groups_of_other_topics_do_not_block_trimming():
    log = EmbeddedEventLog(capacity=10, partitions=1)
    trainer = log.consumer(["events"], "trainer")
    log.consumer(["events.dlq"], "inspector")  # never reads "events"
    fill(log, "events", 10)
    trainer.poll(100, 0.1)
    trainer.commit({("events", 0): 10})
    fill(log, "events", 10)


def test_a_list_pushed_after_it_expired_starts_afresh():
    store = EmbeddedStateStore()
    store.list_push("l", [b"old"], 10)
    store.expire(["l"], 0.05)
    time.sleep(0.1)
    store.list_push("l", [b"new"], 10)
    assert store.list_range("l", 10) == [b"new"]
    time.sleep(0.1)
    assert store.list_range("l", 10) == [b"new"]  # the old TTL went with the old list


def test_expire_does_not_revive_an_expired_key():
    store = EmbeddedStateStore()
    store.put({"k": b"v"}, ttl_s=0.05)
    time.sleep(0.1)
    store.expire(["k"], 10)
    assert store.get("k") is None
    assert store.memory_bytes(["k"]) == 0
