"""The model follower against a real Redis: loading, following deltas, no mixed versions
while publishing races reading, and serving from memory through a Redis outage."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from celrec.backends.embedded import EmbeddedEventLog
from celrec.backends.redis import RedisStateStore
from schemas.state import StateKeys
from service.app import build_state, create_app
from service.follower import ModelFollower
from service.registry import ServiceMetrics
from service.serving_model import ServingModel
from tests.localservers import LocalRedis
from tests.modelpub import ModelWriter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAIT_S = 5.0
USERS = ["u0", "u1", "u2"]
ITEMS = ["i0", "i1", "i2", "i3"]


def filled(writer: ModelWriter, version: int, *, publish: bool = True) -> None:
    """Snapshot ``version`` whose every table entry and bias is ``version`` (dim 1, mse):
    a score is then x*x + 3x for one x, and any mix of two states shows."""
    x = float(version)
    writer.snapshot(version, USERS, ITEMS, np.full((2, 2), x), np.full((2, 2), x),
                    [0, 1, 0], [0, 0, 1, 1], popularity=[1, 2, 3, 4], global_bias=x,
                    loss="mse", publish=publish)


def filled_delta(writer: ModelWriter, **kwargs) -> float:
    """The next delta, replacing everything by version + seq/100."""
    seq = writer.seq + 1
    x = writer.version + seq / 100
    writer.delta(user_table=np.full((2, 2), x), item_table=np.full((2, 2), x),
                 global_bias=x, new_items=[f"n{writer.version}-{seq}"],
                 item_changed=([writer.entities["item"]], [seq % 2]),
                 accepted_at=[time.time()], **kwargs)
    return x


def consistent_x(scores: list[float], version: int) -> float:
    """The x all ``scores`` (of one read) were computed from; fails on a mixed state."""
    assert np.allclose(scores, scores[0], rtol=1e-6), scores
    x = (-3 + math.sqrt(9 + 4 * scores[0])) / 2
    k = round((x - version) * 100)
    assert 0 <= k < 100 and abs(x - (version + k / 100)) < 1e-4, (x, version)
    return x


def state_of(model: ServingModel) -> float:
    """Checks a score read and a retrieval (each one read) and returns the score read's x."""
    scores, _, _ = model.score("u0", ["i0", "i3", "nobody"])
    x = consistent_x(list(scores), model.version)
    consistent_x([s for _, s in model.recommend("u1", 3)], model.version)
    return x


@pytest.fixture
def store(make_settings) -> Iterator[RedisStateStore]:
    settings = make_settings(redis=True)
    store = RedisStateStore(settings.redis_url, socket_timeout_s=1.0)
    yield store
    store.close()


@pytest.fixture
def keys(make_settings) -> StateKeys:
    return StateKeys(make_settings().state_prefix)


@pytest.fixture
def writer(make_settings, keys) -> Iterator[ModelWriter]:
    store = RedisStateStore(make_settings(redis=True).redis_url, socket_timeout_s=1.0)
    yield ModelWriter(store, keys)
    store.close()


@pytest.fixture
def follower(store, keys) -> Iterator[ModelFollower]:
    follower = ModelFollower(store, keys, poll_interval_s=0.5, retry_interval_s=0.2,
                             metrics=ServiceMetrics())
    yield follower
    follower.stop()


def at(version: int, seq: int):
    return lambda m: (m.version, m.seq) == (version, seq)


def test_follower_waits_for_a_snapshot_then_follows_deltas(follower, writer):
    follower.start()
    time.sleep(0.3)  # nothing published yet: it keeps retrying
    assert follower.model is None and follower.status().connected
    filled(writer, 1)
    assert follower.wait_for(at(1, 0), WAIT_S)
    began = time.monotonic()
    for _ in range(20):
        x = filled_delta(writer)
    assert follower.wait_for(at(1, 20), WAIT_S)
    assert time.monotonic() - began < WAIT_S
    assert state_of(follower.model) == pytest.approx(x)
    assert follower.model.info().sides["item"].entities == len(ITEMS) + 20
    freshness = follower.metrics.freshness.collect()[0]
    count = next(s.value for s in freshness.samples if s.name.endswith("_count"))
    assert count == 20


