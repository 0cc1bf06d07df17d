"""What the streaming learner must do on small hand-made streams (cel.online defaults):
own biases learn a pure-bias stream, an entity seen once moves, a first-sight item is scored
from the user's side, co-click votes find planted groups from a random start, and the
served model (trainer -> publisher -> follower) scores as the learner does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cel.online import OnlineCEL, OnlineCELConfig
from celrec.demo import DemoWorkload
from cli.evaluation.served import CelrecStream

pytestmark = pytest.mark.usefixtures("one_thread")


def config(**kw) -> OnlineCELConfig:
    return OnlineCELConfig(**{"dim": 8, "user_clusters": 16, "item_clusters": 16,
                              "initial_capacity": 64, "state_capacity": 1000, **kw})


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_own_biases_learn_a_pure_bias_stream():
    """Click probability depends on the user and the item alone (no interaction): the own
    biases recover the order of both, and the learner's loss approaches the stream's."""
    rng = np.random.default_rng(0)
    users, items = 40, 30
    ub, ib = rng.normal(0, 1.5, users), rng.normal(0, 1.5, items)
    model = OnlineCEL(config(), device="cpu")
    for _ in range(150):
        u, i = rng.integers(0, users, 200), rng.integers(0, items, 200)
        p = 1 / (1 + np.exp(-(ub[u] + ib[i])))
        y = (rng.random(200) < p).astype(np.float32)
        model.step(torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(y))
    got_u = model.entity_bias("user", torch.arange(users)).numpy()
    got_i = model.entity_bias("item", torch.arange(items)).numpy()
    assert np.corrcoef(got_u, ub)[0, 1] > 0.9
    assert np.corrcoef(got_i, ib)[0, 1] > 0.9


def test_an_entity_seen_once_moves_as_far_as_a_frequent_one():
    """A Newton step on the entity's summed gradient: one event moves a new item's bias by
    1/(prior + 1) of a full step, not by 1/batch of it, even inside a large micro-batch of
    other events; 299 events in one batch move a bias by no more than their mean residual's
    Newton step."""
    model = OnlineCEL(config(), device="cpu")
    others = torch.arange(1, 300)
    users = torch.cat([torch.tensor([0]), others])
    items = torch.cat([torch.tensor([0]), torch.ones(299, dtype=torch.long)])
    labels = torch.cat([torch.tensor([1.0]), torch.zeros(299)])
    before = model.entity_bias("item", torch.tensor([0, 1]))
    model.step(users, items, labels)
    after = model.entity_bias("item", torch.tensor([0, 1]))
    moved_once, moved_often = (after - before).tolist()
    # towards its one click: the residual is about 1 and the log-loss curvature bound 1/4
    full_step = 1 / (0.25 * (model.config.bias_prior_events + 1))
    assert moved_once == pytest.approx(full_step, rel=0.05)
    assert moved_often < 0  # 299 non-clicks
    assert abs(moved_once) > 0.5 * abs(moved_often)


def test_a_first_sight_item_is_scored_from_the_users_side():
    """Two users with opposite histories: an item neither has seen is scored higher for the
    one who clicks everything (own bias and row), and equal to the first-sight prior's."""
    model = OnlineCEL(config(), device="cpu")
    rng = np.random.default_rng(1)
    for _ in range(40):
        items = torch.from_numpy(rng.integers(0, 20, 100))
        users = torch.tensor([0, 1] * 50)
        labels = (users == 0).float()
        model.step(users, items, labels)
    never_seen = torch.tensor([10_000, 10_000])
    p = model.predict(torch.tensor([0, 1]), never_seen)
    assert float(p[0]) > 0.7 and float(p[1]) < 0.3
    # the unknown item's own bias is the learnt first-sight prior, not a blind zero
    prior = float(model.sides["item"].bias_prior)
    assert model.entity_bias("item", never_seen)[0] == pytest.approx(prior)


def test_votes_find_planted_groups_from_a_random_start():
    """8 planted groups, clicks only within groups (the demo workload): the co-click votes
    gather each group's users into few clusters; the loss rule alone cannot start."""
    workload = DemoWorkload(users=200, items=100, groups=4, seed=3)
    events = workload.events()
    batch = [next(events) for _ in range(12_000)]
    u = torch.tensor([int(e.user_id.split("-")[1]) for e in batch])
    i = torch.tensor([int(e.item_id.split("-")[1]) for e in batch])
    y = torch.tensor([e.value for e in batch])

    def purity(model: OnlineCEL) -> float:
        assign = model.clusters_of("user", torch.arange(200)).numpy()
        groups = np.arange(200) % 4
        return sum(np.bincount(groups[assign == c]).max() for c in np.unique(assign)) / 200

    results = {}
    for votes in (True, False):
        model = OnlineCEL(config(votes=votes, loss_reassign=not votes), device="cpu")
        for s in range(0, len(u), 200):
            model.step(u[s:s + 200], i[s:s + 200], y[s:s + 200])
        results[votes] = purity(model)
    assert results[True] > 0.8, results
    assert results[True] > results[False] + 0.2, results


def test_served_scores_equal_the_learners():
    """The in-process served path (trainer learner -> publisher -> follower -> serving model)
    scores known and unknown ids as the learner itself does."""
    stream = CelrecStream("binary", seed=0)
    events = DemoWorkload(users=50, items=30, seed=2).events()
    for _ in range(5):
        chunk = [next(events) for _ in range(200)]
        stream.process([e.user_id for e in chunk], [e.item_id for e in chunk],
                       np.array([e.value for e in chunk]), np.zeros(len(chunk)))
    users = ["user-1", "user-2", "nobody"]
    items = ["item-3", "never-seen", "item-4"]
    served = np.array([stream.follower.model.score(u, [i])[0][0]
                       for u, i in zip(users, items, strict=True)])
    learner = stream.learner
    uid = [learner.ids["user"].lookup([u])[0] for u in users]
    iid = [learner.ids["item"].lookup([i])[0] for i in items]
    direct = learner.model.predict(torch.tensor(uid), torch.tensor(iid)).numpy()
    assert served == pytest.approx(direct, abs=1e-5)


def test_rating_objective_serves_predicted_values():
    """CELREC_OBJECTIVE=rating: the learner fits the values (squared loss), the snapshot says
    mse, and the served scores are ratings that beat the running mean on a biased stream."""
    rng = np.random.default_rng(4)
    users, items = 60, 40
    ub, ib = rng.normal(0, 0.8, users), rng.normal(0, 0.8, items)
    stream = CelrecStream("rating", seed=0)
    errors, baseline = [], []
    seen: list[float] = []
    for _ in range(30):
        u, i = rng.integers(0, users, 200), rng.integers(0, items, 200)
        y = np.clip(np.round(3.5 + ub[u] + ib[i] + rng.normal(0, 0.5, 200)), 1, 5)
        p = stream.process([f"u{k}" for k in u], [f"i{k}" for k in i], y, np.zeros(200))
        errors.append(np.mean((p - y) ** 2))
        baseline.append(np.mean((np.mean(seen) - y) ** 2) if seen else np.nan)
        seen += y.tolist()
    assert stream.follower.model.loss == "mse"
    assert np.sqrt(np.mean(errors[-10:])) < 0.8 * np.sqrt(np.nanmean(baseline[-10:]))
