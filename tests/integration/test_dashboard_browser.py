"""The dashboard in a real headless browser (Debian ``chromium``) against a fed service:
the charts render with data, and a screenshot is saved under ``artifacts/``."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from celrec.backends import make_event_log, make_state_store
from tests.integration.servers import feeding, served_stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
SCREENSHOT = ARTIFACTS / "dashboard.png"
CHART_IDS = ("c-rate", "c-auc", "c-fresh", "c-lat", "c-clusters")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run `make system-deps` "
                    "(scripts/install-system-deps.sh installs the Debian package)", pytrace=False)
    return path


def run_chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--window-size=1400,1000", "--virtual-time-budget=6000", *extra, url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s}s")


@pytest.mark.integration
def test_dashboard_renders_charts_with_data_in_headless_chromium(make_settings, tmp_path):
    settings = make_settings(batch_max_events=256, batch_max_wait_ms=50, publish_interval_ms=100,
                             snapshot_interval_s=2.0, user_clusters=16, item_clusters=16,
                             entity_state_capacity=2000)
    event_log, store = make_event_log(settings), make_state_store(settings)
    with served_stack(settings, event_log, store) as served, \
            feeding(served.base_url, batches=40) as fed:
        client = httpx.Client(base_url=served.base_url, timeout=10)

        def ready() -> bool:
            data = client.get("/dashboard/data").json()
            history = data["history"]
            return (data["current"]["trainer"] is not None
                    and bool(data["current"]["largest_clusters"])
                    and sum(1 for p in history if p.get("auc")) >= 3
                    and sum(1 for p in history if p["freshness"].get("p50")) >= 2)

        wait_until(ready, 40, "the dashboard data did not fill")
        wait_until(fed.is_set, 30, "the feeder did not finish")
        page = client.get("/dashboard")
        assert page.status_code == 200
        # Self-contained: nothing is loaded from another origin.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)

        dom = run_chromium(f"{served.base_url}/dashboard", tmp_path / "profile-dom",
                           "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        updates = re.search(r'<body[^>]*data-updates="(\d+)"', html)
        assert updates and int(updates.group(1)) >= 1, "the page never rendered its data"
        for chart in CHART_IDS:
            points = re.search(rf'<svg id="{chart}"[^>]*data-points="(\d+)"', html)
            assert points and int(points.group(1)) >= 2, f"chart {chart} has no data"
            assert re.search(rf'<svg id="{chart}".*?<path [^>]*class="series"', html, re.S)
        bars = re.search(r'<svg id="c-sizes"[^>]*data-bars="(\d+)"', html)
        assert bars and int(bars.group(1)) >= 1, "the cluster-size histogram is empty"
        assert "<table id=\"largest\">" in html and 'class="chip"' in html
        assert re.search(r'id="k-version">v\d+#\d+<', html), "no model version shown"

        ARTIFACTS.mkdir(exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        shot = run_chromium(f"{served.base_url}/dashboard", tmp_path / "profile-shot",
                            f"--screenshot={SCREENSHOT}")
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert SCREENSHOT.stat().st_size > 20_000  # a blank page compresses to a few KB
        client.close()
    event_log.close()
    store.close()
