"""SAML and DUPN (and DeepFM) end to end: events with scenarios and behaviour types posted
to /events train the model online and /scores, /recommendations and
/users/{id}/representation serve it, through the real Kafka and Redis (and the embedded
backends)."""

from __future__ import annotations

import time

import pytest

from celrec.backends import make_event_log, make_state_store
from schemas.sequence import decode_sequence
from schemas.state import StateKeys
from tests.stack import Stack, running_stack

BEHAVIOURS = ("click", "purchase", "add_to_cart", "view")


@pytest.fixture(params=[("saml", "embedded"), ("dupn", "embedded"), ("deepfm", "embedded"),
                        ("saml", "kafka+redis"), ("dupn", "kafka+redis")],
                ids=lambda p: "-".join(p))
def stack(request, make_settings):
    model, backends = request.param
    real = backends == "kafka+redis"
    settings = make_settings(kafka=real, redis=real, model=model, device="cpu",
                             batch_max_events=256, batch_max_wait_ms=50,
                             publish_interval_ms=100, checkpoint_interval_s=0.5,
                             embedding_dim=8, user_clusters=8, item_clusters=8,
                             sequence_length=10, max_scenarios=2, split_every=3)
    event_log, store = make_event_log(settings), make_state_store(settings)
    with running_stack(settings, event_log, store) as running:
        yield running
    event_log.close()
    store.close()


def warm_up(stack: Stack) -> None:
    events = [{"user_id": f"u{k % 30}", "item_id": f"i{k % 25}",
               "event_type": BEHAVIOURS[k % 4], "value": float(k % 3 != 0),
               "scenario": f"s{k % 3}", **({"price_level": k % 7} if k % 2 else {})}
              for k in range(300)]
    assert stack.client.post("/events", json=events).status_code == 202
    stack.wait_for(lambda p: p.events_applied >= 300)
    deadline = time.monotonic() + 30
    while stack.client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "no model was loaded within 30 s"
        time.sleep(0.05)


def get(stack: Stack, path: str, **params) -> dict:
    response = stack.client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def served(stack: Stack) -> tuple[list[float], list[float], tuple[int, int]]:
    scores = get(stack, "/scores", user_id="u1", item_id=["i1", "i2", "i3", "i4"],
                 scenario="s1")
    rep = get(stack, "/users/u1/representation", scenario="s1")
    assert not scores["unknown_user"] and not rep["unknown_user"]
    return ([s["score"] for s in scores["scores"]], rep["vector"],
            (scores["model_version"], scores["model_seq"]))


@pytest.mark.integration
def test_events_train_the_model_online_and_every_endpoint_serves_it(stack):
    kind = stack.settings.model
    warm_up(stack)
    assert get(stack, "/model")["model"] == kind
    scores, vector, version = served(stack)
    rep = get(stack, "/users/u1/representation")
    assert rep["model"] == kind
    assert rep["kind"] == ("representation" if kind == "dupn" else "embedding")

    posted = [{"user_id": "u1", "item_id": "i3", "event_type": kind, "value": 1,
               "scenario": "s1", "price_level": 5}
              for kind in ("click", "purchase", "click", "add_to_cart")] * 5
    assert stack.client.post("/events", json=posted).status_code == 202
    stack.wait_for(lambda p: p.events_applied >= 320)
    key = StateKeys(stack.settings.state_prefix).user_sequence("u1")
    deadline = time.monotonic() + 20
    while True:  # the served state changes after the events (not just after the warm-up:
        # its last delta may still be on its way, so wait for what the posted events wrote)
        after, vector_after, version_after = served(stack)
        raw = stack.store.get(key)
        sequence_done = kind == "deepfm" or (raw is not None and [
            s.item_id for s in decode_sequence(raw)[-4:]] == ["i3"] * 4)
        if (after != scores and vector_after != vector and version_after > version
                and sequence_done):
            break
        assert time.monotonic() < deadline, "the served state never reflected the events"
        time.sleep(0.05)

    if kind == "deepfm":  # no behaviour sequence
        assert raw is None
    else:
        steps = decode_sequence(raw)
        assert len(steps) == 10 and [s.item_id for s in steps[-4:]] == ["i3"] * 4
        assert steps[-1].event_type == "add_to_cart" and steps[-1].scenario == "s1"

    top = get(stack, "/recommendations/u1", n=5, scenario="s1")
    assert not top["unknown_user"] and len(top["items"]) == 5
    assert top["seen_excluded"] == "applied"
    cold = get(stack, "/scores", user_id="nobody", item_id=["i1", "never-seen"])
    assert cold["unknown_user"] and [s["unknown"] for s in cold["scores"]] == [False, True]
    cold_rep = get(stack, "/users/nobody/representation")
    assert cold_rep["unknown_user"] and len(cold_rep["vector"]) == len(vector)
    assert stack.client.get("/recommendations/nobody", params={"n": 3}).status_code == 200
