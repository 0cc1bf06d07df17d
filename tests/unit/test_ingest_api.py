import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

import schemas.events
from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from schemas.messages import decode_event
from service.app import build_state, create_app


@pytest.fixture
def log():
    return EmbeddedEventLog(partitions=2)


@pytest.fixture
def client(log):
    settings = Settings(ingest_max_batch=10, ingest_max_body_bytes=4096)
    return TestClient(create_app(build_state(settings, log, EmbeddedStateStore())))


def logged_events(log):
    consumer = log.consumer(["events"], "inspect")
    return [decode_event(r.value).event for r in consumer.poll(10_000, 0.01)]


def test_single_event_is_accepted_and_logged(client, log):
    response = client.post("/events", json={"user_id": "u1", "item_id": "i1", "value": 0})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1 and len(body["event_ids"]) == 1
    [event] = logged_events(log)
    assert event.event_id == body["event_ids"][0] and event.value == 0.0
    assert event.timestamp is not None


def test_batch_is_accepted_in_order_with_given_ids_kept(client, log):
    batch = [{"user_id": f"u{k}", "item_id": "i", "event_id": f"e{k}"} for k in range(5)]
    batch.append({"user_id": "u9", "item_id": "i"})
    response = client.post("/events", json=batch)
    assert response.status_code == 202
    ids = response.json()["event_ids"]
    assert ids[:5] == [f"e{k}" for k in range(5)] and ids[5] not in ids[:5]
    assert sorted(e.event_id for e in logged_events(log)) == sorted(ids)


def test_events_without_a_time_get_the_servers_in_the_order_posted(client, log, monkeypatch):
    class CoarseClock(datetime):  # a clock that does not move during the request
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 5, 1, tzinfo=UTC)

    monkeypatch.setattr(schemas.events, "datetime", CoarseClock)
    batch = [{"user_id": f"u{k * 5 % 8}", "item_id": "i", "event_id": f"e{k}"} for k in range(8)]
    assert client.post("/events", json=batch).status_code == 202
    logged = logged_events(log)
    assert [e.event_id for e in logged] != [f"e{k}" for k in range(8)]  # grouped by partition
    by_time = [e.event_id for e in sorted(logged, key=lambda e: e.timestamp)]
    assert by_time == [f"e{k}" for k in range(8)]


@pytest.mark.parametrize(
    "body, fields",
    [
        ({"item_id": "i"}, {"user_id"}),
        ({"user_id": "u", "item_id": "i", "value": "lots"}, {"value"}),
        ({"user_id": 5, "item_id": ["i"]}, {"user_id", "item_id"}),
        ({"user_id": "u", "item_id": "i", "extra": 1}, {"extra"}),
        ([{"user_id": "u", "item_id": "i"}, {"user_id": "u"}], {"1.item_id"}),
    ],
)
def test_invalid_input_is_422_naming_each_field_and_nothing_is_logged(client, log, body, fields):
    response = client.post("/events", json=body)
    assert response.status_code == 422
    detail = response.json()
    assert detail["error"] == "validation_error"
    assert {d["field"] for d in detail["details"]} == fields
    assert logged_events(log) == []


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"", b"[]"])
def test_malformed_or_empty_body_is_422(client, log, raw):
    response = client.post("/events", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] in {"invalid_json", "empty_batch"}
    assert logged_events(log) == []


def test_oversize_batch_and_body_are_413(client, log):
    batch = [{"user_id": "u", "item_id": "i"}] * 11
    assert client.post("/events", json=batch).status_code == 413
    big = json.dumps({"user_id": "u", "item_id": "i", "context": {"k": "v" * 5000}})
    response = client.post("/events", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"
    assert logged_events(log) == []


def test_unreachable_log_is_503_with_retry_after_and_nothing_accepted(client, log):
    log.available = False
    response = client.post("/events", json={"user_id": "u", "item_id": "i"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "accepted" not in response.json()
    log.available = True
    assert logged_events(log) == []
    assert client.post("/events", json={"user_id": "u", "item_id": "i"}).status_code == 202
    assert len(logged_events(log)) == 1


def test_metrics_count_accepted_and_rejected(client, log):
    client.post("/events", json=[{"user_id": "u", "item_id": "i"}] * 3)
    log.available = False
    client.post("/events", json={"user_id": "u", "item_id": "i"})
    text = client.get("/metrics").text
    assert "celrec_events_accepted_total 3.0" in text
    assert 'celrec_events_rejected_total{reason="log_unavailable"} 1.0' in text


def test_health_and_openapi(client):
    assert client.get("/health/live").json()["status"] == "ok"
    ready = client.get("/health/ready")  # no model published yet: not ready
    assert ready.status_code == 503 and ready.json()["checks"]["model"] == "not loaded"
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]
    assert "anyOf" in body["schema"] and "Event" in spec["components"]["schemas"]
