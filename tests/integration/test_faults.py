"""Fault injection against real Kafka and Redis: inject the fault, count what was lost.

Every test is bounded in time, stops what it started and leaves the session's servers
running (try/finally), since the fixtures are shared by the whole session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from celrec.backends import make_event_log, make_state_store
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event
from schemas.messages import encode_event
from schemas.state import StateKeys
from service.app import build_state, create_app
from tests.stack import running_stack
from trainer.cel_learner import CELLearner
from trainer.checkpoint import DEDUP_BLOB, load_from_store
from trainer.stream import progress_of

ROOT = Path(__file__).resolve().parents[2]
ENV_FIELDS = ("event_log", "state_store", "kafka_bootstrap_servers", "kafka_api_version",
              "kafka_events_topic", "kafka_dead_letter_topic", "kafka_consumer_group",
              "redis_url", "state_prefix", "batch_max_events", "batch_max_wait_ms",
              "checkpoint_interval_s", "checkpoint_dir", "entity_state_capacity",
              "user_clusters", "item_clusters", "publish_interval_ms")


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def make_event(k: int, prefix: str = "e") -> Event:
    return Event(event_id=f"{prefix}{k}", user_id=f"u{k % 31}", item_id=f"i{k % 17}",
                 value=k % 2).completed()


def trainer_env(settings: Settings, log_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELREC_")}
    for name in ENV_FIELDS:
        value = getattr(settings, name)
        if value is not None:
            env[f"CELREC_{name.upper()}"] = str(value)
    env.update(CELREC_DEVICE="cpu", CELREC_TRAINER_METRICS_PORT="0", PYTHONPATH=str(ROOT),
               CELREC_LOG_LEVEL="INFO")
    return env


def start_trainer(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    out = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "train"], cwd=ROOT,
                            env=trainer_env(settings, log_path), stdout=out,
                            stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stored_learner(settings: Settings, store) -> CELLearner:  # type: ignore[no-untyped-def]
    """The model as the last checkpoint holds it (its own event count, tables)."""
    learner = CELLearner(settings)
    checkpoint = load_from_store(store, StateKeys(settings.state_prefix),
                                 [*learner.blob_names, DEDUP_BLOB])
    assert checkpoint is not None
    learner.restore(checkpoint.blobs)
    return learner


@pytest.mark.integration
def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(make_settings, tmp_path):
    n, extra = 3000, 300
    settings = make_settings(kafka=True, redis=True, batch_max_events=50, batch_max_wait_ms=50,
                             checkpoint_interval_s=0.3, entity_state_capacity=1000,
                             user_clusters=8, item_clusters=8, checkpoint_dir=str(tmp_path))
    event_log, store = make_event_log(settings), make_state_store(settings)
    producer = event_log.producer()
    topic, prefix = settings.kafka_events_topic, settings.state_prefix

    def send(events: list[Event]) -> None:
        now = time.time()
        producer.send(topic, [encode_event(e, now) for e in events], 10.0)

    def progress() -> TrainerProgress:
        return progress_of(store, prefix) or TrainerProgress()

    log_path = tmp_path / "trainer.log"
    trainer = start_trainer(settings, log_path)
    try:
        # the stream arrives at ~1500 events/s while the trainer works through it; it starts
        # once the trainer is up (on a loaded machine its start-up can outlast the stream)
        send([make_event(k) for k in range(100)])
        wait_until(lambda: progress().events_applied >= 100, 90, "trainer started")
        feeder = threading.Thread(target=lambda: [
            (send([make_event(k) for k in range(s, s + 100)]), time.sleep(0.066))
            for s in range(100, n, 100)], daemon=True)
        feeder.start()
        wait_until(lambda: progress().events_applied >= 600, 90, "trainer applying events")
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=10)
        at_kill = progress().events_applied
        feeder.join(timeout=30)
        assert at_kill < n, "the kill must land mid-stream"

        trainer = start_trainer(settings, log_path)
        wait_until(lambda: progress().events_applied >= n, 90, "all events applied")
        time.sleep(1.0)  # nothing more is applied later (no replays counted twice)
        assert progress().events_applied == n
        learner = stored_learner(settings, store)
        assert learner.events_applied == n  # the model's own count agrees
        assert learner.positives() == n // 2

        # the model keeps learning, and redelivered ids are still recognised
        send([make_event(k, "late") for k in range(extra)] + [make_event(k) for k in range(50)])
        wait_until(lambda: progress().events_applied + progress().duplicates_skipped
                   >= n + extra + 50, 60, "post-restart events")
        final = progress()
        assert (final.events_applied, final.duplicates_skipped) == (n + extra, 50)
        assert stored_learner(settings, store).events_applied == n + extra
    except BaseException:
        print(log_path.read_text()[-4000:])
        raise
    finally:
        trainer.kill()
        trainer.wait(timeout=10)
        producer.close()
        event_log.close()
        store.close()


@pytest.mark.integration
def test_kafka_outage_answers_503_and_ingestion_resumes_without_restart(make_settings,
                                                                        kafka_broker):
    if not hasattr(kafka_broker, "stop_broker"):
        pytest.skip("an external Kafka cannot be stopped by the tests")
    settings = make_settings(kafka=True, redis=True, batch_max_events=100, batch_max_wait_ms=50,
                             checkpoint_interval_s=0.2, produce_timeout_s=2,
                             entity_state_capacity=1000, user_clusters=8, item_clusters=8)
    event_log, store = make_event_log(settings), make_state_store(settings)

    def batch(start: int, count: int) -> list[dict]:
        return [{"event_id": f"k{k}", "user_id": f"u{k % 13}", "item_id": f"i{k % 7}",
                 "value": k % 2} for k in range(start, start + count)]

    try:
        with running_stack(settings, event_log, store) as stack:
            assert stack.client.post("/events", json=batch(0, 100)).status_code == 202
            stack.wait_for(lambda p: p.events_applied == 100)
            kafka_broker.stop_broker()
            rejected = []
            for start in (100, 150):
                started = time.monotonic()
                response = stack.client.post("/events", json=batch(start, 50))
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["error"] == "event_log_unavailable"
                assert time.monotonic() - started < 15
                rejected.append(start)
            kafka_broker.start()
            # the client retries what was refused, with the same ids; then new traffic
            for start in rejected:
                wait_until(lambda s=start: stack.client.post(
                    "/events", json=batch(s, 50)).status_code == 202, 60, "ingestion back")
            assert stack.client.post("/events", json=batch(200, 100)).status_code == 202
            progress = stack.wait_for(lambda p: p.events_applied >= 300, 60)
            time.sleep(1.0)
            assert stack.progress().events_applied == 300 == progress.events_applied
            assert stack.trainer.learner.events_applied == 300
    finally:
        if not kafka_broker.running:
            kafka_broker.start()
        event_log.close()
        store.close()


@pytest.mark.integration
def test_redis_outage_serves_from_memory_and_state_converges(make_settings, redis_server):
    if not hasattr(redis_server, "stop"):
        pytest.skip("an external Redis cannot be stopped by the tests")
    settings = make_settings(kafka=True, redis=True, batch_max_events=100, batch_max_wait_ms=50,
                             checkpoint_interval_s=0.2, publish_interval_ms=100,
                             entity_state_capacity=1000, user_clusters=8, item_clusters=8)
    event_log, store = make_event_log(settings), make_state_store(settings)
    statuses: dict[str, list[int]] = {"scores": [], "events": []}
    posted = 0
    try:
        with running_stack(settings, event_log, store) as stack:
            first = [{"user_id": f"u{k % 13}", "item_id": f"i{k % 7}", "value": k % 2}
                     for k in range(100)]
            assert stack.client.post("/events", json=first).status_code == 202
            posted = 100
            wait_until(lambda: stack.client.get("/health/ready").status_code == 200, 30,
                       "model loaded")
            stop_traffic = threading.Event()

            def traffic() -> None:
                nonlocal posted
                k = 0
                while not stop_traffic.is_set():
                    r = stack.client.get("/scores", params={"user_id": "u1",
                                                            "item_id": ["i1", "i2"]})
                    statuses["scores"].append(r.status_code)
                    r = stack.client.post("/events", json=[
                        {"user_id": f"u{k % 13}", "item_id": f"i{k % 7}", "value": 1}] * 5)
                    statuses["events"].append(r.status_code)
                    posted += 5 if r.status_code == 202 else 0
                    k += 1
                    time.sleep(0.02)

            worker = threading.Thread(target=traffic, daemon=True)
            worker.start()
            time.sleep(0.5)
            redis_server.stop()  # without a save: it comes back empty
            time.sleep(2.0)
            redis_server.start()
            time.sleep(1.0)
            stop_traffic.set()
            worker.join(timeout=30)
            assert statuses["scores"] and set(statuses["scores"]) == {200}
            assert set(statuses["events"]) == {202}
            # everything acknowledged is applied once, checkpointed and served again
            progress = stack.wait_for(lambda p: p.events_applied >= posted, 60)
            assert progress.events_applied == posted
            wait_until(lambda: stack.client.get("/model").json()["events_applied"] == posted,
                       30, "served model caught up")
    finally:
        if not redis_server.running:
            redis_server.start()
        event_log.close()
        store.close()


@pytest.mark.integration
def test_service_restart_reloads_the_latest_model_and_answers_the_same(make_settings):
    settings = make_settings(kafka=True, redis=True, batch_max_events=100, batch_max_wait_ms=50,
                             checkpoint_interval_s=0.2, publish_interval_ms=100,
                             # no periodic re-snapshot: the reload must rebuild the same
                             # version from its snapshot and deltas
                             snapshot_interval_s=3600, entity_state_capacity=1000,
                             user_clusters=8, item_clusters=8)
    event_log, store = make_event_log(settings), make_state_store(settings)
    users, items = [f"u{k}" for k in range(5)], [f"i{k}" for k in range(7)]

    def all_scores(client: TestClient) -> dict[str, list[float]]:
        out = {}
        for user in users:
            response = client.get("/scores", params={"user_id": user, "item_id": items})
            assert response.status_code == 200, response.text
            out[user] = [s["score"] for s in response.json()["scores"]]
        return out

    try:
        with running_stack(settings, event_log, store) as stack:
            for start in (0, 200):  # two rounds: a snapshot, then deltas on top of it
                events = [{"user_id": f"u{k % 5}", "item_id": f"i{k % 7}",
                           "value": (k // 5) % 2} for k in range(start, start + 200)]
                assert stack.client.post("/events", json=events).status_code == 202
                wait_until(lambda s=start: stack.client.get("/model").status_code == 200
                           and stack.client.get("/model").json()["events_applied"] == s + 200,
                           30, "model served")
            time.sleep(0.5)  # nothing left to publish
            before_model = stack.client.get("/model").json()
            before = all_scores(stack.client)
        restarted_store = make_state_store(settings)
        state = build_state(settings, event_log, restarted_store)
        with TestClient(create_app(state)) as client:
            wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "reload")
            after_model = client.get("/model").json()
            assert (after_model["version"], after_model["seq"]) == (
                before_model["version"], before_model["seq"])
            assert after_model["events_applied"] == 400
            assert all_scores(client) == before
        restarted_store.close()
    finally:
        event_log.close()
        store.close()


@pytest.mark.integration
def test_replay_of_the_topic_rebuilds_the_model_and_the_trainer_continues(make_settings,
                                                                          tmp_path, capsys):
    import argparse
    import json

    from cli.replay import replay
    from trainer.main import build_trainer

    settings = make_settings(kafka=True, redis=True, batch_max_events=64, batch_max_wait_ms=50,
                             entity_state_capacity=1000, user_clusters=8, item_clusters=8,
                             checkpoint_dir=str(tmp_path))
    event_log, store = make_event_log(settings), make_state_store(settings)
    producer = event_log.producer()
    try:
        now = time.time()
        events = [make_event(k) for k in range(200)] + [make_event(k) for k in range(20)]
        producer.send(settings.kafka_events_topic, [encode_event(e, now) for e in events], 10)
        args = argparse.Namespace(file=None, since=None, checkpoint_dir=tmp_path,
                                  publish=True, force=False)
        assert replay(settings, args) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["applied"], report["duplicates"]) == (200, 20)
        assert sum(report["offsets"].values()) == 220
        assert store.get(StateKeys(settings.state_prefix).model_current) is not None
        assert replay(settings, args) == 1  # refuses to overwrite without --force

        producer.send(settings.kafka_events_topic,
                      [encode_event(make_event(k, "new"), now) for k in range(30)], 10)
        trainer = build_trainer(settings, event_log, store)
        assert trainer.progress.events_applied == 200
        for _ in range(50):
            if trainer.progress.events_applied >= 230:
                break
            trainer.run_once()
        trainer.checkpoint()
        assert trainer.progress.events_applied == 230  # continues after the replayed offsets
        assert trainer.learner.events_applied == 230
        trainer.close()
    finally:
        producer.close()
        event_log.close()
        store.close()
