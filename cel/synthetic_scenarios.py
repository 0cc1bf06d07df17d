"""Seeded multi-scenario CTR data: scenarios that share most structure, differ in planted ways.

Users and items fall into planted groups; a shared group-affinity matrix ``A`` drives clicks
in every scenario. Scenario ``k`` adds its own planted deviation: the affinity of a fraction
of (user group, item group) cells is replaced by a fresh value, plus a scenario click bias.
The last scenario has ``small_ratio`` times the samples of the others (the starved one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ScenarioSplit:
    users: torch.Tensor
    items: torch.Tensor
    scenarios: torch.Tensor
    labels: torch.Tensor
    truth: torch.Tensor  # the planted click probability (an AUC ceiling for reports)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, index: torch.Tensor) -> ScenarioSplit:
        return ScenarioSplit(self.users[index], self.items[index], self.scenarios[index],
                             self.labels[index], self.truth[index])


@dataclass
class ScenarioData:
    train: ScenarioSplit
    test: ScenarioSplit
    num_users: int
    num_items: int
    num_scenarios: int
    small: int  # the scenario with fewer samples
    # the planted groups (for measuring cluster recovery only; no model reads them)
    user_group: torch.Tensor | None = None
    item_group: torch.Tensor | None = None


def make_scenario_data(num_users: int = 2000, num_items: int = 1000, scenarios: int = 3,
                       per_scenario: int = 40_000, small_ratio: float = 0.1, groups: int = 8,
                       changed_cells: float = 0.3, strength: float = 2.0,
                       test_fraction: float = 0.2, seed: int = 0) -> ScenarioData:
    gen = torch.Generator().manual_seed(seed)
    user_group = torch.randint(groups, (num_users,), generator=gen)
    item_group = torch.randint(groups, (num_items,), generator=gen)
    shared = torch.randn(groups, groups, generator=gen) * strength
    user_pop = torch.randn(num_users, generator=gen) * 0.3
    item_pop = torch.randn(num_items, generator=gen) * 0.5
    affinity = []
    for _ in range(scenarios):
        changed = torch.rand(groups, groups, generator=gen) < changed_cells
        fresh = torch.randn(groups, groups, generator=gen) * strength
        affinity.append(torch.where(changed, fresh, shared))
    bias = torch.randn(scenarios, generator=gen) * 0.5 - 1.0
    sizes = [per_scenario] * scenarios
    sizes[-1] = max(1, int(per_scenario * small_ratio))
    parts = []
    for k, n in enumerate(sizes):
        u = torch.randint(num_users, (n,), generator=gen)
        i = torch.randint(num_items, (n,), generator=gen)
        logit = (affinity[k][user_group[u], item_group[i]] + user_pop[u] + item_pop[i]
                 + bias[k])
        prob = torch.sigmoid(logit)
        labels = (torch.rand(n, generator=gen) < prob).float()
        parts.append(ScenarioSplit(u, i, torch.full((n,), k), labels, prob))
    data = ScenarioSplit(*(torch.cat([getattr(p, f) for p in parts])
                           for f in ("users", "items", "scenarios", "labels", "truth")))
    perm = torch.randperm(len(data), generator=gen)
    cut = int(len(data) * (1 - test_fraction))
    return ScenarioData(data.subset(perm[:cut]), data.subset(perm[cut:]), num_users,
                        num_items, scenarios, scenarios - 1, user_group, item_group)
