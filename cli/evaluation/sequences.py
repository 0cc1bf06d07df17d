"""Sequence evaluation: DUPN vs a DeepFM-style model without a sequence, stream protocol.

Events are replayed in time order in batches. Each event becomes a positive (the item the
user really acted on next) plus ``negatives`` uniformly drawn items, all with the user's
last ``max_len`` behaviours before it as the sequence. Progressive validation: every batch
is scored before either model learns from it, so the AUC is on unseen events. DUPN's
conversion head learns purchase-after-click on the positives (AUC reported where events have
behaviour types). Both models sit on the same kind of tables with the same cluster budget.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cel.build import full_bytes, make_recommender
from cel.clusters import reassign_by_trial
from cel.dupn import DUPN, DUPNConfig, Sequence, gap_buckets
from cel.grad_split import GradientSplitter
from cel.interactions import Interactions
from cel.metrics import auc, bucketed, logloss
from celrec.presets import Preset
from cli.evaluation.datasets import DatasetError

SEQUENCE_FORMATS = ("userbehavior", "sasrec", "csv")
BEHAVIOURS = {"pv": 0, "view": 0, "click": 0, "impression": 0, "rating": 0, "fav": 1,
              "favorite": 1, "like": 1, "cart": 2, "add_to_cart": 2, "buy": 3, "purchase": 3}
BUY = 3


@dataclass
class EventLog:
    users: np.ndarray  # dense ids, int64
    items: np.ndarray
    behaviours: np.ndarray  # BEHAVIOURS codes
    scenarios: np.ndarray
    times: np.ndarray  # seconds, or the step within the user's sequence
    order: np.ndarray  # global replay order (indices into the arrays)
    num_users: int
    num_items: int
    num_scenarios: int
    has_behaviours: bool
    item_category: np.ndarray | None = None  # dense item id -> dense category id
    num_categories: int = 0

    def __len__(self) -> int:
        return len(self.users)


def _dense(raw: list[str]) -> tuple[np.ndarray, int]:
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(r, len(vocab)) for r in raw), dtype=np.int64,
                      count=len(raw))
    return ids, len(vocab)


def _log(users: list[str], items: list[str], behaviours: list[int], scenarios: list[str],
         times: np.ndarray, order: np.ndarray, has_behaviours: bool,
         categories: list[str] | None = None) -> EventLog:
    if not users:
        raise DatasetError("no events")
    u, nu = _dense(users)
    i, ni = _dense(items)
    s, ns = _dense(scenarios)
    log = EventLog(u, i, np.asarray(behaviours, dtype=np.int64), s, times, order, nu, ni, ns,
                   has_behaviours)
    if categories is not None:
        c, log.num_categories = _dense(categories)
        log.item_category = np.zeros(ni, dtype=np.int64)
        log.item_category[i] = c  # an item's category: the last one seen
    return log


def load_userbehavior_events(path: Path) -> EventLog:
    """``user,item,category,behavior,time``; malformed (truncated) lines are dropped."""
    if not path.is_file():
        raise DatasetError(f"no such dataset file: {path}")
    users, items, cats, kinds, times = [], [], [], [], []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            parts = line.strip().split(",")
            if len(parts) != 5 or not parts[4].isdigit() or parts[3] not in BEHAVIOURS:
                continue
            users.append(parts[0])
            items.append(parts[1])
            cats.append(parts[2])
            kinds.append(BEHAVIOURS[parts[3]])
            times.append(int(parts[4]))
    t = np.asarray(times, dtype=np.int64)
    return _log(users, items, kinds, ["default"] * len(users), t,
                np.argsort(t, kind="stable"), True, cats)


def load_sasrec(path: Path) -> EventLog:
    """``user item`` per line, each user's lines in time order, no timestamps.

    The time of an event is its step in the user's sequence; the global replay order
    interleaves users by their relative position (step / sequence length)."""
    if not path.is_file():
        raise DatasetError(f"no such dataset file: {path}")
    users, items = [], []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2:
                users.append(parts[0])
                items.append(parts[1])
    u = np.asarray(users)
    step = np.zeros(len(u), dtype=np.int64)
    length = np.ones(len(u), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)]
    for a, b in zip(starts, ends, strict=True):
        step[a:b] = np.arange(b - a)
        length[a:b] = b - a
    order = np.argsort(step / length, kind="stable")
    return _log(users, items, [0] * len(users), ["default"] * len(users), step, order, False)


def load_csv_events(path: Path) -> EventLog:
    """``user,item,value[,timestamp][,scenario][,event_type]``; rows with value > 0."""
    if not path.is_file():
        raise DatasetError(f"no such dataset file: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if float(r.get("value") or 0) > 0]
    if not rows or not {"user", "item"} <= set(rows[0]):
        raise DatasetError(f"{path}: a CSV needs a header with user,item,value")
    has_kind = "event_type" in rows[0]
    t = np.asarray([int(float(r.get("timestamp") or n)) for n, r in enumerate(rows)],
                   dtype=np.int64)
    return _log([r["user"] for r in rows], [r["item"] for r in rows],
                [BEHAVIOURS.get(r["event_type"], 0) if has_kind else 0 for r in rows],
                [r.get("scenario") or "default" for r in rows], t,
                np.argsort(t, kind="stable"), has_kind)


def load_events(path: str | Path, fmt: str) -> EventLog:
    loaders = {"userbehavior": load_userbehavior_events, "sasrec": load_sasrec,
               "csv": load_csv_events}
    if fmt not in loaders:
        raise DatasetError(f"format {fmt!r} has no sequences; choose from "
                           f"{', '.join(SEQUENCE_FORMATS)}")
    return loaders[fmt](Path(path))


@dataclass
class Histories:
    """Per event (in replay order) the user's previous ``max_len`` events, right-aligned."""

    items: torch.Tensor  # (n, L)
    behaviours: torch.Tensor
    scenarios: torch.Tensor
    gaps: torch.Tensor  # bucket ids
    mask: torch.Tensor
    categories: torch.Tensor | None


