"""What the trainer shares with the service's dashboard, and small metric helpers.

The trainer writes a :class:`TrainerStats` summary to the state store every couple of
seconds (key :func:`trainer_stats_key`, with a TTL so a dead trainer's stats vanish); the
service's dashboard reads it. Trainer and service still never import each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from pydantic import BaseModel, Field

from schemas.state import StateKeys

STATS_TTL_S = 30.0


def trainer_stats_key(prefix: str) -> str:
    return StateKeys(prefix).trainer_stats


class OnlineScore(BaseModel):
    auc: float | None = Field(None, description="progressive AUC over the sliding window")
    logloss: float | None = Field(None, description="progressive log loss over the window")
    events: int = Field(0, description="events in the window")


class TrainerStats(BaseModel):
    updated_at: float
    device: str
    events_applied: int
    events_per_second: float
    dead_lettered: int = 0
    lag: dict[str, int] = Field(default_factory=dict, description="topic:partition -> events")
    batch_events: float | None = Field(None, description="mean micro-batch size, last window")
    batch_seconds: float | None = Field(None, description="mean micro-batch time, last window")
    online: dict[str, OnlineScore] = Field(default_factory=dict, description="per scenario")
    clusters: dict[str, int] = Field(default_factory=dict)
    entities: dict[str, int] = Field(default_factory=dict)
    splits_per_minute: dict[str, float] = Field(default_factory=dict)
    reassignments_per_minute: dict[str, float] = Field(default_factory=dict)
    snapshot_version: int = 0
    snapshot_published_at: float | None = None
    state_store_model_bytes: int | None = None
    model_memory_bytes: int = 0


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Prometheus-style quantile from cumulative bucket counts (``bounds`` end with +Inf):
    linear interpolation inside the bucket; None when there are no observations."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the last finite bucket: its bound is all we know
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


class MetricsServer:
    """A registry served at ``http://host:port/metrics`` from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int):
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


__all__ = ["MetricsServer", "OnlineScore", "STATS_TTL_S", "TrainerStats", "histogram_quantile",
           "trainer_stats_key"]
