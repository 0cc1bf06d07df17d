"""The evaluation protocol through the API (`../shared/docs/evaluation.md`): a short stream
scored with GET /scores before each chunk is POSTed, on the embedded backends and on real
Kafka and Redis. The served model must learn: the second half scores better than the first."""

from __future__ import annotations

import time

import numpy as np
import pytest

from celrec.backends import make_event_log, make_state_store
from celrec.demo import DemoWorkload
from tests.stack import Stack, running_stack

CHUNK = 200
EVENTS = 4_000  # bounded: 20 chunks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # ties: average rank
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    pos = labels > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(params=["embedded", "kafka+redis"])
def stack(request, make_settings):
    real = request.param == "kafka+redis"
    settings = make_settings(kafka=real, redis=real, batch_max_wait_ms=50,
                             publish_interval_ms=50, checkpoint_interval_s=1.0)
    event_log, store = make_event_log(settings), make_state_store(settings)
    with running_stack(settings, event_log, store) as running:
        yield running
    event_log.close()
    store.close()


def score_chunk(stack: Stack, chunk: list) -> np.ndarray:
    """One GET /scores per user of the chunk; 0.5 while no model is served yet."""
    out = np.full(len(chunk), 0.5)
    by_user: dict[str, list[int]] = {}
    for k, event in enumerate(chunk):
        by_user.setdefault(event.user_id, []).append(k)
    for user, index in by_user.items():
        response = stack.client.get("/scores", params={
            "user_id": user, "item_id": [chunk[k].item_id for k in index]})
        if response.status_code == 503:  # model_not_loaded, before the first publish
            continue
        assert response.status_code == 200, response.text
        out[index] = [s["score"] for s in response.json()["scores"]]
    return out


@pytest.mark.integration
def test_the_served_model_learns_a_stream_through_the_api(stack):
    workload = DemoWorkload(users=100, items=60, seed=5)
    events = workload.events()
    stream = [next(events) for _ in range(EVENTS)]
    scores = []
    for start in range(0, EVENTS, CHUNK):
        chunk = stream[start:start + CHUNK]
        scores.append(score_chunk(stack, chunk))
        body = [{**e.model_dump(mode="json", exclude_none=True), "event_id": f"e{start + k}"}
                for k, e in enumerate(chunk)]
        assert stack.client.post("/events", json=body).status_code == 202
        done = start + len(chunk)
        deadline = time.monotonic() + 3.0  # the protocol waits at most 3 s per chunk
        while time.monotonic() < deadline:
            model = stack.client.get("/model")
            if model.status_code == 200 and model.json()["events_applied"] >= done:
                break
            time.sleep(0.02)
    p = np.concatenate(scores)
    y = np.array([e.value for e in stream])
    half = EVENTS // 2
    first, second = auc(p[:half], y[:half]), auc(p[half:], y[half:])
    print(f"progressive AUC first half {first:.3f}, second half {second:.3f}")
    assert second > first + 0.05
    assert second > 0.65


@pytest.mark.integration
def test_the_api_serves_what_the_in_process_evaluation_measures(make_settings):
    """The same chunks through POST /events and the trainer (the embedded log: 4 partitions,
    so a poll returns a batch grouped by user key) and through ``CelrecStream`` (the learner
    fed in stream order) give the same scores: what bench/prequential.py measures in-process
    is what the API serves."""
    from cli.evaluation.served import CelrecStream

    settings = make_settings(batch_max_wait_ms=50, publish_interval_ms=50)
    event_log, store = make_event_log(settings), make_state_store(settings)
    workload = DemoWorkload(users=100, items=60, seed=9)
    events = workload.events()
    stream = [next(events) for _ in range(5 * CHUNK)]
    start = 1_700_000_000.0
    in_process = CelrecStream("binary")
    try:
        with running_stack(settings, event_log, store) as stack:
            for c in range(0, len(stream), CHUNK):
                chunk = stream[c:c + CHUNK]
                served = score_chunk(stack, chunk)
                users = [e.user_id for e in chunk]
                items = [e.item_id for e in chunk]
                values = np.array([e.value for e in chunk], dtype=np.float32)
                stamps = start + c + np.arange(len(chunk), dtype=np.float64)
                measured = in_process.process(users, items, values, stamps)
                if c:  # the first chunk: no model on either side yet
                    np.testing.assert_allclose(served, measured, atol=1e-6)
                body = [{"event_id": f"x{c + k}", "user_id": e.user_id, "item_id": e.item_id,
                         "value": e.value, "timestamp": float(stamps[k])}
                        for k, e in enumerate(chunk)]
                assert stack.client.post("/events", json=body).status_code == 202
                done = c + len(chunk)
                deadline = time.monotonic() + 10.0
                while True:
                    model = stack.client.get("/model")
                    if model.status_code == 200 and model.json()["events_applied"] >= done:
                        break
                    assert time.monotonic() < deadline, "the served model did not catch up"
                    time.sleep(0.02)
    finally:
        event_log.close()
        store.close()
