"""Run several methods on one prepared dataset and collect comparable results."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cel import cluster_ops
from cel.build import full_bytes, make_recommender
from cel.interactions import Interactions
from cel.metrics import bucketed, summarise
from cel.offline import OfflineCEL, TrainConfig, train_step
from cel.recommender import Recommender
from cel.tables import resolve_device
from celrec.presets import Preset
from cli.evaluation.protocols import Prepared

# "bias": global, user and item biases only (full tables of width 1, no interaction term),
# the floor every factor model should reach
ALL_METHODS = ("full", "hash", "dhash", "cel", "bias", "celrec")
SERVED_CHUNK = 200  # events scored, then learnt, at a time: the API protocol's chunk
Progress = Callable[[str, int, int], None]  # (label, done, total)


class MethodUnavailable(RuntimeError):
    pass


@dataclass
class RunSpec:
    methods: tuple[str, ...] = ("full", "hash", "cel")
    model: str = "mf"
    dim: int = 64
    clusters: int = 50
    side: str = "item"
    protocol: str = "random"
    device: str = "auto"
    seed: int = 0
    preset: Preset = field(default_factory=Preset)  # every training default
    stream_batch: int = 256
    stream_window: int = 20_000  # recent events CEL's cluster steps see in a stream

    @property
    def train(self) -> TrainConfig:
        return self.preset.train_config(self.seed)

    @property
    def extra_rows(self) -> int:
        return self.preset.extra_rows_for(self.protocol)




def _counts(ids: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(ids, minlength=n)


def _metric(pred: torch.Tensor, labels: torch.Tensor, task: str) -> float | None:
    out = summarise(pred, labels, task)
    return out["rmse"] if task == "rating" else out["auc"]


def _result(method: str, pred: torch.Tensor, data: Interactions, task: str,
            user_counts: torch.Tensor, item_counts: torch.Tensor, memory: int, full: int,
            events: int, seconds: float, curve: list[float], sizes: list[int],
            table: int | None = None, clip: bool = True) -> dict:
    """``memory``: everything the compressed side(s) keep; ``table``: their embedding rows
    only (None: not reported), so per-entity state beside the table shows in the gap.
    ``clip``: rating predictions clipped to the data's rating range (offline protocols; the
    stream protocol scores what is served, which cannot know the range in advance)."""
    pred, labels = pred.cpu(), data.labels.cpu()
    if task == "rating" and clip:
        pred = pred.clamp(float(labels.min()), float(labels.max())) if len(labels) else pred
    return {
        "method": method, **summarise(pred, labels, task),
        "memory_bytes": memory, "compression_ratio": full / memory if memory else None,
        "table_bytes": table, "table_compression_ratio": full / table if table else None,
        "events_per_s": events / seconds if seconds > 0 else None,
        "buckets": {"item": bucketed(pred, labels, item_counts.cpu(), task),
                    "user": bucketed(pred, labels, user_counts.cpu(), task)},
        "curve": curve, "cluster_sizes": sizes,
    }


def _cluster_sizes(rec: Recommender, side: str) -> list[int]:
    sides = rec.clustered_sides()
    if not sides:
        return []
    table = rec.table(side if side in sides else sides[0])
    return table.counts[:table.num_active].tolist()


def recommender_for(method: str, prep: Prepared, spec: RunSpec) -> Recommender:
    """The untrained recommender of ``method`` under ``spec``, global bias at the mean."""
    dim = spec.dim
    if method == "bias":
        method, dim = "full", 0
    rec = make_recommender(method, prep.num_users, prep.num_items, spec.model, dim,
                           spec.side, spec.clusters, prep.task, spec.device,
                           prep.context_cardinalities, seed=spec.seed,
                           entity_bias=spec.preset.entity_bias,
                           entity_scale=spec.preset.entity_scale, extra_rows=spec.extra_rows)
    mean = min(max(prep.label_mean, 1e-3), 1 - 1e-3) if prep.task == "binary" else 0.0
    start = math.log(mean / (1 - mean)) if prep.task == "binary" else prep.label_mean
    with torch.no_grad():
        rec.model.global_bias.fill_(start)
    return rec


def run_offline(method: str, prep: Prepared, spec: RunSpec, progress: Progress | None) -> dict:
    rec = recommender_for(method, prep, spec)
    dev = resolve_device(spec.device)
    train, test = prep.train.to(dev), prep.test.to(dev)
    curve: list[float] = []
    trainer = OfflineCEL(rec, spec.train)
    total = spec.train.epochs + (spec.train.personal_epochs if rec.clustered_sides() else 0)
    seconds = 0.0
    clock = time.perf_counter()

    def on_epoch(epoch: int, _: OfflineCEL) -> float | None:
        nonlocal seconds, clock
        seconds += time.perf_counter() - clock
        value = _metric(rec.predict(test).cpu(), test.labels.cpu(), prep.task)
        if value is not None:
            curve.append(value)
        if progress:
            progress(method, epoch + 1, total)
        clock = time.perf_counter()
        return value

    hist = trainer.fit(train, on_epoch)
    side = "item" if spec.side == "both" else spec.side
    return _result(method, rec.predict(test), test, prep.task,
                   _counts(train.users, prep.num_users)[test.users],
                   _counts(train.items, prep.num_items)[test.items],
                   rec.memory_bytes() - _unclustered_bytes(rec, spec.side),
                   full_bytes(prep.num_users, prep.num_items, rec.model.embedding_dim, spec.side),
                   hist.events, seconds, curve, _cluster_sizes(rec, side),
                   _table_bytes(rec, spec.side))


def _table_bytes(rec: Recommender, side: str) -> int:
    """Embedding rows (``weight``) of the compressed side(s), without per-entity state."""
    tables = {"item": [rec.item_table], "user": [rec.user_table],
              "both": [rec.user_table, rec.item_table]}[side]
    return sum(t.weight.numel() * t.weight.element_size() for t in tables)


def _unclustered_bytes(rec: Recommender, side: str) -> int:
    """Memory of the side(s) the method does not compress: left out of the comparison."""
    if side == "both":
        return 0
    other = rec.user_table if side == "item" else rec.item_table
    return int(other.memory_bytes())


def stream_cluster_step(rec: Recommender, window: Interactions, cfg: TrainConfig, step: int,
                        optimizer: torch.optim.Optimizer, gen: torch.Generator) -> None:
    """The cluster steps due after stream step ``step``, on the recent ``window``."""
    for side in rec.clustered_sides():
        if step % cfg.split_every == 0:
            cluster_ops.split(rec, side, window, optimizer)
        if step % cfg.reassign_every == 0:
            cluster_ops.reassign(rec, side, window, cfg.keep_prob, gen)
            if rec.table(side).scale2 is not None:  # extra rows: chosen as offline
                cluster_ops.assign_extra(rec, side, window, cfg.extra_rows_prior,
                                         cfg.extra_rows_min_count, cfg.reg)


class ProgressiveRun:
    """One method learning a stream progressively: ``predict`` a batch (first-sight entities
    placed in the default cluster), then ``learn`` it (one optimiser step and the cluster
    steps due, on the recent ``spec.stream_window`` events)."""

    def __init__(self, method: str, prep: Prepared, spec: RunSpec):
        self.rec = recommender_for(method, prep, spec)
        self.spec, self.cfg = spec, spec.train
        self.device = resolve_device(spec.device)
        self.events = prep.test.to(self.device)
        self.optimizer = torch.optim.Adam(self.rec.parameters(), lr=self.cfg.lr)
        self.gen = torch.Generator().manual_seed(spec.seed)
        self.user_seen = torch.zeros(prep.num_users, dtype=torch.long, device=self.device)
        self.item_seen = torch.zeros(prep.num_items, dtype=torch.long, device=self.device)
        self.steps, self.learnt = 0, 0

    def batches(self):
        """``(start, batch)`` over the stream in order, ``spec.stream_batch`` events each."""
        for start in range(0, len(self.events), self.spec.stream_batch):
            yield start, self.events.subset(slice(start, start + self.spec.stream_batch))

    def predict(self, batch: Interactions) -> torch.Tensor:
        for side in self.rec.clustered_sides():  # first sight: the largest cluster, not 0
            seen = (self.user_seen if side == "user" else self.item_seen) > 0
            cluster_ops.place_cold(self.rec, side, seen, self.cfg.cold_policy)
        return self.rec.predict(batch)

    def learn(self, batch: Interactions) -> None:
        train_step(self.rec, self.optimizer, batch, self.cfg.reg)
        self.user_seen += _counts(batch.users, len(self.user_seen))
        self.item_seen += _counts(batch.items, len(self.item_seen))
        self.steps += 1
        self.learnt += len(batch)
        if self.rec.clustered_sides():
            window = self.events.subset(slice(max(0, self.learnt - self.spec.stream_window),
                                              self.learnt))
            stream_cluster_step(self.rec, window, self.cfg, self.steps, self.optimizer,
                                self.gen)


def run_stream(method: str, prep: Prepared, spec: RunSpec, progress: Progress | None) -> dict:
    """Progressive validation: predict each batch, then learn from it."""
    run = ProgressiveRun(method, prep, spec)
    rec, events = run.rec, run.events
    preds, u_counts, i_counts, curve = [], [], [], []
    seconds, n = 0.0, len(events)
    for start, batch in run.batches():
        u_counts.append(run.user_seen[batch.users].clone())
        i_counts.append(run.item_seen[batch.items].clone())
        clock = time.perf_counter()
        preds.append(run.predict(batch))
        run.learn(batch)
        seconds += time.perf_counter() - clock
        if run.steps % 50 == 0 or start + len(batch) >= n:
            done = torch.cat(preds)
            value = _metric(done.cpu(), events.labels[:len(done)].cpu(), prep.task)
            if value is not None:
                curve.append(value)
            if progress:
                progress(method, start + len(batch), n)
    side = "item" if spec.side == "both" else spec.side
    return _result(method, torch.cat(preds) if preds else torch.empty(0), events, prep.task,
                   torch.cat(u_counts) if u_counts else torch.empty(0, dtype=torch.long),
                   torch.cat(i_counts) if i_counts else torch.empty(0, dtype=torch.long),
                   rec.memory_bytes() - _unclustered_bytes(rec, spec.side),
                   full_bytes(prep.num_users, prep.num_items, rec.model.embedding_dim, spec.side),
                   n, seconds, curve, _cluster_sizes(rec, side), _table_bytes(rec, spec.side),
                   clip=False)


def run_served(prep: Prepared, spec: RunSpec, progress: Progress | None) -> dict:
    """``celrec``: the trainer's own learner with the trainer's defaults, scored through the
    served model (``cli.evaluation.served``), a chunk of events at a time: what
    ``celrec run`` serves, without HTTP."""
    if spec.protocol != "stream" or spec.model not in ("mf", "deepfm"):
        raise MethodUnavailable("celrec (the trainer's learner as served) runs on "
                                "--protocol stream with --model mf or deepfm")
    from cli.evaluation.served import CelrecStream

    # The trainer's settings and defaults (CELREC_EMBEDDING_DIM etc.), not --dim/--clusters.
    stream = CelrecStream(prep.task, seed=spec.seed, device=spec.device, model=spec.model)
    events = prep.test
    users = [str(u) for u in events.users.tolist()]
    items = [str(i) for i in events.items.tolist()]
    labels = events.labels.cpu().numpy()
    preds, curve = [], []
    seconds, n = 0.0, len(users)
    for start in range(0, n, SERVED_CHUNK):
        end = min(n, start + SERVED_CHUNK)
        clock = time.perf_counter()
        preds.append(torch.from_numpy(stream.process(users[start:end], items[start:end],
                                                     labels[start:end], labels[start:end])))
        seconds += time.perf_counter() - clock
        if (start // SERVED_CHUNK) % 50 == 49 or end >= n:
            value = _metric(torch.cat(preds).float(), events.labels[:end].cpu(), prep.task)
            if value is not None:
                curve.append(value)
            if progress:
                progress("celrec", end, n)
    earlier_u = earlier_counts(events.users.cpu())
    earlier_i = earlier_counts(events.items.cpu())
    width = stream.settings.embedding_dim + 1
    return _result("celrec", torch.cat(preds).float(), events, prep.task, earlier_u, earlier_i,
                   stream.learnt_table_bytes(),
                   full_bytes(prep.num_users, prep.num_items, width, "both"), n, seconds,
                   curve, [], None, clip=False)


def earlier_counts(ids: torch.Tensor) -> torch.Tensor:
    """Per event, how many earlier events had the same id."""
    seen: dict[int, int] = {}
    out = []
    for x in ids.tolist():
        out.append(seen.get(x, 0))
        seen[x] = out[-1] + 1
    return torch.tensor(out, dtype=torch.long)


def evaluate(prep: Prepared, spec: RunSpec, progress: Progress | None = None) -> list[dict]:
    results = []
    for method in spec.methods:
        if method not in ALL_METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")
        if method == "celrec":
            results.append(run_served(prep, spec, progress))
        elif spec.protocol == "stream":
            results.append(run_stream(method, prep, spec, progress))
        else:
            results.append(run_offline(method, prep, spec, progress))
    return results
