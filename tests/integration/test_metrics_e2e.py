"""Every operational metric exists and moves: post events, then read both /metrics."""

from __future__ import annotations

import math
import random
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from celrec.backends import make_event_log, make_state_store
from tests.integration.servers import planted_events
from tests.stack import Stack, running_stack

Samples = dict[tuple[str, frozenset], float]
# Enough users, items and events for clusters to grow past split size (the trainer starts
# with 16 clusters per side)
BATCHES, BATCH, USERS, ITEMS = 20, 150, 400, 200


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


def service_metrics(stack: Stack) -> Samples:
    response = stack.client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


def trainer_metrics(stack: Stack) -> Samples:
    assert stack.trainer.metrics is not None
    return parse(generate_latest(stack.trainer.metrics.registry).decode())


@pytest.fixture(params=["embedded", "kafka+redis"])
def stack(request, make_settings):
    real = request.param == "kafka+redis"
    settings = make_settings(kafka=real, redis=real, batch_max_events=128, batch_max_wait_ms=50,
                             publish_interval_ms=100, snapshot_interval_s=1.0,
                             # a budget above the 16 clusters the trainer starts with, so
                             # that splits happen
                             entity_state_capacity=2000, user_clusters=32, item_clusters=32,
                             trainer_metrics_port=0)
    event_log, store = make_event_log(settings), make_state_store(settings)
    with running_stack(settings, event_log, store) as running:
        yield running
    event_log.close()
    store.close()


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s}s")


