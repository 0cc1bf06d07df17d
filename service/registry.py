"""The service's own Prometheus metrics, in one registry (request metrics: service.metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Event accepted -> visible to scoring; the target is about a second.
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.events_accepted = Counter(
            "celrec_events_accepted", "Events durably handed to the event log",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "celrec_events_rejected",
            "Events refused at ingestion by reason (an unreadable request counts once)",
            ["reason"], registry=self.registry,
        )
        self.freshness = Histogram(
            "celrec_freshness_seconds",
            "Seconds from an event's acceptance to its effect being visible to scoring",
            buckets=FRESHNESS_BUCKETS, registry=self.registry,
        )
        self.model_version = Gauge(
            "celrec_model_version", "Model version being served", registry=self.registry,
        )
        self.model_age = Gauge(  # its value is computed by the model follower
            "celrec_model_age_seconds", "Seconds since the served model state was published",
            registry=self.registry,
        )
        self.model_deltas_applied = Counter(
            "celrec_model_deltas_applied", "Model deltas applied by the service",
            registry=self.registry,
        )
        self.model_reloads = Counter(
            "celrec_model_reloads", "Model snapshots loaded by the service",
            registry=self.registry,
        )
        self.model_sync_errors = Counter(
            "celrec_model_sync_errors", "Failures while following the published model",
            ["kind"], registry=self.registry,
        )
