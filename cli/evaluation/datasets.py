"""Loaders for the evaluation formats: MovieLens, generic CSV, Taobao UserBehavior.

A loader returns raw columns; ``encode`` maps raw ids to dense ids shared by train and test,
so an entity seen only in the test set is a cold entity (zero training interactions).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cel.interactions import Interactions

FORMATS = ("movielens", "csv", "userbehavior")


class DatasetError(ValueError):
    """The file is missing or not in the announced format."""


@dataclass
class RawData:
    users: list[str]
    items: list[str]
    values: np.ndarray  # float64
    times: np.ndarray  # int64; file order when the format has no time
    scenarios: list[str] | None = None
    implicit: bool = False  # every row is a positive event; negatives get sampled

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> RawData:
        pick = index.tolist()
        return RawData([self.users[k] for k in pick], [self.items[k] for k in pick],
                       self.values[index], self.times[index],
                       None if self.scenarios is None else [self.scenarios[k] for k in pick],
                       self.implicit)


def _open_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"no such dataset file: {path}")
    with path.open(encoding="latin-1") as handle:
        return [line for line in handle.read().splitlines() if line.strip()]


def load_movielens(path: Path) -> RawData:
    """``u.data`` (tab-separated) or ``ratings.dat`` (``::``): user item rating time."""
    lines = _open_lines(path)
    sep = "::" if lines and "::" in lines[0] else "\t"
    users, items, values, times = [], [], [], []
    for n, line in enumerate(lines, 1):
        parts = line.split(sep)
        if len(parts) < 3:
            raise DatasetError(f"{path}:{n}: expected user{sep}item{sep}rating[{sep}time]")
        users.append(parts[0].strip())
        items.append(parts[1].strip())
        values.append(float(parts[2]))
        times.append(int(parts[3]) if len(parts) > 3 else n)
    return RawData(users, items, np.asarray(values), np.asarray(times, dtype=np.int64))


def load_csv(path: Path) -> RawData:
    """Header ``user,item,value[,timestamp][,scenario]``."""
    if not path.is_file():
        raise DatasetError(f"no such dataset file: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"user", "item", "value"} <= set(rows[0]):
        raise DatasetError(f"{path}: a CSV needs a header with user,item,value")
    has_time, has_scenario = "timestamp" in rows[0], "scenario" in rows[0]
    try:
        values = np.asarray([float(r["value"]) for r in rows])
        times = np.asarray([int(float(r["timestamp"])) if has_time else n
                            for n, r in enumerate(rows)], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: bad number: {exc}") from exc
    return RawData([r["user"] for r in rows], [r["item"] for r in rows], values, times,
                   [r["scenario"] for r in rows] if has_scenario else None)


def load_userbehavior(path: Path) -> RawData:
    """``user,item,category,behavior,unix_time``: implicit positives (pv/buy/cart/fav).

    A truncated last line (the shared prefixes end mid-line) is dropped.
    """
    users, items, times = [], [], []
    for n, line in enumerate(_open_lines(path), 1):
        parts = line.split(",")
        if len(parts) != 5 or not parts[4].strip().isdigit():
            if n == 1:
                raise DatasetError(f"{path}:1: expected user,item,category,behavior,time")
            continue
        users.append(parts[0])
        items.append(parts[1])
        times.append(int(parts[4]))
    return RawData(users, items, np.ones(len(users)), np.asarray(times, dtype=np.int64),
                   implicit=True)


def load(path: str | Path, fmt: str) -> RawData:
    loaders = {"movielens": load_movielens, "csv": load_csv, "userbehavior": load_userbehavior}
    if fmt not in loaders:
        raise DatasetError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return loaders[fmt](Path(path))


@dataclass
class Vocabulary:
    """Raw id -> dense id, for users, items and scenarios."""

    users: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    scenarios: dict[str, int] = field(default_factory=dict)

    def fit(self, *parts: RawData) -> Vocabulary:
        for part in parts:
            for u in part.users:
                self.users.setdefault(u, len(self.users))
            for i in part.items:
                self.items.setdefault(i, len(self.items))
            for s in part.scenarios or ():
                self.scenarios.setdefault(s, len(self.scenarios))
        return self


def encode(raw: RawData, vocab: Vocabulary) -> Interactions:
    users = torch.tensor([vocab.users[u] for u in raw.users], dtype=torch.long)
    items = torch.tensor([vocab.items[i] for i in raw.items], dtype=torch.long)
    context = None
    if raw.scenarios is not None:
        context = torch.tensor([[vocab.scenarios[s]] for s in raw.scenarios], dtype=torch.long)
    return Interactions(users, items, torch.tensor(raw.values, dtype=torch.float32), context)


def is_binary(raw: RawData) -> bool:
    return raw.implicit or bool(np.isin(raw.values, (0.0, 1.0)).all())


def with_negatives(data: Interactions, num_items: int, per_positive: int,
                   generator: torch.Generator) -> Interactions:
    """Each positive followed by ``per_positive`` events on uniformly drawn items, label 0.

    Interleaved, so time order (for the stream protocol) is kept.
    """
    k = per_positive + 1
    users = data.users.repeat_interleave(k)
    items = data.items.repeat_interleave(k)
    labels = torch.zeros(len(data) * k)
    labels[::k] = 1.0
    negative = torch.ones(len(users), dtype=torch.bool)
    negative[::k] = False
    items[negative] = torch.randint(num_items, (int(negative.sum()),), generator=generator)
    context = None if data.context is None else data.context.repeat_interleave(k, dim=0)
    return Interactions(users, items, labels, context)