@pytest.mark.integration
def test_posting_events_moves_every_metric(stack, request):
    svc0, tr0 = service_metrics(stack), trainer_metrics(stack)
    rng = random.Random(1)
    for _ in range(BATCHES):
        response = stack.client.post("/events", json=planted_events(rng, BATCH, users=USERS,
                                                                    items=ITEMS),
                                     headers={"x-request-id": "e2e-posting"})
        assert response.status_code == 202
        assert response.headers["x-request-id"] == "e2e-posting"
    assert stack.client.post("/events", json=[{"user_id": ""}]).status_code == 422
    stack.event_log.producer().send(stack.settings.kafka_events_topic,
                                    [(b"k", b"not an event")], 10)
    embedded = request.node.callspec.params["stack"] == "embedded"
    if embedded:  # the log refuses: those events are counted as rejected
        stack.event_log.available = False  # type: ignore[attr-defined]
        assert stack.client.post("/events", json=planted_events(rng, 3)).status_code == 503
        stack.event_log.available = True  # type: ignore[attr-defined]

    posted = BATCHES * BATCH
    stack.wait_for(lambda p: p.events_applied >= posted and p.dead_lettered >= 1, 60)

    def caught_up() -> bool:
        tr, svc = trainer_metrics(stack), service_metrics(stack)
        return (total(tr, "celrec_trainer_snapshot_version") >= 2
                and total(tr, "celrec_trainer_online_window_events") >= posted
                and total(tr, "celrec_trainer_consumer_lag_events") == 0
                and total(tr, "celrec_trainer_events_applied_per_second") > 0
                and total(svc, "celrec_model_version") >= 2
                and total(svc, "celrec_freshness_seconds_count") > 0)

    wait_for(caught_up, 30, "the metrics did not catch up with the posted events")
    svc, tr = service_metrics(stack), trainer_metrics(stack)

    def moved(samples: Samples, before: Samples, name: str, **labels: str) -> None:
        assert total(samples, name, **labels) > total(before, name, **labels), (name, labels)

    # service: requests, ingestion, freshness, the served model, process
    moved(svc, svc0, "celrec_http_request_duration_seconds_count", route="/events",
          status="202", method="POST")
    moved(svc, svc0, "celrec_http_request_duration_seconds_count", route="/events",
          status="422")
    moved(svc, svc0, "celrec_http_request_duration_seconds_bucket", route="/metrics", le="+Inf")
    name = "celrec_events_accepted_total"
    accepted = total(svc, name) - total(svc0, name)
    assert accepted == posted
    if embedded:
        assert total(svc, "celrec_events_rejected_total", reason="log_unavailable") == 3
    moved(svc, svc0, "celrec_freshness_seconds_count")
    moved(svc, svc0, "celrec_freshness_seconds_sum")
    moved(svc, svc0, "celrec_model_version")
    age = total(svc, "celrec_model_age_seconds")
    assert 0 <= age < 30
    assert time.time() - 60 < total(svc, "celrec_model_published_timestamp_seconds") <= time.time()
    for side in ("user", "item"):
        assert total(svc, "celrec_model_clusters", side=side) > 0
        assert total(svc, "celrec_model_entities", side=side) > 0
    assert total(svc, "celrec_model_memory_bytes") > 0
    assert total(svc, "celrec_service_device_info", device="cpu") == 1
    assert total(svc, "process_resident_memory_bytes") > 0

    # trainer: events, batches, lag, rates, online quality, clusters, snapshots, bytes, device
    assert total(tr, "celrec_trainer_events_applied_total") >= posted
    moved(tr, tr0, "celrec_trainer_events_dead_lettered_total")
    moved(tr, tr0, "celrec_trainer_batch_size_events_count")
    moved(tr, tr0, "celrec_trainer_batch_size_events_sum")
    moved(tr, tr0, "celrec_trainer_batch_duration_seconds_count")
    moved(tr, tr0, "celrec_trainer_checkpoints_total")
    lag = series(tr, "celrec_trainer_consumer_lag_events")
    assert {s["topic"] for s in lag} == {stack.settings.kafka_events_topic}
    assert len({s["partition"] for s in lag}) >= 1
    assert total(tr, "celrec_trainer_events_applied_per_second") > 0
    for scenario in ("app", "web"):
        auc = total(tr, "celrec_trainer_online_auc", scenario=scenario)
        loss = total(tr, "celrec_trainer_online_logloss", scenario=scenario)
        assert 0.0 <= auc <= 1.0 and math.isfinite(loss) and loss > 0, (scenario, auc, loss)
        assert total(tr, "celrec_trainer_online_window_events", scenario=scenario) > 0
    assert total(tr, "celrec_trainer_retrieval_weight") in (0.0, 0.125, 0.25, 0.5, 1.0)
    assert total(tr, "celrec_trainer_coliked_weight") in (0.0, 1.0, 2.0, 4.0)
    for side in ("user", "item"):
        assert total(tr, "celrec_trainer_clusters", side=side) > 1
        assert total(tr, "celrec_trainer_entities", side=side) > 0
        buckets = total(tr, "celrec_trainer_cluster_size_entities_bucket", side=side, le="+Inf")
        assert buckets == total(tr, "celrec_trainer_clusters", side=side)
        assert total(tr, "celrec_trainer_state_store_bytes_per_entity", side=side) > 0
    splits = total(tr, "celrec_trainer_cluster_splits_total")
    moves = total(tr, "celrec_trainer_reassignments_total")
    assert splits > 0 and moves > 0  # planted groups: clusters split and members move
    assert total(tr, "celrec_trainer_cluster_splits_per_minute") > 0
    assert total(tr, "celrec_trainer_reassignments_per_minute") > 0
    assert total(tr, "celrec_trainer_snapshot_version") >= 2
    assert 0 <= total(tr, "celrec_trainer_snapshot_age_seconds") < 30
    assert total(tr, "celrec_trainer_snapshot_published_timestamp_seconds") > time.time() - 60
    moved(tr, tr0, "celrec_trainer_publish_duration_seconds_count", kind="snapshot")
    moved(tr, tr0, "celrec_trainer_publish_duration_seconds_count", kind="delta")
    assert total(tr, "celrec_trainer_state_store_model_bytes") > 0
    assert len(series(tr, "celrec_trainer_device_info")) == 1
    assert total(tr, "celrec_trainer_model_memory_bytes") > 0
    assert total(tr, "celrec_trainer_device_memory_allocated_bytes") > 0
    assert total(tr, "process_resident_memory_bytes") > 0

    # the dashboard's data carries the trainer's summary (written every 2 s) and a history
    def summary_applied() -> int:
        trainer = stack.client.get("/dashboard/data").json()["current"]["trainer"]
        return trainer["events_applied"] if trainer else 0

    wait_for(lambda: summary_applied() >= posted, 15, "the trainer summary did not catch up")
    data = stack.client.get("/dashboard/data").json()
    assert set(data["current"]["trainer"]["online"]) == {"app", "web"}
    assert data["current"]["model"]["version"] >= 2
    assert data["current"]["largest_clusters"][0]["members"]
