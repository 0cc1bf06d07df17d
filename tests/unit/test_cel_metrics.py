"""Metrics against brute force and known values."""

from __future__ import annotations

import itertools
import math

import torch

from cel.metrics import adjusted_rand_index, auc, bucket_of, bucketed, logloss, rmse


def test_auc_matches_pairwise_count_with_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (60,), generator=gen).float()
    labels = (torch.rand(60, generator=gen) > 0.5).float()
    pos, neg = pred[labels == 1], pred[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(pos.tolist(), neg.tolist()))
    assert math.isclose(auc(pred, labels), wins / (len(pos) * len(neg)), rel_tol=1e-9)
    assert auc(pred, torch.ones(60)) is None


def test_rmse_and_logloss() -> None:
    assert math.isclose(rmse(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])), 1.0)
    value = logloss(torch.tensor([0.8, 0.2]), torch.tensor([1.0, 0.0]))
    assert math.isclose(value, -math.log(0.8), rel_tol=1e-6)


def test_adjusted_rand_index_known_values() -> None:
    a = torch.tensor([0, 0, 0, 1, 1, 1])
    assert adjusted_rand_index(a, torch.tensor([5, 5, 5, 2, 2, 2])) == 1.0
    assert math.isclose(adjusted_rand_index(a, torch.tensor([0, 0, 1, 1, 2, 2])),
                        0.24242424, rel_tol=1e-6)
    assert math.isclose(adjusted_rand_index(torch.tensor([0, 0, 1, 1]),
                                            torch.tensor([0, 0, 1, 2])), 0.571428, rel_tol=1e-5)


def test_buckets() -> None:
    assert [bucket_of(c) for c in (0, 1, 5, 6, 20, 21)] == ["0", "1-5", "1-5", "6-20",
                                                           "6-20", ">20"]
    out = bucketed(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0]),
                   torch.tensor([0, 3, 30]), "rating")
    assert out["0"]["n"] == 1 and out["0"]["rmse"] == 0.0
    assert out["1-5"]["rmse"] == 1.0 and out["6-20"]["n"] == 0 and out["6-20"]["rmse"] is None
