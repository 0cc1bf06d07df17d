"""A real Prometheus (Debian's binary, on loopback) scrapes a running service and trainer
with the scrape jobs of deploy/prometheus.yml, and its HTTP API returns celrec series."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from celrec.backends import make_event_log, make_state_store
from tests.integration.servers import feeding, free_port, served_stack

DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus.yml"
JOBS = {"celrec-service": "service", "celrec-trainer": "trainer"}


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus is not installed: run `make system-deps` "
                    "(scripts/install-system-deps.sh installs the Debian package)", pytrace=False)
    return path


def loopback_config(targets: dict[str, str]) -> dict:
    """deploy/prometheus.yml with each job pointed at a loopback host:port, scraping fast."""
    config = yaml.safe_load(DEPLOY_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    assert {job["job_name"] for job in config["scrape_configs"]} == set(JOBS)
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [targets[job["job_name"]]]
    return config


def query(client: httpx.Client, promql: str) -> list[dict]:
    response = client.get("/api/v1/query", params={"query": promql})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.integration
def test_real_prometheus_scrapes_celrec_series_from_service_and_trainer(make_settings, tmp_path):
    binary = prometheus_binary()
    settings = make_settings(batch_max_events=128, batch_max_wait_ms=50, publish_interval_ms=100,
                             user_clusters=16, item_clusters=16, entity_state_capacity=2000)
    event_log, store = make_event_log(settings), make_state_store(settings)
    with served_stack(settings, event_log, store) as served, \
            feeding(served.base_url, batches=10, size=100, pause_s=0.1) as fed:
        trainer = urlparse(served.trainer_metrics_url)
        service = urlparse(served.base_url)
        config = loopback_config({"celrec-service": service.netloc,
                                  "celrec-trainer": trainer.netloc})
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
            deadline = time.monotonic() + 45
            counts: dict[str, float] = {}
            while time.monotonic() < deadline:
                assert process.poll() is None, f"prometheus exited: {process.stderr.read()}"
                try:
                    # /api/v1/query answers 503 until the TSDB has started: wait for ready
                    if client.get("/-/ready").status_code != 200:
                        time.sleep(0.3)
                        continue
                    rows = query(client, 'count by (job) ({__name__=~"celrec_.+"})')
                    applied = query(client, "celrec_trainer_events_applied_total")
                except httpx.TransportError:
                    time.sleep(0.3)  # still starting
                    continue
                counts = {r["metric"]["job"]: float(r["value"][1]) for r in rows}
                if (set(counts) == set(JOBS) and fed.is_set() and applied
                        and float(applied[0]["value"][1]) > 0):
                    break
                time.sleep(0.5)
            assert set(counts) == set(JOBS), f"celrec series per job: {counts}"
            up = {r["metric"]["job"]: r["value"][1] for r in query(client, "up")}
            assert up == dict.fromkeys(JOBS, "1")
            accepted = query(client, "celrec_events_accepted_total")
            assert accepted and accepted[0]["metric"]["component"] == "service"
            assert float(accepted[0]["value"][1]) > 0
            lag = query(client, "celrec_trainer_consumer_lag_events")
            assert lag and {r["metric"]["component"] for r in lag} == {"trainer"}
            latency = query(client, 'celrec_http_request_duration_seconds_count{route="/events"}')
            assert latency and float(latency[0]["value"][1]) > 0
            client.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    event_log.close()
    store.close()
