"""CEL's one core of cluster operations: split, loss and vote moves, never-empty moves."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from cel.clusters import (
    loss_moves,
    move,
    optimizer_rows,
    reassign_by_trial,
    split_cluster,
    vote_moves,
)
from cel.tables import ClusteredEmbedding


def table_with(rows: list[list[float]], assignment: list[int], budget: int = 8
               ) -> ClusteredEmbedding:
    table = ClusteredEmbedding(len(assignment), len(rows[0]), max_clusters=budget)
    with torch.no_grad():
        table.weight[: len(rows)] = torch.tensor(rows)
    table.num_active = len(rows)
    table.assign(torch.tensor(assignment))
    return table


def exact_counts(table: ClusteredEmbedding) -> list[int]:
    return torch.bincount(table.assignment.long(), minlength=table.max_clusters).tolist()


def test_a_split_moves_the_members_on_one_side_of_the_gradients_to_a_copy_of_the_parent():
    table = table_with([[1.0, 2.0]], [0, 0, 0, 0, 0])
    moments = torch.arange(16.0).reshape(8, 2)
    grads = torch.tensor([[1.0, 0.0], [1.1, 0.0], [-1.0, 0.0], [-0.9, 0.0]])
    done = split_cluster(table, 0, torch.tensor([0, 1, 2, 3]), grads, [moments])
    assert done is not None and (done.parent, done.child) == (0, 1)
    moved = sorted(done.moved.tolist())
    assert moved in ([0, 1], [2, 3])  # one sign of the principal component, whole
    assert table.num_active == 2 and torch.equal(table.weight[1], table.weight[0])
    assert torch.equal(moments[1], moments[0])  # per-row state travels with the row
    assert table.assignment[moved].tolist() == [1, 1]
    assert table.counts.tolist() == exact_counts(table)


def test_no_split_when_the_gradients_agree_the_budget_is_spent_or_members_left():
    table = table_with([[0.0]], [0, 0, 0], budget=2)
    same = torch.ones(3, 1)
    assert split_cluster(table, 0, torch.arange(3), same) is None
    spread = torch.tensor([[1.0], [-1.0], [2.0]])
    table.assign(torch.tensor([0, 1, 1]))  # members 1 and 2 left cluster 0 since
    table.num_active = 2
    assert split_cluster(table, 0, torch.arange(3), spread) is None  # budget spent
    table = table_with([[0.0], [1.0]], [0, 1, 1], budget=4)
    assert split_cluster(table, 0, torch.arange(3), spread) is None  # one member left in 0
    assert table.num_active == 2


def test_a_move_never_empties_a_live_cluster_and_the_least_regret_leaver_stays():
    table = table_with([[0.0], [1.0], [2.0]], [0, 0, 1, 2, 2])
    ids = torch.tensor([0, 1, 3])
    moved, dest = move(table, ids, torch.tensor([2, 2, 1]), regret=torch.tensor([5.0, 1.0, 2.0]))
    # cluster 0 would lose both members: id 1 (regret 1) stays; cluster 2 keeps id 4
    assert moved.tolist() == [0, 3] and dest.tolist() == [2, 1]
    assert table.assignment.tolist() == [2, 0, 1, 1, 2]
    assert table.counts.tolist() == exact_counts(table)


def test_a_move_skips_unplaced_entities_and_negative_targets():
    # the online learner's sides: int32 assignments, -1 for an entity not placed yet
    table = SimpleNamespace(weight=torch.zeros(2, 1), max_clusters=2, num_active=2,
                            assignment=torch.tensor([0, 0, 1, -1], dtype=torch.int32),
                            counts=torch.tensor([2, 1]))
    moved, _ = move(table, torch.tensor([0, 3, 1]), torch.tensor([1, 0, -1]))
    assert moved.tolist() == [0] and table.assignment.tolist()[:3] == [1, 0, 1]


def test_loss_moves_take_the_best_candidate_only_when_clearly_better_and_free():
    losses = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [5.0, 4.5, 0.0], [4.0, 0.0, 4.0]])
    current = torch.tensor([0, 1, 0, 0])
    current_loss = torch.tensor([3.0, 1.0, 5.0, 4.0])
    free = torch.tensor([True, True, True, False])
    targets, gain = loss_moves(losses, torch.tensor([0, 1, 2]), current, current_loss, free,
                               needed=torch.tensor([0.5, 0.0, 6.0, 0.0]))
    # 0 moves (gain 2 > 0.5); 1 ties; 2 lacks evidence (gain 5 < 6); 3 is damped
    assert targets.tolist() == [1, 1, 0, 0] and gain.tolist() == [2.0, 0.0, 5.0, 4.0]
    per_entity = torch.tensor([[0, 2, 1], [1, 0, 2], [0, 1, 2], [0, 1, 2]])
    targets, _ = loss_moves(losses, per_entity, current, current_loss, free)
    assert targets.tolist() == [2, 1, 2, 0]


def test_votes_move_to_the_densest_cluster_per_member_when_it_beats_the_own_by_the_ratio():
    counts = torch.tensor([10, 2, 4])
    votes = torch.tensor([[10.0, 2.0, 0.0], [10.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    wanted = vote_moves(votes, counts, torch.tensor([0, 0, 1]), ratio=1.5)
    # density [1, 1, 0]: a tie stays; [1, .5, 0]: own is best; [0, 0, 1]: go to 2
    assert wanted.tolist() == [-1, -1, 2]


def test_trial_reassignment_fits_the_samples_and_keeps_every_cluster_alive():
    table = table_with([[0.0], [1.0], [-1.0]], [0, 0, 0, 1, 2])
    ids = torch.tensor([0, 0, 1, 2, 3])
    targets = torch.tensor([[1.0], [1.0], [-1.0], [0.0], [1.0]])  # id 0 -> row 1, id 1 -> 2

    def losses() -> torch.Tensor:
        return (table(ids) - targets).square().sum(dim=1)

    for candidates in (None, 32):
        table.assign(torch.tensor([0, 0, 0, 1, 2]))
        moved = reassign_by_trial(table, ids, losses, torch.Generator().manual_seed(0),
                                  keep_prob=0.0, candidates=candidates)
        assert sorted(moved.tolist()) == [0, 1]
        assert table.assignment[:4].tolist() == [1, 2, 0, 1]  # id 2 keeps row 0 alive
        assert table.counts.tolist() == exact_counts(table)
    lonely = table_with([[0.0], [1.0]], [0, 1, 1, 1])
    first = torch.tensor([0])  # the only member of row 0 would rather be in row 1
    moved = reassign_by_trial(lonely, first, lambda: (lonely(first) - 1.0).square().sum(1),
                              keep_prob=0.0)
    assert len(moved) == 0 and lonely.assignment.tolist() == [0, 1, 1, 1]


def test_optimizer_rows_are_the_per_row_moments_of_the_weight():
    table = table_with([[0.0, 1.0]], [0, 0])
    opt = torch.optim.Adam(table.parameters())
    table(torch.arange(2)).sum().backward()
    opt.step()
    rows = optimizer_rows(opt, table.weight)
    assert len(rows) == 2 and all(r.shape == table.weight.shape for r in rows)
    assert optimizer_rows(None, table.weight) == []
