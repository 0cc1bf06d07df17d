"""The event path end to end: POST /events -> event log -> trainer -> state store.

The same tests run against the embedded backends and against real Kafka and Redis.
"""

from __future__ import annotations

import time

import pytest

from celrec.backends import make_event_log, make_state_store
from celrec.settings import Settings
from tests.stack import read_dead_letters, running_stack

N_EVENTS = 300


@pytest.fixture(params=["embedded", "kafka+redis"])
def stack_settings(request, make_settings) -> Settings:
    real = request.param == "kafka+redis"
    return make_settings(kafka=real, redis=real, batch_max_events=64, batch_max_wait_ms=50,
                         checkpoint_interval_s=0.2, entity_state_capacity=1000)


@pytest.mark.integration
def test_posted_events_are_applied_exactly_once(stack_settings):
    event_log, store = make_event_log(stack_settings), make_state_store(stack_settings)
    with running_stack(stack_settings, event_log, store) as stack:
        ids: list[str] = []
        for start in range(0, N_EVENTS, 100):
            batch = [{"user_id": f"u{k % 17}", "item_id": f"i{k % 23}", "value": k % 2}
                     for k in range(start, start + 100)]
            response = stack.client.post("/events", json=batch)
            assert response.status_code == 202, response.text
            ids += response.json()["event_ids"]
        assert len(set(ids)) == N_EVENTS
        # a client retrying part of a batch with the same ids must not double-count
        retry = [{"event_id": ids[k], "user_id": f"u{k % 17}", "item_id": f"i{k % 23}",
                  "value": k % 2} for k in range(40)]
        assert stack.client.post("/events", json=retry).status_code == 202
        progress = stack.wait_for(
            lambda p: p.events_applied + p.duplicates_skipped >= N_EVENTS + 40)
        assert progress.events_applied == N_EVENTS
        assert progress.duplicates_skipped == 40
        assert stack.trainer.learner.positives() == N_EVENTS // 2
        time.sleep(0.5)  # nothing more arrives later
        assert stack.progress().events_applied == N_EVENTS
    event_log.close()
    store.close()


@pytest.mark.integration
def test_garbage_on_the_topic_is_dead_lettered_and_the_trainer_keeps_going(stack_settings):
    event_log, store = make_event_log(stack_settings), make_state_store(stack_settings)
    garbage = [b"\x00\x9f random bytes", b'{"schema": 1, "accepted_at": 0, "event": {"user_',
               b'{"schema": 1, "accepted_at": 0, "event": {"user_id": 3}}',
               b'{"kind": "not an event"}', b"null"]
    with running_stack(stack_settings, event_log, store) as stack:
        assert stack.client.post(
            "/events", json=[{"user_id": "a", "item_id": "x"}] * 5).status_code == 202
        event_log.producer().send(stack_settings.kafka_events_topic,
                                  [(b"a", g) for g in garbage], 10.0)
        assert stack.client.post(
            "/events", json=[{"user_id": "a", "item_id": "y"}] * 5).status_code == 202
        progress = stack.wait_for(lambda p: p.events_applied + p.dead_lettered >= 15)
        assert (progress.events_applied, progress.dead_lettered) == (10, len(garbage))
        letters = read_dead_letters(event_log, stack_settings.kafka_dead_letter_topic,
                                    len(garbage))
        assert sorted(letter.payload for letter in letters) == sorted(garbage)
        assert all(letter.reason and letter.topic == stack_settings.kafka_events_topic
                   for letter in letters)
    event_log.close()
    store.close()


@pytest.mark.integration
def test_unreachable_kafka_answers_503_with_retry_after(make_settings):
    from service.app import build_state, create_app
    from tests.localservers import free_port
    from tests.stack import TestClient

    settings = make_settings(event_log="kafka", kafka_api_version="0.9", produce_timeout_s=2,
                             kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    event_log = make_event_log(settings)
    client = TestClient(create_app(build_state(settings, event_log, make_state_store(settings))))
    started = time.monotonic()
    response = client.post("/events", json={"user_id": "u", "item_id": "i"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"] == "event_log_unavailable"
    assert time.monotonic() - started < 15  # bounded by produce_timeout_s, not hanging
    event_log.close()
