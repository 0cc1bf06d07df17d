"""Writes deploy/grafana/dashboards/celrec.json, the Grafana mirror of GET /dashboard.

Run ``python deploy/grafana/build_dashboard.py`` after changing a panel; a unit test
checks that every metric the JSON queries is one the code exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "celrec.json"
DATASOURCE = {"type": "prometheus", "uid": "celrec-prometheus"}
API_ROUTES = 'route!~"/metrics|/dashboard.*"'


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(title: str, kind: str, grid: tuple[int, int, int, int], targets: list[tuple[str, str]],
          unit: str = "short", description: str = "", **field: Any) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [target(e, legend, chr(ord("A") + k)) for k, (e, legend) in
                    enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit, **field}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def quantile(q: float, metric: str, selector: str = "") -> str:
    return (f"histogram_quantile({q}, sum by (le) "
            f"(rate({metric}_bucket{{{selector}}}[1m])))")


def build() -> dict[str, Any]:
    panels = [
        panel("Model version", "stat", (0, 0, 4, 4), [("celrec_model_version", "served")]),
        panel("Model age", "stat", (4, 0, 4, 4), [("celrec_model_age_seconds", "age")], "s"),
        panel("Events applied / s", "stat", (8, 0, 4, 4),
              [("celrec_trainer_events_applied_per_second", "applied")], "ops"),
        panel("Consumer lag", "stat", (12, 0, 4, 4),
              [("sum(celrec_trainer_consumer_lag_events)", "events")]),
        panel("Model in Redis", "stat", (16, 0, 4, 4),
              [("celrec_trainer_state_store_model_bytes", "bytes")], "bytes"),
        panel("Trainer device", "stat", (20, 0, 4, 4),
              [("celrec_trainer_device_info", "{{device}}")],
              description="1 = the torch device the trainer learns on"),
        panel("Event rate", "timeseries", (0, 4, 8, 8), [
            ("sum(rate(celrec_events_accepted_total[1m]))", "accepted by the API /s"),
            ("celrec_trainer_events_applied_per_second", "applied by the trainer /s"),
            ("sum(rate(celrec_events_rejected_total[1m]))", "rejected /s"),
            ("rate(celrec_trainer_events_dead_lettered_total[1m])", "dead-lettered /s"),
        ], "ops"),
        panel("Online AUC (progressive, sliding window)", "timeseries", (8, 4, 8, 8),
              [("celrec_trainer_online_auc", "AUC {{scenario}}"),
               ("celrec_trainer_online_logloss", "log loss {{scenario}}")]),
        panel("Freshness: event accepted → visible to scoring", "timeseries", (16, 4, 8, 8), [
            (quantile(0.5, "celrec_freshness_seconds"), "p50"),
            (quantile(0.95, "celrec_freshness_seconds"), "p95"),
        ], "s"),
        panel("API latency", "timeseries", (0, 12, 8, 8), [
            (quantile(0.5, "celrec_http_request_duration_seconds", API_ROUTES), "p50"),
            (quantile(0.95, "celrec_http_request_duration_seconds", API_ROUTES), "p95"),
            (quantile(0.99, "celrec_http_request_duration_seconds", API_ROUTES), "p99"),
        ], "s"),
        panel("Clusters over time", "timeseries", (8, 12, 8, 8), [
            ("celrec_trainer_clusters", "{{side}} clusters"),
            ("celrec_trainer_cluster_splits_per_minute", "{{side}} splits/min"),
        ]),
        panel("Cluster sizes (clusters with at most N members)", "bargauge", (16, 12, 8, 8),
              [("celrec_trainer_cluster_size_entities_bucket", "{{side}} ≤ {{le}}")],
              description="Gauge histogram of live cluster sizes per side"),
        panel("Reassignments per minute", "timeseries", (0, 20, 8, 7),
              [("celrec_trainer_reassignments_per_minute", "{{side}}")]),
        panel("Micro-batches", "timeseries", (8, 20, 8, 7), [
            ("rate(celrec_trainer_batch_size_events_sum[1m]) / "
             "rate(celrec_trainer_batch_size_events_count[1m])", "events per batch"),
            ("rate(celrec_trainer_batch_duration_seconds_sum[1m]) / "
             "rate(celrec_trainer_batch_duration_seconds_count[1m])", "seconds per batch"),
        ]),
        panel("Memory", "timeseries", (16, 20, 8, 7), [
            ("process_resident_memory_bytes", "{{job}} RSS"),
            ("celrec_trainer_device_memory_allocated_bytes", "trainer {{device}}"),
            ("celrec_model_memory_bytes", "serving model"),
        ], "bytes"),
        {"type": "text", "title": "Largest clusters and their members",
         "gridPos": {"x": 0, "y": 27, "w": 24, "h": 3},
         "options": {"mode": "markdown", "content":
                     "Member ids are not metric labels (unbounded cardinality): the largest "
                     "clusters with a few members each are on the service's own dashboard, "
                     "[http://localhost:8000/dashboard](http://localhost:8000/dashboard)."}},
    ]
    for k, p in enumerate(panels, start=1):
        p["id"] = k
    return {
        "uid": "celrec-overview", "title": "celrec", "tags": ["celrec"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"}, "panels": panels,
        "templating": {"list": []}, "annotations": {"list": []},
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
