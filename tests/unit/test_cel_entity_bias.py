"""Own per-entity biases and scales of a clustered table: shrinkage priors, equal memory."""

from __future__ import annotations

import torch

from cel.build import cel_bytes, make_recommender
from cel.interactions import Interactions
from cel.offline import OfflineCEL, TrainConfig


def _data() -> Interactions:
    """Items 0 and 1 are both rated far above item 2; item 0 by 40 users, item 1 by one."""
    users = torch.cat([torch.arange(40), torch.tensor([40]), torch.arange(41)])
    items = torch.cat([torch.zeros(40), torch.ones(1), torch.full((41,), 2)]).long()
    labels = torch.cat([torch.full((41,), 5.0), torch.full((41,), 1.0)])
    return Interactions(users, items, labels)


def _own_biases(prior: float) -> torch.Tensor:
    rec = make_recommender("cel", 41, 3, "mf", 2, "item", clusters=1, device="cpu",
                           entity_bias=True)
    data = _data()
    with torch.no_grad():
        rec.model.global_bias.fill_(float(data.labels.mean()))
    config = TrainConfig(epochs=60, batch_size=16, lr=0.05, reg=0.0, entity_bias_prior=prior)
    OfflineCEL(rec, config).fit(data)
    return rec.item_table.bias.detach()


def test_the_prior_shrinks_a_rarely_seen_entitys_own_bias_more() -> None:
    free, shrunk = _own_biases(0.0), _own_biases(10.0)
    # without the prior the one-rating item moves as far as the popular one
    assert free[1] > 0.5 * free[0] > 0
    # with it (classic sum / (n + prior)) the rare item stays near its cluster's bias
    assert 0 < shrunk[1] < 0.3 * shrunk[0]
    assert shrunk[0] > 0.7 * free[0]  # 40 ratings outweigh a prior of 10


def test_hashing_gets_the_memory_the_own_biases_cost() -> None:
    kw = dict(model="mf", dim=8, side="item", clusters=5, device="cpu", entity_bias=True)
    cel = make_recommender("cel", 10, 300, **kw)
    hashed = make_recommender("hash", 10, 300, **kw)
    assert cel.item_table.memory_bytes() == cel_bytes(300, 9, 5, entity_bias=True)
    assert cel.item_table.memory_bytes() == 5 * 9 * 4 + 300 * (1 + 4)
    assert abs(hashed.item_table.memory_bytes() - cel.item_table.memory_bytes()) < 9 * 4
    plain = make_recommender("hash", 10, 300, **{**kw, "entity_bias": False})
    assert plain.item_table.memory_bytes() < hashed.item_table.memory_bytes()


def test_own_penalty_is_prior_over_count_times_the_squared_deviation() -> None:
    rec = make_recommender("cel", 4, 3, "mf", 2, "item", clusters=2, device="cpu",
                           entity_bias=True, entity_scale=True)
    items = torch.tensor([0, 0, 0, 0, 1, 2])  # counts 4, 1, 1
    train = Interactions(torch.zeros(6).long(), items, torch.ones(6))
    trainer = OfflineCEL(rec, TrainConfig(entity_bias_prior=8.0, entity_scale_prior=2.0))
    trainer._start_own_priors(train)
    with torch.no_grad():
        rec.item_table.bias.copy_(torch.tensor([1.0, 2.0, 0.0]))
        rec.item_table.scale.copy_(torch.tensor([3.0, 1.0, 0.0]))
    batch = Interactions(torch.zeros(2).long(), torch.tensor([0, 1]), torch.ones(2))
    # item 0: 8/4*1 + 2/4*4 = 4; item 1: 8/1*4 + 0 = 32; batch mean 18
    assert abs(float(trainer._own_penalty(batch).detach()) - 18.0) < 1e-5
    plain = OfflineCEL(rec, TrainConfig())
    plain._start_own_priors(train)
    assert not plain._inv_count  # no prior: no penalty term at all
