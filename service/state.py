"""What the service holds for its lifetime: settings, backend handles, metrics, the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from celrec.backends import EventLog, EventProducer, StateStore
from celrec.settings import Settings
from schemas.state import StateKeys
from service.follower import ModelFollower
from service.registry import ServiceMetrics


@dataclass
class ServiceState:
    settings: Settings
    event_log: EventLog
    store: StateStore
    producer: EventProducer
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    follower: ModelFollower | None = None  # built from the store unless given

    def __post_init__(self) -> None:
        if self.follower is None:
            self.follower = ModelFollower(self.store, StateKeys(self.settings.state_prefix),
                                          metrics=self.metrics)

    def metrics_accepted(self, count: int) -> None:
        self.metrics.events_accepted.inc(count)

    def metrics_rejected(self, count: int, reason: str = "log_unavailable") -> None:
        self.metrics.events_rejected.labels(reason=reason).inc(count)
