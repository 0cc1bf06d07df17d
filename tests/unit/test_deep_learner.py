"""The SAML and DUPN streaming learners: learning, sequences, scenarios, checkpoints, serving."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from celrec.settings import Settings
from schemas.events import Event
from schemas.sequence import decode_sequence
from schemas.snapshot import DeltaHeader, SnapshotMeta
from schemas.state import StateKeys
from service.serving_load import serving_model
from service.serving_model import RequestContext, ServingModel
from trainer.learners import UnsupportedModel, make_learner

T0 = datetime(2025, 1, 1, tzinfo=UTC)
KEYS = StateKeys("t")
KINDS = ("saml", "dupn")


def settings(kind: str, **overrides) -> Settings:
    values = dict(model=kind, device="cpu", embedding_dim=8, user_clusters=8, item_clusters=8,
                  split_every=3, max_scenarios=2, reassign_window=32)
    values.update(overrides)
    return Settings(**values)


class Stream:
    """Deterministic events with scenarios, behaviour types and price levels."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.k = 0

    def event(self, user: str, item: str, value: float = 1.0, kind: str = "click",
              scenario: str = "s0", price: int | None = None) -> Event:
        self.k += 1
        return Event(event_id=f"e{self.k}", user_id=user, item_id=item, value=value,
                     event_type=kind, scenario=scenario, price_level=price,
                     timestamp=T0 + timedelta(seconds=10 * self.k))

    def batch(self, n: int = 64, scenarios: tuple[str, ...] = ("s0", "s1")) -> list[Event]:
        out = []
        for _ in range(n):
            u, i = int(self.rng.integers(20)), int(self.rng.integers(30))
            out.append(self.event(f"u{u}", f"i{i}", float((u + i) % 2), str(
                self.rng.choice(["click", "purchase", "add_to_cart"])),
                str(self.rng.choice(scenarios)), int(i % 7) if i % 3 else None))
        return out


def trained(kind: str, batches: int = 8, **overrides):
    learner = make_learner(settings(kind, **overrides))
    stream = Stream()
    for _ in range(batches):
        assert not learner.learn(stream.batch()).skipped
    return learner, stream


def now_of(stream: Stream) -> float:
    return (T0 + timedelta(seconds=10 * stream.k + 5)).timestamp()


@pytest.mark.parametrize("kind", KINDS)
def test_positive_events_raise_the_users_score_for_the_item(kind):
    learner, stream = trained(kind)
    now = now_of(stream)
    before = learner.predict("u1", ["i3"], "s0", now)[0]
    for _ in range(15):
        learner.learn([stream.event("u1", "i3", 1.0, "click", "s0") for _ in range(8)])
    after = learner.predict("u1", ["i3"], "s0", now_of(stream))[0]
    assert after > before + 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_is_capped_ordered_and_learnt_before_appending(kind):
    learner = make_learner(settings(kind, sequence_length=3))
    stream = Stream()
    events = [stream.event("alice", f"i{k}", 1.0, "purchase" if k == 4 else "click",
                           f"s{k % 2}") for k in range(5)]
    events.insert(2, stream.event("alice", "ignored", 0.0, "click"))  # a non-click: no step
    learner.learn(events)
    steps = decode_sequence(learner.sequence_values(KEYS)[KEYS.user_sequence("alice")])
    assert [s.item_id for s in steps] == ["i2", "i3", "i4"]
    assert [s.event_type for s in steps] == ["click", "click", "purchase"]
    assert [s.scenario for s in steps] == ["s0", "s1", "s0"]
    assert steps[0].time < steps[1].time < steps[2].time
    # each event is learnt with the sequence before it: a fresh learner predicting the
    # batch before learning sees alice's first event with an empty sequence
    fresh = make_learner(settings(kind, sequence_length=3))
    batch, appends = fresh._inputs(events[:3])
    assert [u for u, _ in appends] == [0, 0]  # two positives, the non-click adds nothing
    lengths = (batch["mask"] if kind == "saml" else batch["seq"].mask).sum(dim=1).tolist()
    assert lengths == [0, 1, 2]


