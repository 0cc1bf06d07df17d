"""Evaluation metrics: RMSE/MSE, AUC, log loss, adjusted Rand index, cold buckets."""

from __future__ import annotations

import math

import torch

BUCKETS = (("0", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20), (">20", 21, None))


def mse(pred: torch.Tensor, labels: torch.Tensor) -> float | None:
    return float((pred - labels).pow(2).mean()) if len(labels) else None


def rmse(pred: torch.Tensor, labels: torch.Tensor) -> float | None:
    value = mse(pred, labels)
    return None if value is None else math.sqrt(value)


def auc(pred: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve via the rank-sum formula, ties get average ranks."""
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    sorted_pred, order = pred.double().sort()
    ranks = torch.empty_like(sorted_pred)
    ranks[order] = torch.arange(1, len(pred) + 1, dtype=torch.float64, device=pred.device)
    _, inverse, counts = torch.unique(sorted_pred, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1  # rank of the first element of each tie group
    average = (first + (counts - 1) / 2.0).double()
    ranks[order] = average[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(prob: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> float | None:
    if not len(labels):
        return None
    return float(logloss_per_example(prob, labels, eps).mean())


def logloss_per_example(prob: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7
                        ) -> torch.Tensor:
    p, y = prob.double().clamp(eps, 1 - eps), labels.double()
    return -(y * p.log() + (1 - y) * (1 - p).log())


def proven_lead(total, total_sq, z: float):
    """Whether a summed paired gain ``total`` (with ``total_sq`` the sum of its squared
    per-example parts) is positive by more than ``z`` standard errors: ``total > z *
    sqrt(total_sq)``. Elementwise for arrays. With gains of +1/-1 per disagreement it is
    the sign test of McNemar."""
    return (total > 0) & (total * total > z * z * total_sq)


def adjusted_rand_index(a: torch.Tensor, b: torch.Tensor) -> float:
    """ARI of two labelings of the same elements (Hubert and Arabie, 1985)."""
    _, a = torch.unique(a, return_inverse=True)
    _, b = torch.unique(b, return_inverse=True)
    table = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    table.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)

    def pairs(x: torch.Tensor) -> float:
        return float((x * (x - 1) / 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    total = len(a) * (len(a) - 1) / 2
    expected = rows * cols / total if total else 0.0
    maximum = (rows + cols) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def bucket_of(count: int) -> str:
    for name, low, high in BUCKETS:
        if count >= low and (high is None or count <= high):
            return name
    raise ValueError(count)


def summarise(pred: torch.Tensor, labels: torch.Tensor, task: str) -> dict[str, float | None]:
    """The metrics that apply to the task; the others are None."""
    if task == "binary":
        return {"rmse": None, "mse": None, "auc": auc(pred, labels),
                "logloss": logloss(pred, labels)}
    return {"rmse": rmse(pred, labels), "mse": mse(pred, labels), "auc": None, "logloss": None}


def bucketed(pred: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, task: str
             ) -> dict[str, dict[str, float | int | None]]:
    """Metrics per cold bucket of ``counts`` (training interactions of the event's entity)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name, low, high in BUCKETS:
        mask = counts >= low
        if high is not None:
            mask &= counts <= high
        out[name] = {"n": int(mask.sum()), **summarise(pred[mask], labels[mask], task)}
    return out
