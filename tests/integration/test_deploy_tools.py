"""Deployment files checked with the real tools, without a Docker engine: the compose file
validates with the compose CLI, Prometheus' config with promtool. A missing tool fails the
test (``make system-deps`` installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
INSTALL_HINT = "run `make system-deps` (scripts/install-system-deps.sh)"


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(f"neither `docker compose` nor `docker-compose` is installed: {INSTALL_HINT}",
                pytrace=False)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.integration
def test_compose_file_validates_with_the_compose_cli(profile):
    env = {**os.environ, "COMPOSE_PROFILES": profile}
    result = subprocess.run([*compose_command(), "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_prometheus_config_passes_promtool():
    result = subprocess.run([tool("promtool"), "check", "config", str(DEPLOY / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
