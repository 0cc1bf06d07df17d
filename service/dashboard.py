"""``GET /dashboard`` (a self-contained page) and ``GET /dashboard/data`` (its JSON).

A sampler thread records a point every ``interval_s`` (ingestion and training rates,
online AUC, freshness and latency percentiles, clusters, model version and age) into a
bounded history, so a page opened now shows the last minutes at once. The trainer's side
(rates, AUC, lag) comes from the summary it writes to the state store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from prometheus_client import CollectorRegistry

from celrec.backends import BackendUnavailable
from celrec.metrics import TrainerStats, histogram_quantile, trainer_stats_key

if TYPE_CHECKING:
    from service.serving_model import ServingModel
    from service.state import ServiceState

log = logging.getLogger(__name__)

HISTORY_POINTS = 300  # 10 minutes at the default interval
LARGEST_CLUSTERS = 8
MEMBERS_SHOWN = 5
# The dashboard's own polling and scrapes would swamp the latency of the API proper.
_LATENCY_EXCLUDED = ("/dashboard", "/dashboard/data", "/metrics")


def _read_histogram(registry: CollectorRegistry, name: str, exclude_routes: tuple[str, ...] = ()
                    ) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name`` summed over its label sets."""
    buckets: dict[float, float] = {}
    for metric in registry.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if not sample.name.endswith("_bucket"):
                continue
            if sample.labels.get("route") in exclude_routes:
                continue
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def _read_counter(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for m in registry.collect() if m.name == name for s in m.samples
               if s.name == f"{name}_total")


def _window_quantiles(now: dict[float, float], before: dict[float, float],
                      qs: tuple[float, ...]) -> list[float | None]:
    bounds = sorted(now)
    counts = [now[b] - before.get(b, 0.0) for b in bounds]
    return [histogram_quantile(q, bounds, counts) for q in qs]


def cluster_size_histogram(counts: np.ndarray) -> list[dict[str, Any]]:
    """Live clusters binned by size in powers of two: 1, 2-3, 4-7, ..."""
    live = counts[counts > 0]
    if not len(live):
        return []
    top = int(np.log2(live.max())) + 1
    bins = np.bincount(np.log2(live).astype(int), minlength=top)
    out = []
    for k, n in enumerate(bins):
        low, high = 2 ** k, 2 ** (k + 1) - 1
        out.append({"label": str(low) if low == high else f"{low}-{high}", "clusters": int(n)})
    return out


def largest_clusters(model: ServingModel, side: str, k: int = LARGEST_CLUSTERS,
                     shown: int = MEMBERS_SHOWN) -> list[dict[str, Any]]:
    """The ``k`` biggest clusters of ``side`` with a few member ids (items: most popular)."""
    return [{"side": side, "cluster": row, "size": size, "members": members}
            for row, size, members in model.largest_clusters(side, k, shown)]


class DashboardHistory:
    def __init__(self, state: ServiceState, interval_s: float = 2.0,
                 points: int = HISTORY_POINTS):
        self.state, self.interval_s = state, interval_s
        self.points: deque[dict[str, Any]] = deque(maxlen=points)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.trainer: TrainerStats | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="celrec-dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # the dashboard must never take the service down
                log.exception("dashboard sample failed")
            self._stop.wait(self.interval_s)

    def _read_trainer(self) -> TrainerStats | None:
        key = trainer_stats_key(self.state.settings.state_prefix)
        try:
            raw = self.state.store.get(key)
        except BackendUnavailable:
            return self.trainer  # keep the last one while the store is away
        return TrainerStats.model_validate_json(raw) if raw else None

    def sample(self) -> dict[str, Any]:
        registry = self.state.metrics.registry
        now = time.time()
        raw = {
            "t": now,
            "accepted": _read_counter(registry, "celrec_events_accepted"),
            "latency": _read_histogram(registry, "celrec_http_request_duration_seconds",
                                       _LATENCY_EXCLUDED),
            "freshness": _read_histogram(registry, "celrec_freshness_seconds"),
        }
        trainer = self._read_trainer()
        follower = self.state.follower
        model = follower.model if follower is not None else None
        point: dict[str, Any] = {"t": now, "accepted_per_s": None, "latency": {},
                                 "freshness": {}}
        last = self._last
        if last is not None and now > last["t"]:
            point["accepted_per_s"] = (raw["accepted"] - last["accepted"]) / (now - last["t"])
            p50, p95, p99 = _window_quantiles(raw["latency"], last["latency"], (.5, .95, .99))
            point["latency"] = {"p50": p50, "p95": p95, "p99": p99}
            f50, f95 = _window_quantiles(raw["freshness"], last["freshness"], (.5, .95))
            point["freshness"] = {"p50": f50, "p95": f95}
        if trainer is not None:
            point["applied_per_s"] = trainer.events_per_second
            point["auc"] = {k: v.auc for k, v in trainer.online.items()}
            point["logloss"] = {k: v.logloss for k, v in trainer.online.items()}
            point["lag"] = sum(trainer.lag.values())
        if model is not None:
            info = model.info()
            point["clusters"] = {s: info.sides[s].clusters for s in ("user", "item")}
            point["model_version"] = info.version
            point["model_age_s"] = max(0.0, now - info.created_at)
        with self._lock:
            self._last, self.trainer = raw, trainer
            if last is not None:
                self.points.append(point)
        return point

    def data(self) -> dict[str, Any]:
        """Everything the page draws: the history plus the current model's details."""
        with self._lock:
            history, trainer = list(self.points), self.trainer
        follower = self.state.follower
        model = follower.model if follower is not None else None
        current: dict[str, Any] = {"model": None, "trainer": None, "cluster_sizes": {},
                                   "largest_clusters": []}
        if trainer is not None:
            current["trainer"] = trainer.model_dump()
        if model is not None:
            info = model.info()
            current["model"] = {
                "version": info.version, "seq": info.seq, "created_at": info.created_at,
                "age_s": max(0.0, time.time() - info.created_at),
                "events_applied": info.events_applied, "memory_bytes": info.memory_bytes,
                "scenarios": info.scenarios,
                "sides": {s: {"entities": v.entities, "clusters": v.clusters}
                          for s, v in info.sides.items()},
            }
            for side in ("user", "item"):
                current["cluster_sizes"][side] = cluster_size_histogram(model.cluster_sizes(side))
                current["largest_clusters"] += largest_clusters(model, side)
        return {"now": time.time(), "interval_s": self.interval_s, "history": history,
                "current": current}


PAGE = Path(__file__).with_name("static") / "dashboard.html"


def _page() -> str:
    return PAGE.read_text("utf-8")


def build_router(history: DashboardHistory) -> APIRouter:
    router = APIRouter()
    page = _page()

    @router.get("/dashboard", response_class=HTMLResponse, summary="Operations dashboard",
                include_in_schema=True)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get("/dashboard/data", summary="The dashboard's data (history and current model)")
    async def dashboard_data() -> dict[str, Any]:
        return await run_in_threadpool(history.data)

    return router
