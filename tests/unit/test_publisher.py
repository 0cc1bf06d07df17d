import json
import time

import numpy as np
import pytest

from cel.idmap import IdMap
from celrec.backends import StateStoreUnavailable
from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from schemas.events import Event
from schemas.messages import encode_event
from schemas.snapshot import DeltaHeader, SnapshotMeta, decode_bundle
from schemas.state import StateKeys, decode_array
from trainer.main import build_trainer

KEYS = StateKeys("celrec")


def settings(**overrides) -> Settings:
    values = dict(batch_max_events=64, batch_max_wait_ms=5, checkpoint_interval_s=3600,
                  entity_state_capacity=500, publish_interval_ms=10, snapshot_interval_s=3600,
                  user_clusters=8, item_clusters=8)
    values.update(overrides)
    return Settings(**values)


def produce(log, events, accepted_at=None):
    now = accepted_at or time.time()
    log.producer().send("events", [encode_event(e.completed(), now) for e in events], 1.0)


def clicks(users, items):
    return [Event(user_id=f"u{u}", item_id=f"i{i}", value=float((u + i) % 2), scenario="web")
            for u, i in zip(users, items, strict=True)]


class FlakyStore(EmbeddedStateStore):
    """The embedded store with an off switch, to exercise the publisher's recovery."""

    available = True

    def put(self, values, ttl_s=None):
        if not self.available:
            raise StateStoreUnavailable("switched off")
        super().put(values, ttl_s)


def load_snapshot(store) -> tuple[SnapshotMeta, dict[str, np.ndarray]]:
    version = int(store.get(KEYS.model_current))
    meta = SnapshotMeta.model_validate_json(store.get(KEYS.model_meta(version)))
    arrays = {n: decode_array(store.get(KEYS.model_array(version, n))) for n in meta.arrays}
    return meta, arrays


def test_first_batch_publishes_a_consistent_snapshot():
    log, store = EmbeddedEventLog(partitions=2), EmbeddedStateStore()
    trainer = build_trainer(settings(), log, store)
    events = clicks(range(30), [k % 7 for k in range(30)])
    positives = sum(e.value for e in events)
    produce(log, events)
    trainer.run_once()
    meta, arrays = load_snapshot(store)
    assert meta.version == 1 and meta.events_applied == 30
    assert meta.sides["user"].entities == 30 and meta.sides["item"].entities == 7
    users = IdMap.from_arrays(arrays["user.ids.blob"], arrays["user.ids.offsets"])
    assert sorted(users.external(range(len(users)))) == sorted(f"u{k}" for k in range(30))
    for side in ("user", "item"):
        assign, table = arrays[f"{side}.assign"], arrays[f"{side}.table"]
        assert assign.dtype == np.int16 and len(assign) == meta.sides[side].entities
        assert table.shape == (meta.sides[side].rows, meta.dim + 1)
        assert assign.min() >= 0 and assign.max() < table.shape[0]
    assert arrays["item.popularity"].sum() == positives
    prior = arrays["scenario.item_cluster_popularity"]
    assert prior.sum() == positives and meta.scenarios == ["web"]
    assert "model.global_bias" in arrays


def test_deltas_carry_new_ids_changed_rows_and_acceptance_times():
    log, store = EmbeddedEventLog(partitions=1), EmbeddedStateStore()
    trainer = build_trainer(settings(), log, store)
    produce(log, clicks(range(10), range(10)))
    trainer.run_once()
    sub = store.subscribe(KEYS.model_updates_channel)
    time.sleep(0.02)
    accepted = time.time() - 0.5
    produce(log, clicks(range(5, 15), [k % 3 for k in range(10)]), accepted_at=accepted)
    trainer.run_once()
    assert json.loads(sub.get(1.0)) == {"version": 1, "seq": 1}
    raw_header, arrays = decode_bundle(store.get(KEYS.model_delta(1, 1)))
    header = DeltaHeader.model_validate(raw_header)
    assert header.first_new == {"user": 10, "item": 10}
    assert header.sides["user"].entities == 15
    new_users = IdMap.from_arrays(arrays["user.new_ids.blob"], arrays["user.new_ids.offsets"])
    assert new_users.external(range(5)) == [f"u{k}" for k in range(10, 15)]
    assert set(range(10, 15)) <= set(arrays["user.changed.index"].tolist())
    assert len(arrays["user.changed.row"]) == len(arrays["user.changed.index"])
    assert header.accepted_at and all(t == pytest.approx(accepted) for t in header.accepted_at)
    assert int(store.get(KEYS.model_delta_seq(1))) == 1


