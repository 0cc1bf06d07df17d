"""Bounded loss-based reassignment of the streaming deep learners."""

import torch

from cel.tables import ClusteredEmbedding
from trainer.reassign import reassign_among


def table_with(rows: list[list[float]], assignment: list[int]) -> ClusteredEmbedding:
    table = ClusteredEmbedding(len(assignment), len(rows[0]), max_clusters=8)
    with torch.no_grad():
        table.weight[: len(rows)] = torch.tensor(rows)
    table.num_active = len(rows)
    table.assign(torch.tensor(assignment))
    return table


def test_entities_move_to_the_cluster_that_fits_their_samples_and_counts_stay_right():
    table = table_with([[0.0], [1.0], [-1.0]], [0, 0, 0, 1, 2])
    ids = torch.tensor([0, 0, 1, 2, 3])
    targets = torch.tensor([[1.0], [1.0], [-1.0], [0.0], [1.0]])  # id 0 -> row 1, id 1 -> 2

    def losses() -> torch.Tensor:
        return (table(ids) - targets).square().sum(dim=1)

    moved = reassign_among(table, ids, losses, candidates=32,
                           generator=torch.Generator().manual_seed(0), keep_prob=0.0)
    assert sorted(moved.tolist()) == [0, 1]
    assert table.assignment[:4].tolist() == [1, 2, 0, 1]  # id 2 keeps row 0 non-empty
    assert table.counts.tolist() == torch.bincount(table.assignment.long(),
                                                   minlength=8).tolist()


def test_a_cluster_is_never_emptied_and_untouched_entities_never_move():
    table = table_with([[0.0], [1.0]], [0, 1, 1, 1])
    ids = torch.tensor([0])  # the only member of row 0 would rather be in row 1

    def losses() -> torch.Tensor:
        return (table(ids) - 1.0).square().sum(dim=1)

    moved = reassign_among(table, ids, losses, candidates=8,
                           generator=torch.Generator().manual_seed(0), keep_prob=0.0)
    assert len(moved) == 0 and table.assignment.tolist() == [0, 1, 1, 1]
