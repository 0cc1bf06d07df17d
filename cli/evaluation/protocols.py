"""Evaluation protocols: random split, predefined folds, time-ordered stream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cel.interactions import Interactions
from cli.evaluation.datasets import (
    RawData,
    Vocabulary,
    encode,
    is_binary,
    load,
    with_negatives,
)

PROTOCOLS = ("random", "folds", "stream")


@dataclass
class Prepared:
    """Dense-id data for one run. ``stream`` holds all events in time order instead."""

    train: Interactions
    test: Interactions
    num_users: int
    num_items: int
    task: str  # "rating" or "binary"
    context_cardinalities: tuple[int, ...]
    label_mean: float


def random_split(n: int, seed: int, test_fraction: float = 0.2
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the random protocol's training and test parts (in file order's terms)."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1 - test_fraction)))
    return perm[:cut], perm[cut:]


def prepare(data: str | None, fmt: str, protocol: str, seed: int = 0,
            train_path: str | None = None, test_path: str | None = None,
            negatives: int = 1, test_fraction: float = 0.2) -> Prepared:
    """Load, split and encode. For ``stream`` the events are in ``test`` (train is empty)."""
    generator = torch.Generator().manual_seed(seed)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if train_path or test_path:
        if not (train_path and test_path):
            raise ValueError("--train and --test go together")
        train_raw, test_raw = load(train_path, fmt), load(test_path, fmt)
        if protocol == "stream":  # the two files as one stream
            raw = _concat(train_raw, test_raw)
            train_raw, test_raw = raw.take(np.arange(0)), raw
    elif data is None:
        raise ValueError("give --data, or --train and --test")
    else:
        raw = load(data, fmt)
        if protocol == "stream":
            train_raw, test_raw = raw.take(np.arange(0)), raw
        else:
            train_rows, test_rows = random_split(len(raw), seed, test_fraction)
            train_raw, test_raw = raw.take(train_rows), raw.take(test_rows)
    if protocol == "stream":
        test_raw = test_raw.take(np.argsort(test_raw.times, kind="stable"))
    vocab = Vocabulary().fit(train_raw, test_raw)
    train, test = encode(train_raw, vocab), encode(test_raw, vocab)
    binary = is_binary(test_raw) and (len(train_raw) == 0 or is_binary(train_raw))
    if test_raw.implicit:
        train = with_negatives(train, len(vocab.items), negatives, generator)
        test = with_negatives(test, len(vocab.items), negatives, generator)
    cards = (len(vocab.scenarios),) if vocab.scenarios else ()
    if not cards:
        train.context = test.context = None
    reference = train if len(train) else test
    return Prepared(train, test, len(vocab.users), len(vocab.items),
                    "binary" if binary else "rating", cards, float(reference.labels.mean()))


def _concat(a: RawData, b: RawData) -> RawData:
    scen = None if a.scenarios is None or b.scenarios is None else a.scenarios + b.scenarios
    return RawData(a.users + b.users, a.items + b.items, np.concatenate([a.values, b.values]),
                   np.concatenate([a.times, b.times]), scen, a.implicit)