def build_histories(log: EventLog, max_len: int, time_buckets: int) -> Histories:
    """Vectorised: sort by (user, replay position); lag j is the row j places earlier."""
    n = len(log)
    position = np.empty(n, dtype=np.int64)
    position[log.order] = np.arange(n)
    by_user = np.lexsort((position, log.users))
    rank = np.zeros(n, dtype=np.int64)  # index of the event within its user's sequence
    starts = np.r_[0, np.flatnonzero(np.diff(log.users[by_user])) + 1]
    counts = np.diff(np.r_[starts, n])
    rank[by_user] = np.arange(n) - np.repeat(starts, counts)
    at = np.empty(n, dtype=np.int64)  # where each event sits in by_user
    at[by_user] = np.arange(n)
    shape = (n, max_len)
    items, kinds, scen = (np.zeros(shape, dtype=np.int64) for _ in range(3))
    gaps = np.zeros(shape, dtype=np.int64)
    mask = np.zeros(shape, dtype=bool)
    for lag in range(1, max_len + 1):
        ok = rank >= lag
        src = by_user[np.where(ok, at - lag, 0)]
        col = max_len - lag
        mask[:, col] = ok
        items[:, col] = np.where(ok, log.items[src], 0)
        kinds[:, col] = np.where(ok, log.behaviours[src], 0)
        scen[:, col] = np.where(ok, log.scenarios[src], 0)
        gaps[:, col] = np.where(ok, log.times - log.times[src], 0)
    pick = log.order
    cats = None
    if log.item_category is not None:
        cats = torch.from_numpy(log.item_category[items[pick]])
    return Histories(*(torch.from_numpy(a[pick]) for a in (items, kinds, scen)),
                     gap_buckets(torch.from_numpy(gaps[pick]), time_buckets),
                     torch.from_numpy(mask[pick]), cats)


@dataclass
class SeqSpec:
    table: str = "cel"
    dim: int = 32
    clusters: int = 64
    max_len: int = 20
    negatives: int = 1
    batch_events: int = 256
    lr: float = 0.003
    split_every: int = 5
    reassign_every: int = 50  # batches between reassignments (0: never)
    reassign_window: int = 2048  # recent samples they score
    hidden: int = 64
    time_buckets: int = 16
    seed: int = 0
    limit: int = 0  # replay only the first N events (0: all)
    start: int = 0  # skip the first events (a later, disjoint stretch: validation runs)
    warmup: int = 0  # learn from the events just before ``start`` first, without scoring
    clip: float = 0.0  # gradient-norm clipping (0: none)
    # DUPN reassignment: encode the window's sequences once under the current assignment
    # and vary only the candidate / user rows (False: the sequences' items move with the
    # candidates being tried, so every trial also re-encodes the sequences)
    reassign_fixed_sequence: bool = True
    # an own first-order bias per item (1 float each, counted in memory): DUPN's
    # ``item_bias`` column, DeepFM's tables with ``entity_bias`` (its bias column)
    entity_bias: bool = False
    table_lr: float = 0.0  # Adam lr of the user/item tables (rows, own biases); 0: ``lr``
    user_parts: int = 1  # > 1: replay only the users of one of this many seeded parts,
    user_part: int = 0  # with all their events (whole sequences, disjoint parts)


