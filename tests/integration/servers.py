"""A celrec stack on real loopback ports (uvicorn + the trainer's /metrics), for tests that
point outside programs (a browser, Prometheus) at it, plus a bounded synthetic feeder."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from celrec.backends import EventLog, StateStore
from celrec.metrics import MetricsServer
from celrec.settings import Settings
from service.app import build_state, create_app
from trainer.main import build_trainer
from trainer.stream import StreamTrainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base_url: str
    trainer_metrics_url: str
    trainer: StreamTrainer


@contextmanager
def served_stack(settings: Settings, event_log: EventLog, store: StateStore,
                 dashboard_interval_s: float = 0.5) -> Iterator[Served]:
    trainer = build_trainer(settings, event_log, store)
    assert trainer.metrics is not None
    metrics_server = MetricsServer(trainer.metrics.registry, "127.0.0.1", 0)
    stop = threading.Event()
    trainer_thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
    trainer_thread.start()
    app = create_app(build_state(settings, event_log, store))
    app.state.dashboard.interval_s = dashboard_interval_s
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    server_thread = threading.Thread(target=server.run, daemon=True)
    server_thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            time.sleep(0.05)
        yield Served(base, f"http://127.0.0.1:{metrics_server.port}/metrics", trainer)
    finally:
        server.should_exit = True
        server_thread.join(timeout=10)
        stop.set()
        trainer_thread.join(timeout=30)
        trainer.close()
        metrics_server.close()


def planted_events(rng: random.Random, n: int, groups: int = 3, users: int = 90,
                   items: int = 60) -> list[dict]:
    """Users and items in planted groups: a click iff their groups match (learnable)."""
    events = []
    for k in range(n):
        user, item = rng.randrange(users), rng.randrange(items)
        events.append({"user_id": f"user-{user}", "item_id": f"item-{item}",
                       "value": int(user % groups == item % groups),
                       "scenario": "web" if k % 2 else "app"})
    return events


@contextmanager
def feeding(base_url: str, batches: int = 40, size: int = 150, pause_s: float = 0.15
            ) -> Iterator[threading.Event]:
    """Post ``batches`` batches in the background (bounded); the event is set when done."""
    done = threading.Event()
    rng = random.Random(7)

    def feed() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            for _ in range(batches):
                if stopped.is_set():
                    break
                client.post("/events", json=planted_events(rng, size))
                time.sleep(pause_s)
        done.set()

    stopped = threading.Event()
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stopped.set()
        thread.join(timeout=30)
