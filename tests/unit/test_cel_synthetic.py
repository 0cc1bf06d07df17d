"""End to end on synthetic data with planted item clusters: recovery (ARI) and cold items."""

from __future__ import annotations

import torch

from cel.build import make_recommender
from cel.interactions import Interactions
from cel.metrics import adjusted_rand_index, rmse
from cel.models import MF
from cel.offline import OfflineCEL, TrainConfig
from cel.recommender import Recommender
from cel.tables import ClusteredEmbedding, FullEmbedding

USERS, ITEMS, K, DIM = 150, 200, 4, 8


def planted(seed: int) -> tuple[Interactions, Interactions, torch.Tensor, torch.Tensor]:
    """Ratings from user vectors and K item-cluster vectors; a fifth of the items are cold."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.randint(K, (ITEMS,), generator=gen)
    users = torch.randn(USERS, DIM, generator=gen)
    centres = torch.randn(K, DIM, generator=gen) * 1.5
    cold = torch.rand(ITEMS, generator=gen) < 0.2
    per_item = torch.where(cold, torch.randint(1, 4, (ITEMS,), generator=gen),
                           torch.randint(30, 60, (ITEMS,), generator=gen))
    items = torch.arange(ITEMS).repeat_interleave(per_item + 10)  # +10 held out per item
    raters = torch.randint(USERS, (len(items),), generator=gen)
    labels = (users[raters] * centres[truth[items]]).sum(1) / DIM**0.5 + 3.0
    labels = labels + 0.3 * torch.randn(len(items), generator=gen)
    rank = torch.cat([torch.arange(n + 10) for n in per_item.tolist()])
    held = rank >= per_item[items]
    data = Interactions(raters, items, labels)
    return data.subset(~held), data.subset(held), truth, cold


def fit(rec: Recommender, train: Interactions, epochs: int = 25) -> None:
    with torch.no_grad():
        rec.model.global_bias.fill_(float(train.labels.mean()))
    config = TrainConfig(epochs=epochs, batch_size=256, lr=0.01, reg=0.01, split_every=5,
                         reassign_every=10, reassign_epochs=epochs - 3, seed=0)
    OfflineCEL(rec, config).fit(train)


def test_cel_recovers_planted_clusters_and_beats_full_embedding_on_cold_items() -> None:
    train, test, truth, cold = planted(seed=0)
    cel = make_recommender("cel", USERS, ITEMS, "mf", DIM, "item", K, device="cpu")
    fit(cel, train)
    warm = ~cold
    ari = adjusted_rand_index(cel.item_table.assignment.long()[warm], truth[warm])
    assert ari >= 0.7, ari
    full = make_recommender("full", USERS, ITEMS, "mf", DIM, "item", K, device="cpu")
    fit(full, train)
    on_cold = cold[test.items]
    cel_cold = rmse(cel.predict(test)[on_cold], test.labels[on_cold])
    full_cold = rmse(full.predict(test)[on_cold], test.labels[on_cold])
    assert cel_cold < full_cold, (cel_cold, full_cold)


def test_cluster_budget_is_used_and_every_cluster_keeps_members() -> None:
    train, _, _, _ = planted(seed=1)
    model = MF(DIM)
    rec = Recommender(FullEmbedding(USERS, DIM + 1), ClusteredEmbedding(ITEMS, DIM + 1, 6),
                      model)
    fit(rec, train, epochs=6)
    table = rec.item_table
    assert table.num_active == 6
    assert torch.all(table.counts[:6] > 0) and int(table.counts.sum()) == ITEMS


def test_prior_row_holds_rare_items_and_learns() -> None:
    train, _, _, cold = planted(seed=2)
    rec = make_recommender("cel", USERS, ITEMS, "mf", DIM, "item", K + 1, device="cpu")
    config = TrainConfig(epochs=4, batch_size=256, lr=0.01, reg=0.01, split_every=5,
                         reassign_every=10, reassign_epochs=3, prior_max_count=5,
                         reassign_min_count=6, seed=0)
    trainer = OfflineCEL(rec, config)
    before = rec.item_table.weight.detach().clone()
    trainer.fit(train)
    table = rec.item_table
    rare = torch.bincount(train.items, minlength=ITEMS) <= 5
    assert rare.any() and torch.all(table.assignment[rare] == 0)  # pinned in the prior row
    assert table.num_active == K + 1
    assert not torch.equal(before[0], table.weight[0].detach())


def test_exclusive_prior_row_never_takes_popular_items() -> None:
    train, _, _, _ = planted(seed=2)
    rec = make_recommender("cel", USERS, ITEMS, "mf", DIM, "item", K + 1, device="cpu")
    config = TrainConfig(epochs=4, batch_size=256, lr=0.01, reg=0.01, split_every=5,
                         reassign_every=10, reassign_epochs=3, prior_max_count=5,
                         prior_exclusive=True, keep_prob=0.0, seed=0)
    OfflineCEL(rec, config).fit(train)
    table = rec.item_table
    counts = torch.bincount(train.items, minlength=ITEMS)
    in_prior = table.assignment.long() == 0
    assert in_prior.any() and torch.all(counts[in_prior] <= 5)
