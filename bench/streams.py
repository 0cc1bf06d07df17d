"""Time-ordered event streams for the prequential benchmark (bench/prequential.py).

A stream is a list of events ``(user, item, value, timestamp)`` sorted by timestamp (stable sort,
so events with the same timestamp keep their file order), plus a task:

- ``binary``: value is 1 (positive) or 0; methods predict the probability of 1 (AUC, logloss);
- ``rating``: value is the rating; methods predict it (RMSE).

Streams (paths relative to ``--data-root``, by default ``<repo>/../shared/data``):

``ml100k-likes``
    ``movielens-100k/ml-100k/u.data`` (tab separated ``user item rating time``), value 1 when the
    rating is >= 4, else 0. 100,000 events.
``ml100k-ratings``
    The same file, value = the rating (task ``rating``).
``taobao``
    ``taobao-userbehavior/UserBehavior_prefix_84k.csv`` (``user,item,category,behavior,unix_time``,
    no header). The file is a prefix cut mid-line: a last line without a trailing newline is
    dropped, and any malformed row (not 5 fields, non-integer ids or time) is skipped. The data is
    implicit: every event, whatever its behavior (pv, cart, fav, buy), is a positive (value 1).
    Positives are sorted by timestamp (stable), then negatives are sampled in that order.

    **Negative sampler** (identical for every method, since it is part of the stream): right after
    each positive ``(u, i, t)`` comes one negative ``(u, j, 0, t)`` -- same user, same timestamp --
    with ``j`` drawn uniformly from the stream's catalogue (every distinct item of the whole stream,
    known to the sampler, never to the methods, so an item can be a negative before its first
    positive), excluding ``i`` itself and every item ``u`` has had a positive with so far (``i``
    included). If no such item exists, the positive gets no negative. Draws use a numpy Generator
    seeded 0 (``seed`` argument): a uniform index into the catalogue, retried up to 32 times when
    excluded, then an exact draw over the allowed items. Cost: O(1) per draw in the usual case.

    Why this distribution: negatives among the items seen so far made every first sight of an
    item a positive ("fewer earlier events, likelier positive" alone scored AUC 0.84); negatives
    weighted by catalogue popularity give every item as many negatives as positives, so an
    item's own history points against its next label (the counter scored AUC 0.27). Uniform
    negatives keep "users choose popular items" a real signal, as in implicit-feedback
    evaluation.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"

ML100K_PATH = Path("movielens-100k") / "ml-100k" / "u.data"
TAOBAO_PATH = Path("taobao-userbehavior") / "UserBehavior_prefix_84k.csv"
DEMO_EVENTS = 30_000

STREAMS = ("ml100k-likes", "ml100k-ratings", "taobao", "demo", "planted")


class StreamDataMissing(FileNotFoundError):
    """A stream's data file is not there; the message names the path."""


class StreamUnavailable(RuntimeError):
    """A stream cannot be built here (e.g. this celrec's DemoWorkload lacks a setting it needs)."""


@dataclass
class Stream:
    name: str
    task: str  # "binary" or "rating"
    users: list[str]
    items: list[str]
    values: np.ndarray  # float32
    timestamps: np.ndarray  # float64
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def head(self, n: int) -> Stream:
        """The first ``n`` events (the whole stream when ``n`` is larger)."""
        return Stream(self.name, self.task, self.users[:n], self.items[:n], self.values[:n],
                      self.timestamps[:n], dict(self.meta, limit=n))


