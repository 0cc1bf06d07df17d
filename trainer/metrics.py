"""The trainer's Prometheus metrics (served on ``CELREC_TRAINER_METRICS_PORT``) and the
summary it shares with the dashboard through the state store.

The stream trainer calls the hooks from its own thread: ``before_learn`` (progressive
evaluation: score the batch with the model as it is, then learn), ``after_learn``,
``observe_batch``, ``observe_publish``, ``observe_checkpoint`` and ``maybe_sample`` (the
throttled, slower part: consumer lag, clusters, rates, the shared summary).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeHistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from celrec.backends import BackendUnavailable, StateStore
from celrec.metrics import STATS_TTL_S, OnlineScore, TrainerStats, trainer_stats_key
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event
from trainer.learner import BatchReport, Learner, LearnStats

if TYPE_CHECKING:
    from trainer.publisher import Publisher


class ObservedTrainer(Protocol):
    """What the metrics read of the stream trainer (``trainer.stream.StreamTrainer``)."""

    settings: Settings
    store: StateStore
    learner: Learner
    publisher: Publisher | None
    progress: TrainerProgress

    def lag(self) -> dict[str, int]: ...

log = logging.getLogger(__name__)

SIDES = ("user", "item")
SAMPLE_INTERVAL_S = 1.0  # lag, clusters, rates: not per batch, the lag may cost a round trip
STATS_INTERVAL_S = 2.0  # the dashboard summary written to the state store
RATE_WINDOW_S = 60.0
EVENT_RATE_WINDOW_S = 10.0
MAX_SCENARIOS = 20  # scenario is a client-chosen label: bound its cardinality
# Events per batch scored for the online AUC: an evenly strided sample keeps the estimate
# unbiased while its cost stays a small fraction of learning on big batches.
PROGRESSIVE_SAMPLE = 256
OTHER_SCENARIO = "other"
CLUSTER_SIZE_BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000,
                       100_000, 1_000_000)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PUBLISH_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _batch_size_buckets(max_events: int) -> tuple[float, ...]:
    bounds, b = [], 1
    while b < max_events:
        bounds.append(float(b))
        b *= 4
    return (*bounds, float(max_events))


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum statistic (ties get their average rank); None if one class
    is missing."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based
    rank_sum = float(average_rank[inverse][labels > 0].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def logloss(scores: np.ndarray, labels: np.ndarray) -> float | None:
    if len(labels) == 0:
        return None
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


class ProgressiveEvaluator:
    """Predictions made before the model learned from the event, in a ring buffer of the
    last ``window`` events per scenario."""

    def __init__(self, window: int, max_scenarios: int = MAX_SCENARIOS):
        self.window, self.max_scenarios = window, max_scenarios
        self._scores: dict[str, np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}
        self._filled: dict[str, int] = {}
        self._next: dict[str, int] = {}

    def _scenario(self, name: str) -> str:
        if name in self._scores or len(self._scores) < self.max_scenarios - 1:
            return name
        return OTHER_SCENARIO

    def add(self, scenarios: Sequence[str], scores: np.ndarray, labels: np.ndarray) -> None:
        names = np.array([self._scenario(s) for s in scenarios])
        for name in np.unique(names):
            mask = names == name
            self._append(str(name), scores[mask], labels[mask])

    def _append(self, name: str, scores: np.ndarray, labels: np.ndarray) -> None:
        if name not in self._scores:
            self._scores[name] = np.zeros(self.window, np.float64)
            self._labels[name] = np.zeros(self.window, np.float64)
            self._filled[name] = self._next[name] = 0
        scores, labels = scores[-self.window:], labels[-self.window:]
        positions = (self._next[name] + np.arange(len(scores))) % self.window
        self._scores[name][positions] = scores
        self._labels[name][positions] = labels
        self._next[name] = int((self._next[name] + len(scores)) % self.window)
        self._filled[name] = min(self.window, self._filled[name] + len(scores))

    def summary(self) -> dict[str, OnlineScore]:
        out = {}
        for name, filled in self._filled.items():
            s, y = self._scores[name][:filled], self._labels[name][:filled]
            out[name] = OnlineScore(auc=auc(s, y), logloss=logloss(s, y), events=filled)
        return out


class _ClusterSizes:
    """Cluster-size distribution per side as a gauge histogram (sizes of clusters now)."""

    def __init__(self) -> None:
        self.sizes: dict[str, np.ndarray] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeHistogramMetricFamily(
            "celrec_trainer_cluster_size_entities",
            "Clusters by number of member entities (live clusters of each side)",
            labels=["side"],
        )
        for side, sizes in self.sizes.items():
            live = sizes[sizes > 0]
            buckets = [(str(float(b)), float((live <= b).sum())) for b in CLUSTER_SIZE_BOUNDS]
            buckets.append(("+Inf", float(len(live))))
            family.add_metric([side], buckets, gsum_value=float(live.sum()))
        yield family


class TrainerMetrics:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None):
        self.settings = settings
        self.registry = r = registry or CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, fds
        self.evaluator = ProgressiveEvaluator(settings.online_metrics_window)
        self.events_applied = Counter(
            "celrec_trainer_events_applied", "Events the model learned from", registry=r)
        self.events_duplicate = Counter(
            "celrec_trainer_events_duplicate", "Events skipped as already applied", registry=r)
        self.events_dead_lettered = Counter(
            "celrec_trainer_events_dead_lettered",
            "Messages sent to the dead-letter topic (undecodable or invalid)", registry=r)
        self.events_skipped = Counter(
            "celrec_trainer_events_skipped",
            "Events of batches the model refused (non-finite loss or gradients)", registry=r)
        self.batch_size = Histogram(
            "celrec_trainer_batch_size_events", "Records per micro-batch",
            buckets=_batch_size_buckets(settings.batch_max_events), registry=r)
        self.batch_duration = Histogram(
            "celrec_trainer_batch_duration_seconds",
            "Time to process one micro-batch (decode, dedup, learn)",
            buckets=BATCH_SECONDS_BUCKETS, registry=r)
        self.events_per_second = Gauge(
            "celrec_trainer_events_applied_per_second",
            f"Events applied per second over the last {EVENT_RATE_WINDOW_S:.0f} s", registry=r)
        self.consumer_lag = Gauge(
            "celrec_trainer_consumer_lag_events",
            "Events in the log not yet read by the trainer, per partition",
            ["topic", "partition"], registry=r)
        self.online_auc = Gauge(
            "celrec_trainer_online_auc",
            "Progressive AUC (predicted before learning) over a sliding window of events",
            ["scenario"], registry=r)
        self.online_logloss = Gauge(
            "celrec_trainer_online_logloss",
            "Progressive log loss (predicted before learning) over a sliding window of events",
            ["scenario"], registry=r)
        self.online_window = Gauge(
            "celrec_trainer_online_window_events",
            "Events in the sliding window of the online AUC and log loss",
            ["scenario"], registry=r)
        self.clusters = Gauge(
            "celrec_trainer_clusters", "Live clusters (embedding rows) per side", ["side"],
            registry=r)
        self.retrieval_weight = Gauge(
            "celrec_trainer_retrieval_weight",
            "Weight of the model's score against log(1 + positives) in recommendations, as "
            "the trainer last chose it (cel.retrieval; NaN for models without one)",
            registry=r)
        self.coliked_weight = Gauge(
            "celrec_trainer_coliked_weight",
            "Weight of co-liked items in recommendations, as the trainer last chose it "
            "(cel.covisit; 0: off; NaN for models without them)", registry=r)
        self.entities = Gauge(
            "celrec_trainer_entities", "Known entities (ids) per side", ["side"], registry=r)
        self.splits = Counter(
            "celrec_trainer_cluster_splits", "Cluster splits (GPCA)", ["side"], registry=r)
        self.reassignments = Counter(
            "celrec_trainer_reassignments", "Entities moved to another cluster", ["side"],
            registry=r)
        self.splits_per_minute = Gauge(
            "celrec_trainer_cluster_splits_per_minute",
            "Cluster splits over the last minute", ["side"], registry=r)
        self.reassignments_per_minute = Gauge(
            "celrec_trainer_reassignments_per_minute",
            "Reassignments over the last minute", ["side"], registry=r)
        self._cluster_sizes = _ClusterSizes()
        r.register(self._cluster_sizes)
        self.snapshot_version = Gauge(
            "celrec_trainer_snapshot_version", "Version of the last published snapshot",
            registry=r)
        self.snapshot_published = Gauge(
            "celrec_trainer_snapshot_published_timestamp_seconds",
            "Unix time the last snapshot was published", registry=r)
        self.snapshot_age = Gauge(
            "celrec_trainer_snapshot_age_seconds", "Seconds since the last snapshot was published",
            registry=r)
        self.snapshot_age.set_function(self._snapshot_age)
        self.publish_duration = Histogram(
            "celrec_trainer_publish_duration_seconds",
            "Time to publish a snapshot or a delta to the state store", ["kind"],
            buckets=PUBLISH_SECONDS_BUCKETS, registry=r)
        self.state_bytes = Gauge(
            "celrec_trainer_state_store_model_bytes",
            "State-store (Redis) memory used by the current snapshot's keys", registry=r)
        self.state_bytes_per_entity = Gauge(
            "celrec_trainer_state_store_bytes_per_entity",
            "State-store bytes per entity (assignment + id) at the last snapshot", ["side"],
            registry=r)
        self.checkpoints = Counter(
            "celrec_trainer_checkpoints", "Checkpoints stored", registry=r)
        self.device_info = Gauge(
            "celrec_trainer_device_info", "Torch device the trainer learns on (value 1)",
            ["device", "type"], registry=r)
        self.model_memory = Gauge(
            "celrec_trainer_model_memory_bytes", "Bytes of the model's tensors", ["device"],
            registry=r)
        self.device_memory = Gauge(
            "celrec_trainer_device_memory_allocated_bytes",
            "Memory allocated on the device (CUDA allocator; the model's tensors on CPU)",
            ["device"], registry=r)
        self._published_at: float | None = None
        self._last_sample = self._last_stats = float("-inf")
        self._history: deque[tuple[float, float, dict[str, float], dict[str, float]]] = deque()
        self._batches: deque[tuple[float, int, float]] = deque()  # (time, records, seconds)
        self._lag: dict[str, int] = {}
        # Plain copies of what the rates and the summary need (not read back from Prometheus).
        self._applied = 0
        self._splits = dict.fromkeys(SIDES, 0.0)
        self._moves = dict.fromkeys(SIDES, 0.0)
        self._rates: dict[str, dict[str, float]] = {"splits": {}, "moves": {}}
        self._events_per_second = 0.0
        self._clusters: dict[str, int] = {}
        self._entities: dict[str, int] = {}
        self._snapshot_version = 0

    # -- hooks of the stream trainer -------------------------------------------------
    def before_learn(self, learner: Learner, events: list[Event]) -> None:
        if len(events) > PROGRESSIVE_SAMPLE:
            events = events[:: -(-len(events) // PROGRESSIVE_SAMPLE)]
        try:
            predicted = learner.predict_before_learn(events)
        except Exception:  # metrics must never stop learning
            log.exception("progressive evaluation failed")
            return
        if predicted is not None:
            scores, labels = predicted
            self.evaluator.add([e.scenario for e in events], scores, labels)

    def after_learn(self, stats: LearnStats) -> None:
        for side in SIDES:
            splits = stats.extra.get(f"splits_{side}", 0.0)
            moves = stats.extra.get(f"reassigned_{side}", 0.0)
            self.splits.labels(side=side).inc(splits)
            self.reassignments.labels(side=side).inc(moves)
            self._splits[side] += splits
            self._moves[side] += moves

    def observe_batch(self, report: BatchReport) -> None:
        self.events_applied.inc(report.applied)
        self._applied += report.applied
        self.events_duplicate.inc(report.duplicates)
        self.events_dead_lettered.inc(report.dead_lettered)
        self.events_skipped.inc(report.skipped)
        if report.records:
            self.batch_size.observe(report.records)
            self.batch_duration.observe(report.seconds)
            self._batches.append((time.monotonic(), report.records, report.seconds))

    def observe_publish(self, kind: str | None, seconds: float, publisher: Publisher) -> None:
        if kind is None:
            return
        self.publish_duration.labels(kind=kind).observe(seconds)
        if kind == "snapshot":
            self._published_at = time.time()
            self._snapshot_version = publisher.version
            self.snapshot_version.set(publisher.version)
            self.snapshot_published.set(self._published_at)
            if publisher.snapshot_bytes is not None:
                self.state_bytes.set(publisher.snapshot_bytes)
            per_side = {"user": publisher.bytes_per_user, "item": publisher.bytes_per_item}
            for side, per_entity in per_side.items():
                if per_entity is not None:
                    self.state_bytes_per_entity.labels(side=side).set(per_entity)

    def observe_checkpoint(self) -> None:
        self.checkpoints.inc()

    def maybe_sample(self, trainer: ObservedTrainer, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last_sample < SAMPLE_INTERVAL_S:
            return
        self._last_sample = now
        try:
            self._sample(trainer, now)
        except BackendUnavailable as exc:
            log.debug("metrics sample incomplete: %s", exc)
        except Exception:
            log.exception("metrics sample failed")

    # -- sampling ------------------------------------------------------------------------
    def _snapshot_age(self) -> float:
        return float("nan") if self._published_at is None else time.time() - self._published_at

    def _sample(self, trainer: ObservedTrainer, now: float) -> None:
        self._sample_model(trainer.learner)
        self._sample_rates(now)
        for name, score in self.evaluator.summary().items():
            self.online_window.labels(scenario=name).set(score.events)
            self.online_auc.labels(scenario=name).set(
                float("nan") if score.auc is None else score.auc)
            self.online_logloss.labels(scenario=name).set(
                float("nan") if score.logloss is None else score.logloss)
        self._lag = trainer.lag()  # last: it may need the broker
        for name, lag in self._lag.items():
            topic, _, partition = name.rpartition(":")
            self.consumer_lag.labels(topic=topic, partition=partition).set(max(0, lag))
        if now - self._last_stats >= STATS_INTERVAL_S:
            self._last_stats = now
            trainer.store.put({trainer_stats_key(trainer.settings.state_prefix):
                               self.stats(trainer).model_dump_json().encode()},
                              ttl_s=STATS_TTL_S)

    def _sample_model(self, learner: Learner) -> None:
        device = learner.device_name()
        self.device_info.labels(device=device, type=device.split(":")[0]).set(1)
        self.model_memory.labels(device=device).set(learner.memory_bytes())
        if device.startswith("cuda"):
            self.device_memory.labels(device=device).set(torch.cuda.memory_allocated(device))
        else:
            self.device_memory.labels(device=device).set(learner.memory_bytes())
        weight = learner.retrieval_weight
        self.retrieval_weight.set(float("nan") if weight is None else weight)
        weight = learner.coliked_weight
        self.coliked_weight.set(float("nan") if weight is None else weight)
        for side in SIDES:
            sizes = learner.cluster_sizes(side)
            self._cluster_sizes.sizes[side] = sizes
            self._clusters[side] = int((sizes > 0).sum())
            self.clusters.labels(side=side).set(self._clusters[side])
            self._entities[side] = learner.entities(side)
            self.entities.labels(side=side).set(self._entities[side])

    def _sample_rates(self, now: float) -> None:
        splits, moves = dict(self._splits), dict(self._moves)
        self._history.append((now, self._applied, splits, moves))
        while now - self._history[0][0] > RATE_WINDOW_S:
            self._history.popleft()
        while self._batches and now - self._batches[0][0] > EVENT_RATE_WINDOW_S:
            self._batches.popleft()
        recent = [h for h in self._history if now - h[0] <= EVENT_RATE_WINDOW_S]
        first, last = recent[0], recent[-1]
        elapsed = last[0] - first[0]
        self._events_per_second = (last[1] - first[1]) / elapsed if elapsed > 0 else 0.0
        self.events_per_second.set(self._events_per_second)
        oldest = self._history[0]
        span_min = max(now - oldest[0], SAMPLE_INTERVAL_S) / 60.0
        for side in SIDES:
            self._rates["splits"][side] = (splits[side] - oldest[2][side]) / span_min
            self._rates["moves"][side] = (moves[side] - oldest[3][side]) / span_min
            self.splits_per_minute.labels(side=side).set(self._rates["splits"][side])
            self.reassignments_per_minute.labels(side=side).set(self._rates["moves"][side])

    def stats(self, trainer: ObservedTrainer) -> TrainerStats:
        """The summary the dashboard reads from the state store."""
        learner = trainer.learner
        batches = list(self._batches)
        return TrainerStats(
            updated_at=time.time(),
            device=learner.device_name(),
            events_applied=trainer.progress.events_applied,
            events_per_second=self._events_per_second,
            dead_lettered=trainer.progress.dead_lettered,
            lag=dict(self._lag),
            batch_events=float(np.mean([b[1] for b in batches])) if batches else None,
            batch_seconds=float(np.mean([b[2] for b in batches])) if batches else None,
            online=self.evaluator.summary(),
            clusters=dict(self._clusters),
            entities=dict(self._entities),
            splits_per_minute=dict(self._rates["splits"]),
            reassignments_per_minute=dict(self._rates["moves"]),
            snapshot_version=self._snapshot_version,
            snapshot_published_at=self._published_at,
            state_store_model_bytes=(trainer.publisher.snapshot_bytes
                                     if trainer.publisher is not None else None),
            model_memory_bytes=learner.memory_bytes(),
        )
