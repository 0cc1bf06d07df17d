"""A tiny random rating set shared by the eval tests (20 users, 30 items, ratings 1-5)."""

from __future__ import annotations

import torch

from cel.interactions import Interactions
from cli.evaluation.protocols import Prepared


def random_prepared(seed: int = 0, train: int = 400, test: int = 100) -> Prepared:
    gen = torch.Generator().manual_seed(seed)

    def data(n: int) -> Interactions:
        return Interactions(torch.randint(0, 20, (n,), generator=gen),
                            torch.randint(0, 30, (n,), generator=gen),
                            torch.randint(1, 6, (n,), generator=gen).float())
    return Prepared(data(train), data(test), 20, 30, "rating", (), 3.0)
