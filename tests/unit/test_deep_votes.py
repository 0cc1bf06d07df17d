"""The streaming deep learners' evidence buffers and co-click votes."""

from datetime import UTC, datetime, timedelta

import numpy as np
import torch

from celrec.settings import Settings
from schemas.events import Event
from trainer.evidence import EntityEvidence
from trainer.learners import make_learner


def test_entity_evidence_keeps_the_last_interactions_of_recently_touched_entities():
    evidence = EntityEvidence(capacity=2, per_entity=3)
    for k in range(5):
        evidence.add(7, other=k, label=float(k % 2), scenario=0, time=float(k))
    evidence.add(8, other=1, label=1.0, scenario=1, time=9.0)
    assert [row[0] for row in evidence.of(7)] == [2, 3, 4]  # the newest three, in order
    evidence.add(7, other=5, label=0.0, scenario=0, time=10.0)  # 7 touched after 8
    evidence.add(9, other=2, label=1.0, scenario=0, time=11.0)  # evicts 8, not 7
    assert len(evidence) == 2 and evidence.of(8) == [] and len(evidence.of(7)) == 3
    restored = EntityEvidence(capacity=2, per_entity=3)
    restored.load(evidence.export("e"), "e")
    assert restored.of(7) == evidence.of(7) and restored.of(9) == evidence.of(9)
    restored.add(10, other=0, label=0.0, scenario=0, time=12.0)  # same eviction order
    assert restored.of(7) == [] and restored.of(9) == evidence.of(9)


def _planted_purity(votes: bool) -> float:
    """Users and items in 3 planted groups (click 0.8 within, 0.05 across); the share of
    users in their cluster's majority group after a short stream (1/3 would be chance)."""
    learner = make_learner(Settings(
        model="saml", device="cpu", embedding_dim=8, user_clusters=3, item_clusters=3,
        initial_clusters=3, split_every=100_000, reassign_window=0, max_scenarios=1,
        sequence_length=20, cluster_votes=votes))
    rng = np.random.default_rng(0)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    k = 0
    for _ in range(60):
        u, i = rng.integers(30, size=128), rng.integers(30, size=128)
        y = rng.random(128) < np.where(u % 3 == i % 3, 0.8, 0.05)
        events = []
        for a, b, c in zip(u, i, y, strict=True):
            k += 1
            events.append(Event(event_id=f"e{k}", user_id=f"u{a}", item_id=f"i{b}",
                                value=float(c), timestamp=start + timedelta(seconds=k)))
        learner.learn(events)
    n = len(learner.ids["user"])
    groups = np.array([int(s[1:]) % 3 for s in learner.ids["user"].external(range(n))])
    rows = learner.tables["user"].assignment[:n].numpy()
    return sum(np.bincount(groups[rows == c]).max() for c in np.unique(rows)) / n


def test_co_click_votes_find_planted_groups_from_the_arbitrary_start():
    without, with_votes = _planted_purity(False), _planted_purity(True)
    assert without < 0.6  # the start: ids spread over the clusters regardless of group
    assert with_votes >= 0.9 > without


def test_vote_matrix_counts_every_neighbours_cluster_once_per_occurrence():
    """The per-partner vote matrix equals walking each entity's neighbours one by one."""
    learner = make_learner(Settings(
        model="dupn", device="cpu", embedding_dim=8, user_clusters=4, item_clusters=4,
        initial_clusters=4, split_every=100_000, reassign_window=0, sequence_length=6))
    rng = np.random.default_rng(1)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for k in range(300):  # repeats, so entities appear in their own partners' lists
        learner.learn([Event(event_id=f"e{k}", user_id=f"u{rng.integers(12)}",
                             item_id=f"i{rng.integers(10)}", value=float(rng.random() < 0.6),
                             timestamp=start + timedelta(seconds=k))])
    for side in ("user", "item"):
        table = learner.tables[side]
        entities = list(range(len(learner.ids[side])))
        walked = torch.zeros(len(entities), table.num_active)
        for k, entity in enumerate(entities):
            for neighbour in learner._neighbours(side, entity):
                walked[k, int(table.clusters_of(torch.tensor([neighbour]))[0])] += 1
        assert walked.sum() > 0
        assert torch.equal(learner._vote_matrix(side, entities, table), walked)
