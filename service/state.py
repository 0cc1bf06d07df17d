"""What the service holds for its lifetime: settings, backend handles, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from celrec.backends import EventLog, EventProducer, StateStore
from celrec.settings import Settings


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.events_accepted = Counter(
            "celrec_events_accepted", "Events durably handed to the event log",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "celrec_events_rejected", "Events refused at ingestion", ["reason"],
            registry=self.registry,
        )


@dataclass
class ServiceState:
    settings: Settings
    event_log: EventLog
    store: StateStore
    producer: EventProducer
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)

    def metrics_accepted(self, count: int) -> None:
        self.metrics.events_accepted.inc(count)

    def metrics_rejected(self, count: int, reason: str = "log_unavailable") -> None:
        self.metrics.events_rejected.labels(reason=reason).inc(count)
