"""Hostile input: garbage on the Kafka topic and abusive HTTP requests.

Every bad message must land in the dead-letter topic with a reason, the trainer must keep
running, and nothing non-finite may reach the model. Every abusive request gets a 4xx
with the JSON error body, never a 5xx.
"""

from __future__ import annotations

import collections
import json
import random
import uuid

import pytest
import torch

from celrec.backends import make_event_log, make_state_store
from schemas.messages import MAX_DEAD_LETTER_PAYLOAD
from tests.stack import read_dead_letters, running_stack

GOOD_TIME = "2024-05-01T12:00:00Z"


def envelope(event: dict | None = None, accepted_at: object = 1.7e9, raw: str | None = None,
             **fields: object) -> bytes:
    """A message in the log's encoding with the given event fields changed."""
    body = {"event_id": uuid.uuid4().hex, "user_id": "u", "item_id": "i",
            "timestamp": GOOD_TIME, "value": 1, **fields} if event is None else event
    text = json.dumps({"schema": 1, "accepted_at": accepted_at, "event": body})
    return (text if raw is None else text.replace('"@RAW@"', raw)).encode()


def hostile_messages() -> list[bytes | None]:
    rng = random.Random(7)
    valid = envelope()
    return [
        *(rng.randbytes(n) for n in (1, 64, 4096)),  # random bytes
        valid[: len(valid) // 2], valid[:-1], b"{", b"",  # truncated JSON
        b'{"kind": "not an event"}', b"[1, 2, 3]", b'"a string"', b"42", b"null",
        envelope()[:-1] + b', "extra": 1}',  # unknown top-level field
        json.dumps({"schema": 2, "accepted_at": 0, "event": {}}).encode(),  # wrong schema
        envelope({"user_id": "u"}),  # missing fields
        b"[" * 50_000,  # nested deeper than the JSON parser's recursion limit
        envelope(context={f"k{k}": "v" * 100 for k in range(1000)}),  # oversize (> 64 KiB)
        None,  # a tombstone (null value)
        envelope(user_id="u" * 10_000), envelope(event_id="e" * 129),  # huge ids
        envelope(item_id=10 ** 40), envelope(user_id=""),  # wrong type, empty id
        envelope(value="@RAW@", raw="NaN"), envelope(value="@RAW@", raw="Infinity"),
        envelope(value="@RAW@", raw="-1e999"), envelope(value="nan"),  # non-finite values
        envelope(accepted_at="@RAW@", raw="NaN"), envelope(accepted_at="@RAW@", raw="1e999"),
        envelope(timestamp=-1), envelope(timestamp=-1e18), envelope(timestamp=1e300),
        envelope(timestamp="1900-01-01T00:00:00Z"), envelope(timestamp="9999-12-31T00:00:00Z"),
        envelope(event_type="teleport"), envelope(context={"k": 5}),
        "{\"schema\": 1, \"event\": \"\udcff\"}".encode("utf-8", "surrogatepass"),
    ]


@pytest.mark.integration
def test_every_hostile_message_is_dead_lettered_and_the_model_stays_finite(make_settings):
    settings = make_settings(kafka=True, redis=True, batch_max_events=64, batch_max_wait_ms=50,
                             checkpoint_interval_s=0.2, entity_state_capacity=1000,
                             user_clusters=8, item_clusters=8)
    event_log, store = make_event_log(settings), make_state_store(settings)
    garbage = hostile_messages()
    # extreme but valid: the longest ids, the largest finite value, the oldest time allowed
    extreme = [envelope(user_id="U" * 128, item_id="I" * 128, event_id="E" * 128),
               envelope(value=1.7e308), envelope(value=-1.7e308),
               envelope(timestamp="1970-01-01T00:00:00Z"), envelope(timestamp=0)]
    try:
        with running_stack(settings, event_log, store) as stack:
            good = [{"user_id": f"u{k % 5}", "item_id": f"i{k % 3}", "value": k % 2}
                    for k in range(10)]
            assert stack.client.post("/events", json=good).status_code == 202
            event_log.producer().send(settings.kafka_events_topic,
                                      [(b"k", m) for m in [*garbage, *extreme]], 10.0)
            assert stack.client.post("/events", json=good).status_code == 202
            total = 20 + len(extreme) + len(garbage)
            progress = stack.wait_for(
                lambda p: p.events_applied + p.dead_lettered >= total, 60)
            assert (progress.events_applied, progress.dead_lettered) == (
                20 + len(extreme), len(garbage))
            assert progress.events_skipped == 0

            letters = read_dead_letters(event_log, settings.kafka_dead_letter_topic,
                                        len(garbage))
            assert len(letters) == len(garbage)
            assert all(letter.reason for letter in letters)
            assert len({letter.offset for letter in letters}) == len(garbage)
            kept = [None if m is None else m[:MAX_DEAD_LETTER_PAYLOAD] for m in garbage]
            assert collections.Counter(letter.payload for letter in letters) == \
                collections.Counter(kept)

            # the trainer lives on, learns the valid events, and holds no NaN/inf
            assert stack.client.post("/events", json=good).status_code == 202
            stack.wait_for(lambda p: p.events_applied == 30 + len(extreme), 30)
            learner = stack.trainer.learner
            for side in ("user", "item"):
                assert torch.isfinite(learner.model.cluster_table(side)).all()
            assert all(torch.isfinite(v).all() for v in learner.model.state_dict().values()
                       if v.is_floating_point())
    finally:
        event_log.close()
        store.close()


@pytest.mark.integration
def test_abusive_requests_get_4xx_json_errors_never_5xx(make_settings):
    settings = make_settings(kafka=True, redis=True, ingest_max_batch=50,
                             ingest_max_body_bytes=64 * 1024, score_max_items=20)
    event_log, store = make_event_log(settings), make_state_store(settings)
    ok = {"user_id": "u", "item_id": "i"}
    bodies = [
        (b"[" * 50_000, 422), (b'{"user_id": "u", "item_id": "i", "value": NaN}', 422),
        (b'{"user_id": "u", "item_id": "i", "value": 1e999}', 422),
        (json.dumps({**ok, "user_id": "u" * 129}).encode(), 422),
        (json.dumps({**ok, "timestamp": "1900-01-01T00:00:00Z"}).encode(), 422),
        (json.dumps({**ok, "timestamp": 1e300}).encode(), 422),
        (json.dumps([ok] * 51).encode(), 413),
        (json.dumps({**ok, "context": {"k": "v" * 100_000}}).encode(), 413),
        (b"\xff\xfe garbage", 422), (b"", 422), (b"[]", 422),
    ]
    try:
        with running_stack(settings, event_log, store) as stack:
            for body, status in bodies:
                response = stack.client.post("/events", content=body,
                                             headers={"content-type": "application/json"})
                assert response.status_code == status, (body[:60], response.text[:200])
                assert set(response.json()) == {"error", "message", "details"}
            many = stack.client.get("/scores", params={"user_id": "u",
                                                       "item_id": [f"i{k}" for k in range(21)]})
            assert many.status_code == 413 and many.json()["error"] == "too_many_items"
            for params in ({"user_id": "u" * 129, "item_id": "i"},
                           {"user_id": "u", "item_id": "i" * 129}, {"user_id": "u"}):
                response = stack.client.get("/scores", params=params)
                assert response.status_code == 422 and "error" in response.json()
    finally:
        event_log.close()
        store.close()