def _sorted_stream(name: str, task: str, users: Sequence[str], items: Sequence[str],
                   values: Sequence[float], timestamps: Sequence[float],
                   meta: dict | None = None) -> Stream:
    ts = np.asarray(timestamps, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    return Stream(name=name, task=task,
                  users=[users[k] for k in order], items=[items[k] for k in order],
                  values=np.asarray(values, dtype=np.float32)[order], timestamps=ts[order],
                  meta=dict(meta or {}))


def _require(path: Path) -> Path:
    if not path.is_file():
        raise StreamDataMissing(f"data file not found: {path}")
    return path


def load_ml100k(data_root: Path, task: str) -> Stream:
    path = _require(Path(data_root) / ML100K_PATH)
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[float] = []
    with path.open() as fh:
        for line in fh:
            parts = line.split("\t")
            if len(parts) != 4:
                continue
            users.append(parts[0])
            items.append(parts[1])
            ratings.append(float(parts[2]))
            times.append(float(parts[3]))
    r = np.asarray(ratings, dtype=np.float32)
    if task == "binary":
        values = (r >= 4).astype(np.float32)
        name = "ml100k-likes"
    else:
        values = r
        name = "ml100k-ratings"
    return _sorted_stream(name, task, users, items, values, times, {"path": str(path)})


def read_taobao_rows(path: Path) -> tuple[list[tuple[str, str, float]], int]:
    """``(user, item, unix_time)`` rows in file order, and how many rows were skipped."""
    text = _require(Path(path)).read_text()
    # After a final newline the last piece is empty; without one it is the line the prefix cut
    # through (truncated): either way it is dropped.
    lines = text.split("\n")[:-1]
    rows: list[tuple[str, str, float]] = []
    skipped = 0
    for rec in csv.reader(io.StringIO("\n".join(lines))):
        try:
            if len(rec) != 5:
                raise ValueError(rec)
            user, item, _category, _behavior, ts = rec
            int(user), int(item)
            rows.append((user, item, float(int(ts))))
        except ValueError:
            skipped += 1
    return rows, skipped


class PopularityNegativeSampler:
    """Catalogue-popularity negatives for implicit streams (see the module docstring).

    ``pool`` holds the item of every positive of the whole stream (one entry per positive).
    ``observe`` records a user's positive (after its negative was drawn), for the exclusion only:
    the popularity itself is fixed.
    """

    def __init__(self, pool: Sequence[str], seed: int = 0, retries: int = 32):
        self.rng = np.random.default_rng(seed)
        self.retries = retries
        self.pool: list[str] = list(pool)
        self.counts: dict[str, int] = {}
        for it in self.pool:
            self.counts[it] = self.counts.get(it, 0) + 1
        self.user_items: dict[str, set[str]] = {}
        self.exact_fallbacks = 0

    def observe(self, user: str, item: str) -> None:
        """Record the user's positive with ``item`` (excluded from the user's later negatives)."""
        self.user_items.setdefault(user, set()).add(item)

    def draw(self, user: str, item: str) -> str | None:
        """The negative for the positive ``(user, item)``, which is not yet observed."""
        if not self.pool:
            return None
        own = self.user_items.get(user, ())
        for _ in range(self.retries):
            cand = self.pool[int(self.rng.integers(len(self.pool)))]
            if cand != item and cand not in own:
                return cand
        self.exact_fallbacks += 1
        allowed = [it for it in self.counts if it != item and it not in own]
        if not allowed:
            return None
        weights = np.asarray([self.counts[it] for it in allowed], dtype=np.float64)
        return allowed[int(self.rng.choice(len(allowed), p=weights / weights.sum()))]


def with_sampled_negatives(rows: Sequence[tuple[str, str, float]], seed: int = 0
                           ) -> tuple[list[str], list[str], list[float], list[float], dict]:
    """Sort positive rows by time (stable) and add one sampled negative after each."""
    order = sorted(range(len(rows)), key=lambda k: rows[k][2])
    # Uniform over the stream's catalogue (each distinct item once): popularity-weighted
    # negatives give every item as many negatives as positives, which makes an item's own
    # history point against its next label (counter AUC 0.27); uniform ones keep "popular
    # items are more likely to be chosen" a real signal, as in implicit-feedback evaluation.
    catalogue = list(dict.fromkeys(rows[k][1] for k in order))
    sampler = PopularityNegativeSampler(catalogue, seed)
    users: list[str] = []
    items: list[str] = []
    values: list[float] = []
    times: list[float] = []
    n_neg = 0
    for k in order:
        user, item, ts = rows[k]
        users.append(user)
        items.append(item)
        values.append(1.0)
        times.append(ts)
        neg = sampler.draw(user, item)
        sampler.observe(user, item)
        if neg is not None:
            users.append(user)
            items.append(neg)
            values.append(0.0)
            times.append(ts)
            n_neg += 1
    meta = {"positives": len(rows), "negatives": n_neg,
            "negative_exact_fallbacks": sampler.exact_fallbacks, "negative_seed": seed,
            "negative_distribution": "uniform over the stream's distinct items"}
    return users, items, values, times, meta


def load_taobao(data_root: Path, seed: int = 0) -> Stream:
    path = Path(data_root) / TAOBAO_PATH
    rows, skipped = read_taobao_rows(path)
    users, items, values, times, meta = with_sampled_negatives(rows, seed)
    meta.update(path=str(path), skipped_rows=skipped)
    # already in time order, and each negative shares its positive's timestamp: the stable sort
    # keeps it right after its positive
    return _sorted_stream("taobao", "binary", users, items, values, times, meta)


PLANTED_EVENTS = 40_000
PLANTED_WORKLOAD = {"users": 3000, "items": 2000, "groups": 12, "bias_std": 1.0,
                    "popularity_skew": 1.0, "seed": 1}


def load_workload(name: str, n: int, **workload_args) -> Stream:
    """The first ``n`` events of ``celrec.demo.DemoWorkload(**workload_args)``, timestamp =
    event index."""
    from celrec.demo import DemoWorkload

    try:
        workload = DemoWorkload(**workload_args)
    except TypeError as exc:
        raise StreamUnavailable(f"{name}: celrec.demo.DemoWorkload does not take these settings "
                                f"({exc})") from exc
    args = ", ".join(f"{k}={v!r}" for k, v in workload_args.items())
    meta: dict = {"source": f"celrec.demo.DemoWorkload({args})", "events": n}
    if dataclasses.is_dataclass(workload):
        meta["workload"] = dataclasses.asdict(workload)
    if hasattr(workload, "ceiling_auc"):  # the true click probabilities as scores
        meta["ceiling_auc"] = float(workload.ceiling_auc(samples=n))
    events = workload.events()
    users: list[str] = []
    items: list[str] = []
    values: list[float] = []
    for _ in range(n):
        ev = next(events)
        users.append(ev.user_id)
        items.append(ev.item_id)
        values.append(float(ev.value))
    return _sorted_stream(name, "binary", users, items, values, np.arange(n, dtype=np.float64),
                          meta)


def load_demo(n: int = DEMO_EVENTS) -> Stream:
    return load_workload("demo", n)


def load_planted(n: int = PLANTED_EVENTS) -> Stream:
    return load_workload("planted", n, **PLANTED_WORKLOAD)


LOADERS: dict[str, Callable[[Path], Stream]] = {
    "ml100k-likes": lambda root: load_ml100k(root, "binary"),
    "ml100k-ratings": lambda root: load_ml100k(root, "rating"),
    "taobao": load_taobao,
    "demo": lambda root: load_demo(),
    "planted": lambda root: load_planted(),
}


def load_stream(name: str, data_root: Path | str | None = None) -> Stream:
    """Load a named stream; raises ``StreamDataMissing`` naming the path when its file is absent."""
    if name not in LOADERS:
        raise KeyError(f"unknown stream {name!r}; known: {', '.join(STREAMS)}")
    root = Path(data_root) if data_root is not None else DEFAULT_DATA_ROOT
    return LOADERS[name](root)