def test_seen_lists_are_pushed_newest_first_and_impressions_skipped():
    log, store = EmbeddedEventLog(partitions=1), EmbeddedStateStore()
    trainer = build_trainer(settings(), log, store)
    events = [Event(user_id="a", item_id="x", event_type="impression", value=0),
              Event(user_id="a", item_id="y"), Event(user_id="a", item_id="z", value=0)]
    produce(log, events)
    trainer.run_once()
    assert store.list_range(KEYS.user_seen("a"), 10) == [b"z", b"y"]


def test_store_outage_leads_to_a_full_snapshot_once_it_returns():
    log, store = EmbeddedEventLog(partitions=1), FlakyStore()
    trainer = build_trainer(settings(), log, store)
    produce(log, clicks(range(4), range(4)))
    trainer.run_once()
    store.available = False
    produce(log, clicks(range(4, 8), range(4)))
    time.sleep(0.02)  # past the publish interval, so the delta is due
    trainer.run_once()  # the delta fails, nothing raised
    assert trainer.publisher.need_snapshot
    store.available = True
    time.sleep(0.02)
    trainer.run_once()
    meta, _ = load_snapshot(store)
    assert meta.version == 2 and meta.sides["user"].entities == 8


def test_replaced_versions_expire_after_the_grace_period():
    log, store = EmbeddedEventLog(partitions=1), EmbeddedStateStore()
    trainer = build_trainer(settings(version_grace_s=0.3), log, store)
    produce(log, clicks(range(4), range(4)))
    trainer.run_once()
    first_keys = store.keys("celrec:model:v1:")
    assert first_keys
    trainer.publisher.need_snapshot = True
    produce(log, clicks(range(4), range(4)))
    trainer.run_once()
    assert int(store.get(KEYS.model_current)) == 2
    assert store.keys("celrec:model:v1:") == first_keys  # still readable
    time.sleep(0.4)
    assert store.keys("celrec:model:v1:") == []
    assert store.keys("celrec:model:v2:")


def test_liked_lists_and_co_liked_rows_are_published_and_survive_a_restart():
    log, store = EmbeddedEventLog(partitions=1), EmbeddedStateStore()
    trainer = build_trainer(settings(), log, store)
    events = [Event(user_id="a", item_id="x"), Event(user_id="a", item_id="n", value=0),
              Event(user_id="a", item_id="y"), Event(user_id="b", item_id="x")]
    produce(log, events)
    trainer.run_once()
    assert store.list_range(KEYS.user_liked("a"), 10) == [b"y", b"x"]  # positives only
    _, arrays = load_snapshot(store)
    items = IdMap.from_arrays(arrays["item.ids.blob"], arrays["item.ids.offsets"])
    rx, ry = (int(arrays["item.assign"][k]) for k in items.lookup(["x", "y"]))
    counts = arrays["item.coliked.counts"]
    assert counts[rx, ry] >= 1 and counts.sum() == (1 if rx == ry else 2)  # (x, y) by a
    assert arrays["item.coliked.positives"].sum() == 3
    produce(log, [Event(user_id="b", item_id="y")])
    time.sleep(0.02)  # past the publish interval, so the delta is due
    trainer.run_once()
    _, delta = decode_bundle(store.get(KEYS.model_delta(header_version(store), 1)))
    index = delta["item.coliked.index"].tolist()
    assert rx in index and ry in index
    assert delta["item.coliked.counts"][index.index(rx)][ry] == (4 if rx == ry else 2)
    trainer.checkpoint()
    restarted = build_trainer(settings(), log, store)
    assert np.array_equal(restarted.learner.coliked.counts, trainer.learner.coliked.counts)


def header_version(store) -> int:
    return int(store.get(KEYS.model_current))
