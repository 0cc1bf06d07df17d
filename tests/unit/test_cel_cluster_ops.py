"""GPCA split, loss-based reassignment (never worse, never empty), cold placement."""

from __future__ import annotations

import torch

from cel import cluster_ops
from cel.gpca import gpca_split
from cel.interactions import Interactions
from cel.models import MF
from cel.recommender import Recommender
from cel.tables import ClusteredEmbedding, FullEmbedding


def _rec(num_users: int, num_items: int, clusters: int, dim: int = 4) -> Recommender:
    torch.manual_seed(0)
    model = MF(dim)
    return Recommender(FullEmbedding(num_users, dim + 1),
                       ClusteredEmbedding(num_items, dim + 1, clusters), model)


def test_gpca_separates_two_groups_whose_gradients_disagree() -> None:
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(8, generator=gen)
    group_a = direction + 0.1 * torch.randn(10, 8, generator=gen)
    group_b = -direction + 0.1 * torch.randn(12, 8, generator=gen)
    moved = gpca_split(torch.cat([group_a, group_b]))
    assert moved[:10].all() != moved[10:].any()  # one whole group moves, the other stays
    assert int(moved.sum()) in (10, 12)


def test_gpca_does_not_split_agreeing_members() -> None:
    assert not gpca_split(torch.ones(5, 3)).any()
    assert not gpca_split(torch.randn(1, 3)).any()


def test_split_on_model_gradients_separates_planted_item_groups() -> None:
    rec = _rec(num_users=20, num_items=10, clusters=2)
    users = torch.arange(20).repeat_interleave(10)
    items = torch.arange(10).repeat(20)
    likes_first = (users < 10) == (items < 5)  # two item groups liked by opposite users
    data = Interactions(users, items, torch.where(likes_first, 5.0, 1.0))
    out = cluster_ops.split(rec, "item", data)
    assert out["split"] == 1
    clusters = rec.item_table.assignment.long()
    assert len(set(clusters[:5].tolist())) == 1 and len(set(clusters[5:].tolist())) == 1
    assert clusters[0] != clusters[5]


def _entity_loss(rec: Recommender, data: Interactions) -> torch.Tensor:
    with torch.no_grad():
        loss = rec.loss(rec.score(data), data.labels)
    return torch.zeros(rec.item_table.num_entities).index_add_(0, data.items, loss)


def test_reassignment_never_increases_an_entitys_loss_and_never_empties_a_cluster() -> None:
    rec = _rec(num_users=30, num_items=40, clusters=6)
    table = rec.item_table
    table.num_active = 6
    table.assign(torch.arange(40) % 6)
    gen = torch.Generator().manual_seed(0)
    data = Interactions(torch.randint(30, (600,), generator=gen),
                        torch.randint(40, (600,), generator=gen),
                        torch.randint(1, 6, (600,), generator=gen).float())
    before = _entity_loss(rec, data)
    out = cluster_ops.reassign(rec, "item", data, keep_prob=0.0)
    after = _entity_loss(rec, data)
    assert out["moved"] > 0
    assert torch.all(after <= before + 1e-5)
    assert torch.all(table.counts[:6] > 0)


def test_a_cluster_everyone_leaves_keeps_its_members() -> None:
    rec = _rec(num_users=5, num_items=6, clusters=2)
    table = rec.item_table
    table.num_active = 2
    table.assign(torch.tensor([0, 0, 0, 1, 1, 1]))
    with torch.no_grad():  # cluster 1 predicts far off: all its members prefer cluster 0
        table.weight[0].zero_()
        table.weight[1].fill_(3.0)
        rec.model.global_bias.fill_(3.0)
    users = torch.arange(5).repeat(6)
    data = Interactions(users, torch.arange(6).repeat_interleave(5), torch.full((30,), 3.0))
    cluster_ops.reassign(rec, "item", data, keep_prob=0.0)
    assert table.counts[:2].tolist()[1] >= 1 and int(table.counts.sum()) == 6


def test_entities_without_data_go_to_the_largest_cluster_not_cluster_zero() -> None:
    rec = _rec(num_users=3, num_items=8, clusters=3)
    table = rec.item_table
    table.num_active = 3
    table.assign(torch.tensor([0, 1, 1, 1, 2, 0, 0, 0]))  # items 5..7 have no data
    has_data = torch.tensor([True] * 5 + [False] * 3)
    cluster_ops.place_cold(rec, "item", has_data, "largest")
    assert table.assignment[5:].tolist() == [1, 1, 1]
    assert table.counts[0] == 1  # item 0 still holds cluster 0