def test_new_scenarios_get_a_branch_up_to_the_budget_then_share_the_aux_network(caplog):
    learner = make_learner(settings("saml", max_scenarios=2))
    stream = Stream()
    with caplog.at_level(logging.INFO, logger="trainer.deep_models"):
        for scenario in ("home", "search", "cart", "home"):
            learner.learn([stream.event("u", "i", 1.0, "click", scenario)])
    slots = learner.net.slots(torch.arange(3)).tolist()
    assert learner.scenarios == ["home", "search", "cart"]
    assert slots == [0, 1, -1]
    text = caplog.text
    assert "'search' gets branch 1" in text and "'cart' is beyond" in text
    # the shared scenario is served by the auxiliary network: its score equals an unknown's
    now = now_of(stream)
    np.testing.assert_allclose(learner.predict("u", ["i"], "cart", now),
                               learner.predict("u", ["i"], None, now))


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_predicts_and_keeps_learning_identically(kind):
    learner, stream = trained(kind)
    copy = make_learner(settings(kind))
    copy.restore(learner.state())
    now = now_of(stream)
    items = ["i1", "i2", "i5"]
    assert np.array_equal(copy.predict("u3", items, "s1", now),
                          learner.predict("u3", items, "s1", now))
    more = stream.batch()
    learner.learn(more)
    copy.learn(more)
    assert np.array_equal(copy.predict("u3", items, "s1", now),
                          learner.predict("u3", items, "s1", now))
    assert copy.scenarios == learner.scenarios
    assert copy.sequences.steps(0) == learner.sequences.steps(0)


def test_a_checkpoint_of_another_model_is_ignored():
    saml, _ = trained("saml", batches=2)
    dupn = make_learner(settings("dupn"))
    dupn.restore(saml.state())
    assert len(dupn.ids["user"]) == 0


def _snapshot(learner, kind: str) -> ServingModel:
    arrays = learner.snapshot_arrays()
    meta = SnapshotMeta(version=1, created_at=0.0, model=kind, loss="logloss",
                        dim=getattr(learner, "dim", learner.settings.embedding_dim),
                        sides=learner.side_meta(), scenarios=learner.scenarios,
                        arrays=sorted(arrays),
                        network=learner.network_spec() if kind in KINDS else {})
    return serving_model(meta, arrays)


def _served(model: ServingModel, learner, user: str, items: list[str], scenario, now):
    raw = learner.sequence_values(KEYS).get(KEYS.user_sequence(user))
    steps = decode_sequence(raw) if raw else []
    return model.score(user, items, scenario, RequestContext(steps, now))


