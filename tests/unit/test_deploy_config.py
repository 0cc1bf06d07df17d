"""Deployment files read as data, no external tool: the compose stack, the Dockerfile, the
Prometheus scrape targets, and Grafana dashboard queries only metrics the code exports.
(``tests/integration/test_deploy_tools.py`` runs the compose CLI and promtool on them.)"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from service.app import build_state, create_app
from trainer.metrics import TrainerMetrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "celrec.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created", "_gcount", "_gsum")


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_stack_is_complete_healthy_and_secret_free():
    services = compose_file()["services"]
    assert {"kafka", "redis", "trainer", "trainer-gpu", "service", "prometheus",
            "grafana"} <= set(services)
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] in ("service_healthy", "service_started")
    assert services["service"]["ports"] == ["8000:8000"]
    assert services["trainer-gpu"]["profiles"] == ["gpu"]
    gpu = services["trainer-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert services["trainer-gpu"]["environment"]["CELREC_DEVICE"] == "cuda"
    named = set(compose_file()["volumes"])
    assert {"kafka-data", "redis-data", "prometheus-data", "grafana-data"} <= named
    text = COMPOSE.read_text()
    for line in text.splitlines():  # a secret may only come from the environment
        if re.search(r"(PASSWORD|SECRET|TOKEN|API_KEYS)\w*:", line):
            assert re.search(r":\s*\$\{\w+(:-)?\}\s*$", line) or "DISABLE" in line, line


def test_dockerfile_is_multi_stage_non_root_slim_with_a_cuda_switch():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert re.search(r"ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu", text)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_prometheus_scrapes_the_service_and_the_trainer():
    jobs = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in jobs for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"service:8000", "trainer:9108"}


def exported_metric_names() -> set[str]:
    settings = Settings(trainer_metrics_port=0)
    state = build_state(settings, EmbeddedEventLog(), EmbeddedStateStore())
    create_app(state)  # installs the request, process and model metrics
    names = set()
    for registry in (state.metrics.registry, TrainerMetrics(settings).registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def test_grafana_dashboard_queries_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b((?:celrec|process)_[a-z0-9_]+)", e)}
    assert len(used) >= 15
    missing = sorted(used - exported_metric_names())
    assert missing == [], f"the Grafana dashboard queries metrics nobody exports: {missing}"


def test_grafana_provisioning_matches_the_dashboard():
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {sources[0]["uid"]} and sources[0]["url"] == "http://prometheus:9090"
    # the committed JSON is what the generator writes
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        from build_dashboard import build
    finally:
        sys.path.pop(0)
    assert build() == dashboard
