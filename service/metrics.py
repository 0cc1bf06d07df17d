"""Request metrics, request ids and one access-log line per request; model gauges.

A pure ASGI middleware (no per-request task or body buffering) times every request into
``celrec_http_request_duration_seconds{method, route, status}``: ``route`` is the route
template (``/recommendations/{user_id}``), never the raw path, so label values stay few.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from celrec.logs import request_id_var

if TYPE_CHECKING:
    from service.state import ServiceState

access_log = logging.getLogger("celrec.access")
log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced
UNMATCHED_ROUTE = "unmatched"
SIDES = ("user", "item")


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.duration = Histogram(
            "celrec_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            "celrec_http_requests_in_flight", "HTTP requests being served", registry=registry)
        self.errors = Counter(
            "celrec_http_unhandled_errors", "Requests that raised an unhandled exception",
            ["route"], registry=registry)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestObserver:
    """ASGI middleware: request id (``X-Request-ID`` in and out), latency histogram, one
    INFO line per request, unhandled errors logged with their context."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            status = 500
            self.metrics.errors.labels(route=_route_of(scope)).inc()
            log.exception("unhandled error serving %s %s", scope.get("method"),
                          scope.get("path"), extra={"route": _route_of(scope),
                                                    "error_type": type(exc).__name__})
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.in_flight.dec()
            route = _route_of(scope)
            self.metrics.duration.labels(method=scope.get("method", ""), route=route,
                                         status=str(status)).observe(seconds)
            access_log.log(
                logging.WARNING if status >= 500 else logging.INFO,
                "%s %s %d", scope.get("method"), scope.get("path"), status,
                extra={"method": scope.get("method"), "path": scope.get("path"),
                       "route": route, "status": status,
                       "duration_ms": round(seconds * 1000, 3),
                       "client": (scope.get("client") or ("", 0))[0]},
            )
            request_id_var.reset(token)


class ModelCollector:
    """Gauges read from the served model at scrape time: publish time, clusters and
    entities per side, memory, device."""

    def __init__(self, state: ServiceState):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        follower = self.state.follower
        model = follower.model if follower is not None else None
        published = GaugeMetricFamily(
            "celrec_model_published_timestamp_seconds",
            "Unix time the served model version (snapshot) was published")
        clusters = GaugeMetricFamily(
            "celrec_model_clusters", "Clusters with members in the served model", labels=["side"])
        entities = GaugeMetricFamily(
            "celrec_model_entities", "Known ids in the served model", labels=["side"])
        memory = GaugeMetricFamily(
            "celrec_model_memory_bytes", "Bytes the served model holds in process memory")
        device = GaugeMetricFamily(
            "celrec_service_device_info", "Device the service scores on (value 1)",
            labels=["device"])
        device.add_metric(["cpu"], 1.0)  # serving is numpy on the CPU
        if model is not None:
            info = model.info()
            published.add_metric([], info.created_at)
            memory.add_metric([], float(info.memory_bytes))
            for side in SIDES:
                clusters.add_metric([side], float(info.sides[side].clusters))
                entities.add_metric([side], float(info.sides[side].entities))
        yield from (published, clusters, entities, memory, device)


def install_operations_metrics(state: ServiceState) -> RequestMetrics:
    """Add the request, process and model metrics to the service's registry (once)."""
    existing: Any = getattr(state.metrics, "requests", None)
    if existing is not None:
        return existing
    registry = state.metrics.registry
    requests = RequestMetrics(registry)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu, fds
    registry.register(ModelCollector(state))
    state.metrics.requests = requests  # type: ignore[attr-defined]
    return requests
