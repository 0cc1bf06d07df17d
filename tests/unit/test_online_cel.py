"""Online CEL (cel.online): learning on a planted stream, invariants, bounded state, guards."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cel.online import MFInteraction, OnlineCEL, OnlineCELConfig, pairwise_scores

K, N_USERS, N_ITEMS = 4, 400, 200


pytestmark = pytest.mark.usefixtures("one_thread")


def planted_stream(batches: int, batch: int = 256, seed: int = 0):
    """Users and items in K groups each; clicks are likely only within matching groups."""
    g = torch.Generator().manual_seed(seed)
    user_group = torch.randint(0, K, (N_USERS,), generator=g)
    item_group = torch.randint(0, K, (N_ITEMS,), generator=g)
    for _ in range(batches):
        u = torch.randint(0, N_USERS, (batch,), generator=g)
        i = torch.randint(0, N_ITEMS, (batch,), generator=g)
        p = torch.where(user_group[u] == item_group[i], 0.8, 0.1)
        yield u, i, (torch.rand(batch, generator=g) < p).float()


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    ranks = torch.empty_like(scores)
    ranks[torch.argsort(scores)] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def small_config(**kw) -> OnlineCELConfig:
    base = dict(dim=16, user_clusters=8, item_clusters=8, initial_clusters=4,
                split_window=5 * 256,
                state_capacity=1000, history=16, initial_capacity=64, seed=0)
    base.update(kw)
    return OnlineCELConfig(**base)


def assignments(model: OnlineCEL, side: str, n: int) -> torch.Tensor:
    return model.clusters_of(side, torch.arange(n)).clone()


@pytest.fixture(scope="module")
def trained():
    """One progressive (predict-then-learn) pass over the planted stream, with invariants
    checked after every step."""
    model = OnlineCEL(small_config(), device="cpu")
    preds, labels, outs, min_sizes = [], [], [], []
    for users, items, y in planted_stream(300):
        preds.append(model.predict(users, items))
        labels.append(y)
        outs.append(model.step(users, items, y))
        min_sizes.append(min(int(model.cluster_sizes(s).min()) for s in ("user", "item")))
        for side, n in (("user", N_USERS), ("item", N_ITEMS)):
            a = assignments(model, side, n)
            seen = a[a >= 0]
            # incremental member counts must equal a full recount
            live = model.cluster_sizes(side)
            assert torch.equal(torch.bincount(seen, minlength=live.numel()), live)
    return model, torch.cat(preds), torch.cat(labels), outs, min_sizes


def test_progressive_auc_improves(trained):
    _, p, y, _, _ = trained
    n = len(p)
    first, last = auc(p[: n // 5], y[: n // 5]), auc(p[-n // 5:], y[-n // 5:])
    assert last > 0.7, (first, last)
    assert last > first + 0.05, (first, last)


def test_splits_happen_and_stop_at_budget(trained):
    model, _, _, outs, _ = trained
    for side in ("user", "item"):
        splits = sum(o.splits[side] for o in outs)
        assert splits == 8 - 4  # budget minus the initial clusters
        assert outs[-1].clusters[side] == 8
        assert model.cluster_sizes(side).numel() == 8
    # after the budget is reached no split happens any more
    last_split = max(k for k, o in enumerate(outs) if o.splits["user"] or o.splits["item"])
    assert last_split < len(outs) - 50


def test_no_cluster_ever_empty(trained):
    _, _, _, _, min_sizes = trained
    assert min(min_sizes) >= 1


def test_counters(trained):
    _, _, _, outs, _ = trained
    assert all(o.events == 256 and not o.skipped for o in outs)
    assert sum(o.new["user"] for o in outs) == outs[-1].known["user"] == N_USERS
    assert sum(o.new["item"] for o in outs) == N_ITEMS
    assert sum(o.reassigned["user"] + o.reassigned["item"] for o in outs) > 0
    assert all(math.isfinite(o.loss) for o in outs)


def test_new_id_gets_most_popular_cluster_not_zero():
    # Own biases off: the point is the cluster row an unknown id is served from.
    model = OnlineCEL(small_config(initial_clusters=4, entity_bias=False), device="cpu")
    model.register("user", torch.arange(10), torch.tensor([2] * 6 + [0, 1, 3, 3]))
    model.register("item", torch.arange(4), torch.tensor([0, 1, 2, 3]))
    assert model.register("user", torch.tensor([0, 20, 20]), torch.tensor([1, 1, 1])) == 1
    assert int(model.cluster_sizes("user").sum()) == 11  # id 0 kept its cluster, 20 once
    assert int(model.cluster_sizes("user").argmax()) == 2
    out = model.step(torch.tensor([100]), torch.tensor([1]), torch.tensor([1.0]))
    assert out.new["user"] == 1
    assert int(model.clusters_of("user", torch.tensor([100]))) == 2
    # unknown ids (never seen, -1, beyond capacity) are served from the same cluster
    unknown = torch.tensor([-1, 55, 10**9])
    cluster2 = torch.tensor([0, 1, 2])  # ids of users in cluster 2
    p_unknown = model.predict(unknown, torch.tensor([1, 1, 1]))
    p_known = model.predict(cluster2, torch.tensor([1, 1, 1]))
    assert torch.allclose(p_unknown, p_known)


def test_ids_beyond_capacity_grow_the_arrays():
    model = OnlineCEL(small_config(initial_capacity=16), device="cpu")
    out = model.step(torch.tensor([3, 5000]), torch.tensor([70000, 1]), torch.tensor([1.0, 0.0]))
    assert out.known["user"] == 2 and out.known["item"] == 2
    assert model.sides["item"].capacity >= 70001
    assert int(model.clusters_of("item", torch.tensor([70000]))) >= 0


def test_reassignment_touches_only_the_batch():
    model = OnlineCEL(small_config(split_window=10**9), device="cpu")
    for k, (users, items, y) in enumerate(planted_stream(60)):
        before_u, before_i = assignments(model, "user", N_USERS), assignments(model, "item",
                                                                             N_ITEMS)
        out = model.step(users, items, y)
        assert out.splits["user"] == out.splits["item"] == 0
        for side, before, batch in (("user", before_u, users), ("item", before_i, items)):
            after = assignments(model, side, len(before))
            changed = (after != before).nonzero().squeeze(1)
            assert bool(torch.isin(changed, batch).all()), (k, side)
    assert model.totals["reassigned"] > 0


def test_return_changes_replays_assignments():
    model = OnlineCEL(small_config(split_window=3 * 256), device="cpu")
    mirror = {"user": torch.full((N_USERS,), -1), "item": torch.full((N_ITEMS,), -1)}
    for users, items, y in planted_stream(40):
        out = model.step(users, items, y, return_changes=True)
        for side in ("user", "item"):
            ids, clusters = out.changes[side]
            mirror[side][ids] = clusters
        for side, parent, child, moved in out.split_events:
            assert child == model.cluster_sizes(side).numel() - 1 or child < 8
            assert bool((mirror[side][moved] == child).all()) and parent != child
    for side, n in (("user", N_USERS), ("item", N_ITEMS)):
        assert torch.equal(mirror[side], assignments(model, side, n))


def test_state_is_bounded_and_lru():
    cap = 50
    model = OnlineCEL(small_config(state_capacity=cap), device="cpu")
    for users, items, y in planted_stream(30, batch=32):
        out = model.step(users, items, y)
        for side, batch in (("user", users), ("item", items)):
            s = model.sides[side]
            assert out.state[side] <= cap
            owners = s.owner[s.owner >= 0]
            assert owners.numel() == torch.unique(owners).numel() <= cap
            # slot map and owners agree, and nobody else holds a slot
            assert torch.equal(s.slot_of[owners].long(), (s.owner >= 0).nonzero().squeeze(1))
            assert int((s.slot_of >= 0).sum()) == owners.numel()
            # the entities just touched are the most recent ones: they all hold state
            assert bool((s.slot_of[torch.unique(batch)] >= 0).all())
    # the oldest slot owners are evicted first: replay the touch order by hand
    model = OnlineCEL(small_config(state_capacity=3), device="cpu")
    for u in ([0], [1], [2], [0], [3]):  # 1 is least recently touched when 3 arrives
        model.step(torch.tensor(u), torch.tensor([0]), torch.tensor([1.0]))
    holders = set(model.sides["user"].owner.tolist())
    assert holders == {0, 2, 3}
    assert model.memory_bytes() > 0


def test_state_dict_round_trip():
    model = OnlineCEL(small_config(), device="cpu")
    stream = list(planted_stream(40))
    for users, items, y in stream[:30]:
        model.step(users, items, y)
    clone = OnlineCEL(small_config(), device="cpu")
    clone.load_state_dict(model.state_dict())
    u, i = torch.arange(N_USERS).repeat(2)[:N_ITEMS * 2], torch.arange(N_ITEMS).repeat(2)
    assert torch.equal(model.predict(u, i), clone.predict(u, i))
    # training continues identically (RNG and every counter restored)
    for users, items, y in stream[30:]:
        a, b = model.step(users, items, y), clone.step(users, items, y)
        assert a == b
    assert torch.equal(model.predict(u, i), clone.predict(u, i))


@pytest.mark.parametrize("loss", ["logloss", "mse"])
def test_non_finite_batches_are_skipped(loss):
    model = OnlineCEL(small_config(loss=loss), device="cpu")
    for users, items, y in planted_stream(5):
        model.step(users, items, y)
    before = {k: v.clone() for k, v in model.state_dict().items()
              if k not in ("rng", "totals.skipped")}
    bad = [torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("inf")])]
    if loss == "mse":
        bad.append(torch.tensor([1.0, 3e38]))  # finite label, inf loss
    for y in bad:
        # user 450 is new (inside the grown capacity): a rejected batch must not admit it
        out = model.step(torch.tensor([1, 450]), torch.tensor([3, 4]), y)
        assert out.skipped
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert model.totals["skipped"] == len(bad)
    for s in model.sides.values():
        assert bool(torch.isfinite(s.table).all())


def test_mse_learns_ratings():
    model = OnlineCEL(small_config(loss="mse", lr=0.2), device="cpu")
    losses = []
    for users, items, y in planted_stream(200, seed=1):
        losses.append(model.step(users, items, y * 4.0 + 1.0).loss)  # ratings 1 or 5
    # a constant predictor scores 16 * 0.275 * 0.725 = 3.19; the planted optimum is 1.72
    assert sum(losses[-20:]) / 20 < 2.4 < sum(losses[:20]) / 20


def test_per_entity_side_and_generic_interaction():
    class RowWiseMF(nn.Module):  # no ``pairwise``: exercises the generic flattening path
        def __init__(self) -> None:
            super().__init__()
            self.global_bias = nn.Parameter(torch.zeros(()))

        def forward(self, u, i, context=None):
            return (u[:, :-1] * i[:, :-1]).sum(1) + u[:, -1] + i[:, -1] + self.global_bias

    model = OnlineCEL(small_config(cluster_users=False), device="cpu", interaction=RowWiseMF())
    preds, labels = [], []
    for users, items, y in planted_stream(200):
        preds.append(model.predict(users, items))
        labels.append(y)
        model.step(users, items, y)
    p, y = torch.cat(preds), torch.cat(labels)
    assert auc(p[-10000:], y[-10000:]) > 0.7
    assert model.cluster_sizes("user").numel() == N_USERS  # one row per user
    # an unknown user on the per-entity side gets a neutral (zero) row
    assert torch.isfinite(model.predict(torch.tensor([10**6]), torch.tensor([0]))).all()
    a, b = torch.randn(3, 2, 17), torch.randn(3, 5, 17)
    # the generic (flattened) pairwise path agrees with MFInteraction's bmm fast path
    assert torch.allclose(pairwise_scores(RowWiseMF(), a, b), MFInteraction().pairwise(a, b),
                          atol=1e-5)


def test_split_windows_are_counted_in_events_whatever_the_batch_size():
    """The trainer's micro-batches follow the traffic; a window of 1,024 events ends on the
    batch that reaches it, so small batches do not split rows on a few events each."""
    model = OnlineCEL(small_config(split_window=1024), device="cpu")
    split_steps = [k for k, (users, items, y) in enumerate(planted_stream(160, batch=32))
                   if sum(model.step(users, items, y).splits.values())]
    assert split_steps, "no window ended in a split"
    assert all((k + 1) * 32 % 1024 == 0 for k in split_steps), split_steps
    for users, items, y in planted_stream(3, batch=100, seed=1):
        model.step(users, items, y)
    assert model.window_events == 300
    restored = OnlineCEL(small_config(split_window=1024), device="cpu")
    restored.load_state_dict(model.state_dict())
    assert restored.window_events == 300