def test_a_missed_notice_is_caught_by_polling(follower, writer, keys):
    filled(writer, 1)
    follower.start()
    assert follower.wait_for(at(1, 0), WAIT_S)
    store, writer.store = writer.store, None  # build only, then write without a notice
    header, arrays = writer.delta(publish=False, new_users=["quiet"],
                                  user_changed=([3], [1]))
    writer.store = store
    from schemas.snapshot import encode_bundle

    store.put({keys.model_delta(1, 1): encode_bundle(header, arrays),
               keys.model_delta_seq(1): b"1"})
    assert follower.wait_for(at(1, 1), 3.0)
    assert follower.model.score("quiet", ["i0"])[1] is False


def test_a_gap_keeps_the_last_state_until_a_new_version_arrives(follower, writer, keys):
    filled(writer, 1)
    follower.start()
    assert follower.wait_for(at(1, 0), WAIT_S)
    filled_delta(writer)
    assert follower.wait_for(at(1, 1), WAIT_S)
    filled_delta(writer, publish=False)  # seq 2 is never written: a gap before seq 3
    filled_delta(writer)
    time.sleep(1.0)
    assert (follower.model.version, follower.model.seq) == (1, 1)
    assert state_of(follower.model) == pytest.approx(1.01)
    assert "missing" in (follower.status().last_error or "")
    filled(writer, 2)
    assert follower.wait_for(at(2, 0), WAIT_S)


def test_readers_never_see_a_mixed_version_while_publishing_races(follower, writer):
    filled(writer, 1)
    follower.start()
    assert follower.wait_for(at(1, 0), WAIT_S)
    stop = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            version = 1
            while not stop.is_set():
                for _ in range(8):
                    filled_delta(writer)
                    time.sleep(0.002)
                version += 1
                filled(writer, version)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    reads, states = 0, set()
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            model = follower.model
            states.add((model.version, round(state_of(model), 2)))
            reads += 1
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert follower.wait_for(at(writer.version, writer.seq), WAIT_S)
    assert state_of(follower.model) == pytest.approx(
        writer.version + writer.seq / 100)
    assert reads > 100 and len({v for v, _ in states}) >= 3, (reads, states)
    assert any(x != v for v, x in states)  # deltas were seen, not only snapshots


def test_scoring_survives_a_redis_outage_and_follows_after_it(make_settings, redis_server,
                                                              writer):
    if not isinstance(redis_server, LocalRedis):
        pytest.skip("an external Redis cannot be stopped by the tests")
    settings = make_settings(redis=True)
    store = RedisStateStore(settings.redis_url, socket_timeout_s=1.0)
    state = build_state(settings, EmbeddedEventLog(partitions=1), store)
    state.follower.retry_interval_s = 0.2
    filled(writer, 1)
    filled_delta(writer)
    params = {"user_id": "u0", "item_id": ["i0", "i2"]}
    try:
        with TestClient(create_app(state), raise_server_exceptions=False) as client:
            assert state.follower.wait_for(at(1, 1), WAIT_S)
            redis_server.stop()
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:  # answers from memory throughout
                scores = client.get("/scores", params=params)
                assert scores.status_code == 200, scores.text
                assert (scores.json()["model_version"], scores.json()["model_seq"]) == (1, 1)
                recs = client.get("/recommendations/u0", params={"n": 2})
                assert recs.status_code == 200, recs.text
                assert client.get("/health/ready").status_code == 200
                time.sleep(0.05)
            assert recs.json()["seen_excluded"] == "unavailable"
            assert client.get("/model").json()["store_connected"] is False
            assert client.get("/health/ready").json()["checks"]["state_store"] != "ok"

            redis_server.start()  # empty: the publisher starts over with a new version
            filled(writer, 2)
            filled_delta(writer)
            assert state.follower.wait_for(at(2, 1), 10.0)
            assert client.get("/scores", params=params).json()["model_version"] == 2
            assert client.get("/recommendations/u0").json()["seen_excluded"] == "applied"

            redis_server.restart(keep_data=True)  # a restart that keeps the data
            filled_delta(writer)
            assert state.follower.wait_for(at(2, 2), 10.0)
            body = client.get("/scores", params=params).json()
            assert (body["model_version"], body["model_seq"]) == (2, 2)
            assert body["scores"][0]["score"] == pytest.approx(2.02 ** 2 + 3 * 2.02, rel=1e-5)
    finally:
        redis_server.start()  # leave it running for the other tests
        store.close()
