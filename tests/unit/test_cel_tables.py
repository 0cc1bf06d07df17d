"""Clustered tables: lookup, per-cluster gradient averaging, splits, memory, baselines."""

from __future__ import annotations

import torch

from cel.baselines import DoubleHashEmbedding, HashEmbedding
from cel.tables import ClusteredEmbedding, FullEmbedding


def test_gradient_of_a_cluster_row_is_divided_by_its_member_count() -> None:
    table = ClusteredEmbedding(num_entities=5, dim=3, max_clusters=4)
    table.assign(torch.tensor([0, 0, 0, 1, 1]))
    table(torch.arange(5)).sum().backward()
    # cluster 0: 3 members each contribute ones -> sum 3, averaged -> 1; cluster 1: 2/2 -> 1
    assert torch.allclose(table.weight.grad[:2], torch.ones(2, 3))
    assert torch.all(table.weight.grad[2:] == 0)


def test_without_averaging_the_gradient_is_the_member_sum() -> None:
    table = ClusteredEmbedding(5, 3, 4, average_gradients=False)
    table.assign(torch.tensor([0, 0, 0, 1, 1]))
    table(torch.arange(5)).sum().backward()
    assert torch.allclose(table.weight.grad[0], torch.full((3,), 3.0))


def test_lookup_returns_the_cluster_row() -> None:
    table = ClusteredEmbedding(6, 4, 3)
    assert torch.equal(table(torch.tensor([2, 5])), table.weight[[0, 0]])
    table.num_active = 2
    table.assign(torch.tensor([0, 1, 0, 0, 1, 0]))
    assert table.counts[:2].tolist() == [4, 2]
    assert torch.equal(table(torch.tensor([1, 0])), table.weight[[1, 0]])


def test_personal_offsets_start_at_the_cluster_row_and_are_penalised() -> None:
    table = ClusteredEmbedding(4, 2, 2)
    before = table(torch.arange(4)).detach().clone()
    table.enable_personal()
    assert torch.equal(table(torch.arange(4)), before)
    with torch.no_grad():
        table.personal[1] = torch.tensor([3.0, 4.0])
    assert float(table.personal_penalty(torch.tensor([1])).detach()) == 25.0


def test_memory_counts_tables_and_assignment_array() -> None:
    table = ClusteredEmbedding(1000, 65, 50)
    assert table.memory_bytes() == 50 * 65 * 4 + 1000 * 1  # uint8 assignment for M <= 256
    assert ClusteredEmbedding(10, 8, 1000).assignment.element_size() == 2
    assert FullEmbedding(1000, 65).memory_bytes() == 1000 * 65 * 4
    assert HashEmbedding(1000, 8, 10).memory_bytes() == 10 * 8 * 4
    assert DoubleHashEmbedding(1000, 8, 10).memory_bytes() == 10 * 8 * 4


def test_double_hashing_separates_what_modulo_hashing_merges() -> None:
    ids = torch.arange(200)
    modulo = HashEmbedding(200, 4, 20)(ids)
    double = DoubleHashEmbedding(200, 4, 20)(ids)
    assert len(torch.unique(modulo, dim=0)) == 20
    assert len(torch.unique(double, dim=0)) > 60


def test_own_entity_bias_is_off_by_default_and_changes_only_the_bias_column() -> None:
    plain = ClusteredEmbedding(4, 3, 2)
    assert plain.bias is None and plain.offset(torch.arange(4)) is None
    table = ClusteredEmbedding(4, 3, 2, entity_bias=True)
    with torch.no_grad():
        table.bias.copy_(torch.tensor([0.0, 2.0, -1.0, 0.5]))
    rows = table(torch.arange(4))  # all four share cluster 0
    assert torch.equal(rows[:, :-1], table.weight[0, :-1].expand(4, -1))
    assert torch.allclose(rows[:, -1] - table.weight[0, -1], table.bias)


def test_own_bias_gradient_is_per_entity_and_not_averaged() -> None:
    table = ClusteredEmbedding(5, 3, 2, entity_bias=True)
    table(torch.tensor([0, 0, 3]))[:, -1].sum().backward()
    assert table.bias.grad.tolist() == [2.0, 0.0, 0.0, 1.0, 0.0]
    assert abs(float(table.weight.grad[0, -1]) - 3.0 / 5) < 1e-6  # the row is still averaged


def test_memory_counts_the_own_biases_but_the_table_does_not() -> None:
    table = ClusteredEmbedding(1000, 65, 50, entity_bias=True)
    assert table.memory_bytes() == 50 * 65 * 4 + 1000 * 1 + 1000 * 4
    assert table.table_bytes() == 50 * 65 * 4


def test_own_scale_multiplies_the_factors_but_not_the_bias_column() -> None:
    assert ClusteredEmbedding(4, 3, 2).scale is None
    table = ClusteredEmbedding(3, 4, 2, entity_scale=True)
    assert torch.equal(table(torch.arange(3)), table.weight[[0, 0, 0]])  # starts at 1
    with torch.no_grad():
        table.scale.copy_(torch.tensor([1.0, 2.0, -0.5]))
    rows = table(torch.arange(3))
    assert torch.allclose(rows[:, :-1], table.scale.unsqueeze(1) * table.weight[0, :-1])
    assert torch.equal(rows[:, -1], table.weight[0, -1].expand(3))
    both = ClusteredEmbedding(1000, 65, 50, entity_bias=True, entity_scale=True)
    assert both.memory_bytes() == 50 * 65 * 4 + 1000 * (1 + 4 + 4)