def test_reassignment_leaves_entities_without_data_alone() -> None:
    rec = _rec(num_users=4, num_items=6, clusters=3)
    table = rec.item_table
    table.num_active = 3
    table.assign(torch.tensor([0, 1, 2, 0, 1, 2]))
    data = Interactions(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]),
                        torch.tensor([5.0, 1.0, 3.0]))
    cluster_ops.reassign(rec, "item", data, keep_prob=0.0)
    assert table.assignment[3:].tolist() == [0, 1, 2]


def _two_cluster_case(ratings_per_item: int) -> tuple[Recommender, Interactions]:
    """Items sit in cluster 1, which predicts 1.0; cluster 0 predicts their rating 3.0."""
    rec = _rec(num_users=4, num_items=3, clusters=3)
    table = rec.item_table
    table.num_active = 3
    table.assign(torch.tensor([1, 1, 2]))
    with torch.no_grad():
        table.weight.zero_()
        rec.user_table.weight.zero_()
        table.weight[0, -1], table.weight[1, -1] = 3.0, 1.0
    users = torch.arange(ratings_per_item) % 4
    data = Interactions(users, torch.zeros(ratings_per_item, dtype=torch.long),
                        torch.full((ratings_per_item,), 3.0))
    return rec, data


def test_entities_with_too_few_interactions_are_not_reassigned() -> None:
    rec, data = _two_cluster_case(ratings_per_item=3)
    cluster_ops.reassign(rec, "item", data, keep_prob=0.0, min_count=4)
    assert int(rec.item_table.assignment[0]) == 1
    cluster_ops.reassign(rec, "item", data, keep_prob=0.0, min_count=3)
    assert int(rec.item_table.assignment[0]) == 0


def test_prior_policy_and_excluded_cluster_is_never_split() -> None:
    rec = _rec(num_users=3, num_items=6, clusters=4)
    table = rec.item_table
    table.num_active = 2
    table.assign(torch.tensor([0, 0, 0, 0, 1, 1]))
    has_data = torch.tensor([True, True, True, True, True, False])
    cluster_ops.place_cold(rec, "item", has_data, "prior", prior=0)
    assert int(table.assignment[5]) == 0
    users = torch.arange(3).repeat(5)
    data = Interactions(users, torch.arange(5).repeat_interleave(3),
                        torch.randint(1, 6, (15,), generator=torch.Generator().manual_seed(0))
                        .float())
    assert cluster_ops.choose_cluster(rec, "item", data, exclude=0) == 1
    out = cluster_ops.split(rec, "item", data, exclude=0)
    assert out["parent"] in (-1, 1)


def test_closed_prior_row_admits_only_rare_entities() -> None:
    # cluster 0 fits item 0's ratings exactly, but with 3 ratings it is not rare enough
    rec, data = _two_cluster_case(ratings_per_item=3)
    cluster_ops.reassign(rec, "item", data, keep_prob=0.0, closed_row=0, closed_max_count=2)
    assert int(rec.item_table.assignment[0]) == 1
    cluster_ops.reassign(rec, "item", data, keep_prob=0.0, closed_row=0, closed_max_count=3)
    assert int(rec.item_table.assignment[0]) == 0


def test_reassignment_scores_each_cluster_with_the_entitys_own_bias_and_scale() -> None:
    torch.manual_seed(0)
    rec = Recommender(FullEmbedding(6, 5), ClusteredEmbedding(
        3, 5, 2, entity_bias=True, entity_scale=True), MF(4))
    table = rec.item_table
    table.num_active = 2
    table.assign(torch.tensor([0, 1, 1]))
    with torch.no_grad():
        table.bias.copy_(torch.tensor([1.5, -2.0, 0.7]))
        table.scale.copy_(torch.tensor([3.0, -1.0, 0.2]))
    data = Interactions(torch.arange(6), torch.tensor([0, 1, 2, 0, 1, 2]), torch.rand(6) * 4)
    entities, losses = cluster_ops.cluster_losses(rec, "item", data)
    current = losses.gather(1, table.assignment[entities].long().unsqueeze(1)).squeeze(1)
    assert torch.allclose(current, _entity_loss(rec, data)[entities])  # what training sees