@dataclass
class _Batch:
    users: torch.Tensor
    items: torch.Tensor
    click: torch.Tensor
    purchase: torch.Tensor
    seq: Sequence
    categories: torch.Tensor | None  # the candidate's category

    def __len__(self) -> int:
        return int(self.users.shape[0])


def _expand(log: EventLog, hist: Histories, events: np.ndarray, negatives: int,
            gen: torch.Generator) -> _Batch:
    """Events (replay positions) -> positives followed by their sampled negatives."""
    idx = torch.from_numpy(events)
    src = torch.from_numpy(log.order[events])
    k = negatives + 1
    users = torch.from_numpy(log.users[src.numpy()]).repeat_interleave(k)
    items = torch.from_numpy(log.items[src.numpy()]).repeat_interleave(k)
    click = torch.zeros(len(items))
    click[::k] = 1.0
    neg = click == 0
    items[neg] = torch.randint(log.num_items, (int(neg.sum()),), generator=gen)
    buy = torch.from_numpy(log.behaviours[src.numpy()] == BUY).float().repeat_interleave(k)
    seq = Sequence(*(None if t is None else t[idx].repeat_interleave(k, dim=0) for t in (
        hist.items, hist.behaviours, hist.scenarios, hist.gaps, hist.mask, hist.categories)))
    cats = None
    if log.item_category is not None:
        cats = torch.from_numpy(log.item_category[items.numpy()])
    return _Batch(users, items, click, buy * click, seq, cats)