@pytest.mark.parametrize("kind", KINDS)
def test_served_scores_equal_the_trainers_predictions_through_snapshot_and_delta(kind):
    learner, stream = trained(kind)
    served = _snapshot(learner, kind)
    items = [f"i{k}" for k in range(12)]
    for scenario in ("s0", "s1", "nowhere", None):
        now = now_of(stream)
        scores, unknown_user, unknown = _served(served, learner, "u4", items, scenario, now)
        assert not unknown_user and not any(unknown)
        np.testing.assert_allclose(scores, learner.predict("u4", items, scenario, now),
                                   rtol=1e-5, atol=1e-6)
    for _ in range(4):  # the delta carries new weights, ids, reassignments and splits
        learner.learn(stream.batch(scenarios=("s0", "s2")))
    learner.learn([stream.event("newbie", "new-item", 1.0, "click", "s2")])
    first_new, splits, arrays = learner.delta_arrays()
    served.apply_delta(DeltaHeader(version=1, seq=1, created_at=1.0, sides=learner.side_meta(),
                                   first_new=first_new, scenarios=learner.scenarios),
                       arrays)
    now = now_of(stream)
    for user in ("u4", "newbie"):
        scores, unknown_user, _ = _served(served, learner, user, [*items, "new-item"], "s2",
                                          now)
        assert not unknown_user
        np.testing.assert_allclose(scores, learner.predict(user, [*items, "new-item"], "s2",
                                                           now), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_serving_flags_unknown_ids_and_gives_a_representation(kind):
    learner, stream = trained(kind)
    served = _snapshot(learner, kind)
    now = now_of(stream)
    scores, unknown_user, unknown = served.score("stranger", ["i1", "nope"], "s0",
                                                 RequestContext((), now))
    assert unknown_user and unknown == [False, True] and np.isfinite(scores).all()
    raw = learner.sequence_values(KEYS)[KEYS.user_sequence("u2")]
    vector, unknown_user = served.representation("u2", "s0",
                                                 RequestContext(decode_sequence(raw), now))
    assert not unknown_user and np.isfinite(vector).all()
    if kind == "dupn":  # pooled sequence + the user's row, as the trainer computes it
        assert len(vector) == learner.net.rep_dim
        np.testing.assert_allclose(vector, learner.representation("u2", "s0", now),
                                   rtol=1e-5, atol=1e-6)
    else:  # the user's embedding row
        user = torch.from_numpy(learner.ids["user"].lookup(["u2"]))
        np.testing.assert_allclose(vector, learner.net.user_table(user)[0].detach().numpy(),
                                   rtol=1e-6)
    top = served.retrieve("u2", 5, "s0", request=RequestContext(decode_sequence(raw), now))
    assert len(top.items) == 5


def test_an_unknown_model_is_refused_naming_the_setting():
    with pytest.raises(UnsupportedModel, match="CELREC_MODEL=wide"):
        make_learner(Settings.model_construct(**{**Settings().model_dump(), "model": "wide"}))


def test_deepfm_streams_through_online_cel_and_serves_the_trainers_scores():
    learner = make_learner(settings("deepfm"))
    stream = Stream()
    for _ in range(8):
        learner.learn(stream.batch())
    assert learner.model_kind == "deepfm"
    served = _snapshot(learner, "deepfm")
    items = [f"i{k}" for k in range(10)]
    scores, unknown_user, unknown = served.score("u3", items)
    assert not unknown_user and not any(unknown)
    users = torch.from_numpy(learner.ids["user"].lookup(["u3"] * len(items)))
    expected = learner.model.predict(users, torch.from_numpy(learner.ids["item"].lookup(items)))
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5, atol=1e-6)
    # an mf checkpoint is not loaded into deepfm (nor the other way): fresh start
    other = make_learner(settings("mf"))
    other.restore(learner.state())
    assert len(other.ids["user"]) == 0
    copy = make_learner(settings("deepfm"))
    copy.restore(learner.state())
    assert np.array_equal(copy.model.predict(users, users * 0).numpy(),
                          learner.model.predict(users, users * 0).numpy())


def test_price_level_is_optional_validated_and_old_messages_still_decode():
    from fastapi.testclient import TestClient

    from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
    from schemas.messages import decode_event, encode_event
    from service.app import build_state, create_app

    client = TestClient(create_app(build_state(Settings(), EmbeddedEventLog(),
                                               EmbeddedStateStore())))
    for bad in (7, -1, "cheap", 2.5):
        response = client.post("/events", json={"user_id": "u", "item_id": "i",
                                                 "price_level": bad})
        assert response.status_code == 422
        assert [d["field"] for d in response.json()["details"]] == ["price_level"]
    ok = client.post("/events", json={"user_id": "u", "item_id": "i", "price_level": 6})
    assert ok.status_code == 202
    event = Stream().event("u", "i", price=3)
    assert decode_event(encode_event(event, 1.0)[1]).event.price_level == 3
    _, old = encode_event(Stream().event("u", "i"), 1.0)
    assert b"price_level" not in old  # what an old trainer reads: unchanged
    assert decode_event(old).event.price_level is None
