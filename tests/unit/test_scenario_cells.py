"""Scenario cells (cel.scenario_cells) and the offline holdout they are checked on."""

from __future__ import annotations

import torch

from cel.metrics import adjusted_rand_index
from cel.scenario_cells import coarse_groups, fit_cells
from cli.evaluation.multiscenario import MSSpec, holdout_mask


def test_coarse_groups_find_separated_groups_and_are_seeded() -> None:
    gen = torch.Generator().manual_seed(0)
    truth = torch.arange(300) % 4
    centres = torch.randn(4, 8, generator=gen) * 3
    rows = centres[truth] + 0.3 * torch.randn(300, 8, generator=gen)
    groups = coarse_groups(rows, 4, seed=0)
    assert adjusted_rand_index(groups, truth) == 1.0
    assert torch.equal(groups, coarse_groups(rows, 4, seed=0))
    assert coarse_groups(rows[:3], 8).max() < 3  # never more groups than rows


def _cell_data(n: int, shift: float, gen: torch.Generator):
    """Two user and two item groups; only cell (1, 1) has a deviation of ``shift`` from an
    offset that is otherwise right."""
    user_group, item_group = torch.arange(40) % 2, torch.arange(30) % 2
    users, items = torch.randint(40, (n,), generator=gen), torch.randint(30, (n,), generator=gen)
    offset = torch.randn(n, generator=gen) * 0.5
    logit = offset + shift * ((user_group[users] == 1) & (item_group[items] == 1)).float()
    labels = (torch.rand(n, generator=gen) < torch.sigmoid(logit)).float()
    return offset, users, items, labels, user_group, item_group


def test_fit_cells_learns_the_shifted_cell_and_shrinks_with_the_ridge() -> None:
    gen = torch.Generator().manual_seed(1)
    offset, users, items, labels, ug, ig = _cell_data(8000, 1.5, gen)
    cells = fit_cells(offset, users, items, labels, ug, ig, ridge=1e-5)
    w = cells.weights
    assert w[1, 1] > 1.0  # the planted shift, about 1.5
    assert w[0, 0].abs() < 0.3 and w[0, 1].abs() < 0.3 and w[1, 0].abs() < 0.3
    # the deviation is applied per (user group, item group)
    assert torch.allclose(cells(users, items), w[ug[users], ig[items]])
    heavy = fit_cells(offset, users, items, labels, ug, ig, ridge=10.0)
    assert heavy.weights.abs().max() < 0.05  # a strong ridge keeps the cells near zero
    assert cells.memory_bytes() == 4 * 4 + 40 + 30


def test_fit_cells_leaves_a_right_offset_alone() -> None:
    gen = torch.Generator().manual_seed(2)
    offset, users, items, labels, ug, ig = _cell_data(8000, 0.0, gen)
    cells = fit_cells(offset, users, items, labels, ug, ig, ridge=1e-3)
    assert cells.weights.abs().max() < 0.15


def test_holdout_gives_a_small_scenario_enough_events() -> None:
    scenarios = torch.cat([torch.zeros(20_000, dtype=torch.long),
                           torch.ones(1_500, dtype=torch.long),
                           torch.full((600,), 2, dtype=torch.long)])
    held = holdout_mask(scenarios, MSSpec(valid_fraction=0.1, min_holdout_events=500))
    shares = [float(held[scenarios == k].float().mean()) for k in range(3)]
    assert abs(shares[0] - 0.1) < 0.01  # a large scenario: the usual tenth
    assert abs(shares[1] - 1 / 3) < 0.05  # 500 of 1,500
    assert abs(shares[2] - 0.5) < 0.06  # never more than half
    assert torch.equal(held, holdout_mask(scenarios, MSSpec(valid_fraction=0.1)))