class _DUPNRun:
    name = "dupn"

    def __init__(self, log: EventLog, spec: SeqSpec, prior: float) -> None:
        torch.manual_seed(spec.seed)
        self.model = DUPN(DUPNConfig(
            num_items=log.num_items, num_users=log.num_users, item_dim=spec.dim,
            item_clusters=spec.clusters, user_clusters=spec.clusters, table=spec.table,
            behaviour_types=max(BEHAVIOURS.values()) + 1, scenarios=log.num_scenarios,
            time_buckets=spec.time_buckets, hidden=spec.hidden,
            num_categories=log.num_categories, item_bias=spec.entity_bias))
        with torch.no_grad():
            self.model.ctr_head[-1].bias.fill_(prior)

    def _out(self, b: _Batch):
        return self.model(b.seq, b.items, b.users, categories=b.categories)

    def pooled(self, b: _Batch) -> torch.Tensor:
        """The batch's pooled sequences under the current assignment (for reassignment)."""
        return self.model.pool_sequence(b.seq)[0]

    def losses(self, b: _Batch, pooled: torch.Tensor | None = None) -> torch.Tensor:
        if pooled is None:
            out, _ = self._out(b)
        else:  # the sequence as it was encoded; only the candidate and user rows vary
            out, _ = self.model.forward_pooled(pooled, b.items, b.users, b.categories)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(out.ctr, b.click, reduction="none")

    def loss(self, b: _Batch) -> torch.Tensor:
        out, price = self._out(b)
        return self.model.loss(out, price, b.click, b.purchase)

    @torch.no_grad()
    def predict(self, b: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self._out(b)
        return torch.sigmoid(out.ctr), torch.sigmoid(out.cvr)

    def tables(self) -> dict:
        return self.model.clustered_tables()

    def memory_bytes(self) -> int:
        return self.model.memory_bytes()


class _DeepFMRun:
    name = "deepfm"

    def __init__(self, log: EventLog, spec: SeqSpec, prior: float) -> None:
        cards = (log.num_categories,) if log.num_categories else ()
        self.rec = make_recommender(spec.table, log.num_users, log.num_items, "deepfm",
                                    spec.dim, "both", spec.clusters, "binary", "cpu", cards,
                                    seed=spec.seed, entity_bias=spec.entity_bias)
        self.model = self.rec
        with torch.no_grad():
            self.rec.model.global_bias.fill_(prior)

    def _x(self, b: _Batch) -> Interactions:
        ctx = None if b.categories is None else b.categories.unsqueeze(1)
        return Interactions(b.users, b.items, b.click, ctx)

    def pooled(self, b: _Batch) -> None:
        """No sequence to encode (``_DUPNRun.pooled``'s counterpart)."""
        return None

    def losses(self, b: _Batch, pooled: torch.Tensor | None = None) -> torch.Tensor:
        return self.rec.loss(self.rec.score(self._x(b)), b.click)

    def loss(self, b: _Batch) -> torch.Tensor:
        return self.losses(b).mean()

    @torch.no_grad()
    def predict(self, b: _Batch) -> tuple[torch.Tensor, None]:
        return torch.sigmoid(self.rec.score(self._x(b))), None

    def tables(self) -> dict:
        return {s: self.rec.table(s) for s in self.rec.clustered_sides()}

    def memory_bytes(self) -> int:
        return self.rec.memory_bytes()


def user_part(log: EventLog, parts: int, part: int, seed: int = 0) -> EventLog:
    """The events of a seeded 1/``parts`` of the users, in the original replay order."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(log.num_users) % parts
    keep = group[log.users] == part
    idx = np.flatnonzero(keep)
    new_pos = np.full(len(log), -1, dtype=np.int64)
    new_pos[idx] = np.arange(len(idx))
    order = new_pos[log.order[keep[log.order]]]
    return EventLog(log.users[idx], log.items[idx], log.behaviours[idx], log.scenarios[idx],
                    log.times[idx], order, log.num_users, log.num_items, log.num_scenarios,
                    log.has_behaviours, log.item_category, log.num_categories)


def run_stream(log: EventLog, spec: SeqSpec, models: tuple[str, ...] = ("dupn", "deepfm")
               ) -> list[dict]:
    """Replay the log once per model on identical batches (same negatives)."""
    if spec.user_parts > 1:
        log = user_part(log, spec.user_parts, spec.user_part, spec.seed)
    hist = build_histories(log, spec.max_len, spec.time_buckets)
    n = len(log) if spec.limit <= 0 else min(spec.start + spec.limit, len(log))
    prior = math.log(1.0 / spec.negatives)  # positives : negatives = 1 : negatives
    results = []
    for name in models:
        run = {"dupn": _DUPNRun, "deepfm": _DeepFMRun}[name](log, spec, prior)
        gen = torch.Generator().manual_seed(spec.seed)  # same negatives for every model
        results.append(_replay(run, log, hist, n, spec, gen))
    return results


def _optimizer(run: _DUPNRun | _DeepFMRun, spec: SeqSpec) -> torch.optim.Adam:
    """Adam; the user/item tables' parameters (rows, own biases) at ``table_lr``."""
    tables = [t for t in (run.model.user_table, run.model.item_table) if t is not None]
    in_tables = {id(p) for t in tables for p in t.parameters()}
    return torch.optim.Adam([
        {"params": [p for p in run.model.parameters() if id(p) not in in_tables]},
        {"params": [p for t in tables for p in t.parameters()],
         "lr": spec.table_lr or spec.lr}], lr=spec.lr)


def _replay(run: _DUPNRun | _DeepFMRun, log: EventLog, hist: Histories, n: int,
            spec: SeqSpec, gen: torch.Generator) -> dict:
    optimizer = _optimizer(run, spec)
    splitters = [GradientSplitter(t, spec.split_every, optimizer) for t in run.tables().values()]
    reassign_gen = torch.Generator().manual_seed(spec.seed + 1)
    preds, cvr_preds, labels, buys = [], [], [], []
    user_seen = torch.zeros(log.num_users, dtype=torch.long)
    item_seen = torch.zeros(log.num_items, dtype=torch.long)
    u_counts, i_counts = [], []
    recent: list[_Batch] = []
    seconds, steps = 0.0, 0
    try:
        first = min(spec.start, n)
        bounds = [(a, min(a + spec.batch_events, first), False)  # warm-up: learn only
                  for a in range(max(0, first - spec.warmup), first, spec.batch_events)]
        bounds += [(a, min(a + spec.batch_events, n), True)
                   for a in range(first, n, spec.batch_events)]
        for start, stop, scored in bounds:
            batch = _expand(log, hist, np.arange(start, stop), spec.negatives, gen)
            if scored:
                u_counts.append(user_seen[batch.users])
                i_counts.append(item_seen[batch.items])
            user_seen += torch.bincount(batch.users[batch.click > 0.5], minlength=log.num_users)
            item_seen += torch.bincount(batch.items[batch.click > 0.5], minlength=log.num_items)
            clock = time.perf_counter()
            if scored:  # progressive validation: scored before learning from it
                p, c = run.predict(batch)
                preds.append(p)
                labels.append(batch.click)
                if c is not None and log.has_behaviours:
                    pos = batch.click > 0.5
                    cvr_preds.append(c[pos])
                    buys.append(batch.purchase[pos])
            optimizer.zero_grad(set_to_none=True)
            run.loss(batch).backward()
            if spec.clip > 0:
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), spec.clip)
            optimizer.step()
            for s in splitters:
                s.step()
            steps += 1
            recent = (recent + [batch])[-max(1, spec.reassign_window // len(batch)):]
            if spec.reassign_every and steps % spec.reassign_every == 0 and run.tables():
                _reassign(run, recent, reassign_gen, spec.reassign_fixed_sequence)
            seconds += time.perf_counter() - clock
    finally:
        for s in splitters:
            s.close()
    pred, label = torch.cat(preds), torch.cat(labels)
    memory = run.memory_bytes()
    full = full_bytes(log.num_users, log.num_items, spec.dim + 1, "both")
    events = n - min(spec.start, n)
    trained = n - max(0, min(spec.start, n) - spec.warmup)  # events/s counts warm-up too
    result = {"method": run.name, "rmse": None, "mse": None, "auc": auc(pred, label),
              "logloss": logloss(pred, label), "events": events,
              "samples": len(label), "events_per_s": trained / seconds if seconds else None,
              "memory_bytes": memory, "compression_ratio": full / memory,
              "buckets": {"item": bucketed(pred, label, torch.cat(i_counts), "binary"),
                          "user": bucketed(pred, label, torch.cat(u_counts), "binary")},
              "purchase_auc": None}
    if cvr_preds:
        result["purchase_auc"] = auc(torch.cat(cvr_preds), torch.cat(buys))
    return result


def _reassign(run: _DUPNRun | _DeepFMRun, recent: list[_Batch], gen: torch.Generator,
              fixed_sequence: bool = False) -> None:
    """Loss-based reassignment on the recent window. For DUPN's item side without
    ``fixed_sequence`` this is approximate: history positions of the window's items move
    along with the candidates being tried. With it, the window's sequences are encoded once
    (current assignment) and each trial re-scores only the candidate and user rows, which
    is exact for the candidate (and one LSTM pass instead of one per cluster)."""
    def cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if parts[0] is None else torch.cat(parts)

    window = _Batch(*(cat([getattr(b, f) for b in recent])
                      for f in ("users", "items", "click", "purchase")),
                    Sequence(*(cat([b.seq[k] for b in recent]) for k in range(6))),
                    cat([b.categories for b in recent]))
    with torch.no_grad():
        for side, table in run.tables().items():
            ids = window.users if side == "user" else window.items
            pooled = run.pooled(window) if fixed_sequence else None
            reassign_by_trial(table, ids, lambda p=pooled: run.losses(window, p), gen)


def cli_report(args, preset: Preset) -> dict:
    """``celrec eval --model dupn``: the stream protocol on a sequence format, per table kind."""
    if args.protocol != "stream":
        raise ValueError("--model dupn needs --protocol stream (next-event prediction)")
    if not args.data:
        raise ValueError("--model dupn needs --data")
    log = load_events(args.data, args.format)
    results = []
    for table in args.methods.split(","):
        if table not in ("full", "cel"):
            raise ValueError(f"--model dupn supports --methods full,cel, not {table!r}")
        # CEL tables keep an own bias per item unless the preset's entity_bias is off
        # (validated on the Video Games users: DUPN 0.693 -> 0.720 AUC)
        spec = SeqSpec(table=table, dim=args.dim, clusters=args.clusters, lr=preset.lr,
                       negatives=preset.negatives, seed=args.seed,
                       entity_bias=table == "cel" and preset.entity_bias,
                       table_lr=preset.table_lr or 0.0)
        result = run_stream(log, spec, ("dupn",))[0]
        result["method"] = table
        results.append(result)
    return {"dataset": args.data, "protocol": "stream", "task": "binary", "model": "dupn",
            "side": "both", "clusters": args.clusters, "dim": args.dim, "results": results}
