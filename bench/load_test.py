"""Load test: events posted and scores requested at the same time against Kafka + Redis.

    .venv/bin/python bench/load_test.py [--duration 60] [--event-rate 1000] [--batch 10] \
        [--score-rate 200] [--out bench/results/load_test]

Starts its own Kafka 0.9 + Redis (tests.localservers), ``celrec train`` and ``celrec serve``
as separate processes, then runs two open-loop generators (bench/loadgen.py) side by side:
POST /events with ``--batch`` events per request at ``--event-rate`` events/s, and GET
/scores (10 candidates) at ``--score-rate`` requests/s. Reports errors and latency per
route, the trainer's lag when the load stops and how long it takes to drain, events
accepted vs applied, and the memory (RSS) growth of service and trainer. Everything is
bounded in time and stopped at the end; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celrec.backends import make_event_log, make_state_store  # noqa: E402
from celrec.settings import Settings  # noqa: E402
from tests.localservers import LocalKafka, LocalRedis, free_port  # noqa: E402
from trainer.stream import progress_of  # noqa: E402

USERS, ITEMS = 2000, 500
WARM_EVENTS = 1000  # one batch before the load, so a model is served


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"load_test: {what} not within {timeout_s}s")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def request_files(tmp: Path, batch: int) -> tuple[Path, Path]:
    events, scores = [], []
    for r in range(200):
        body = [{"user_id": f"u{(r * batch + k) * 7 % USERS}",
                 "item_id": f"i{(r * batch + k) * 13 % ITEMS}", "value": (r + k) % 2}
                for k in range(batch)]
        events.append(["POST", "/events", body])
    for r in range(500):
        items = "&".join(f"item_id=i{(r * 10 + k) * 11 % ITEMS}" for k in range(10))
        scores.append(["GET", f"/scores?user_id=u{r * 3 % USERS}&{items}", None])
    (tmp / "events.json").write_text(json.dumps(events))
    (tmp / "scores.json").write_text(json.dumps(scores))
    return tmp / "events.json", tmp / "scores.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--event-rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--batch", type=int, default=10, help="events per POST /events")
    parser.add_argument("--score-rate", type=float, default=200.0, help="GET /scores per s")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--out", default=str(ROOT / "bench/results/load_test"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="celrec-load-"))
    kafka, redis_server = LocalKafka(), LocalRedis()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kafka.start()
        redis_server.start()
        port, tag = free_port(), uuid.uuid4().hex[:6]
        env_values = {
            "EVENT_LOG": "kafka", "STATE_STORE": "redis",
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_API_VERSION": kafka.api_version, "REDIS_URL": redis_server.url,
            "KAFKA_EVENTS_TOPIC": f"load-{tag}", "KAFKA_DEAD_LETTER_TOPIC": f"load-{tag}.dlq",
            "KAFKA_CONSUMER_GROUP": f"load-{tag}", "STATE_PREFIX": f"load-{tag}",
            "CHECKPOINT_INTERVAL_S": "1", "CHECKPOINT_DIR": str(tmp / "ckpt"),
            "DEVICE": "cpu", "LOG_LEVEL": "WARNING", "TRAINER_METRICS_PORT": "0",
            "PORT": str(port), "HOST": "127.0.0.1",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELREC_")}
        env.update({f"CELREC_{k}": v for k, v in env_values.items()})
        settings = Settings(**{k.lower(): v for k, v in env_values.items()})
        for command in ("train", "serve"):
            log = (tmp / f"{command}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", command],
                                          cwd=ROOT, env=env, stdout=log, stderr=log))
        trainer, service = procs
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{base}/health/live") == 200, 60, "service up")
        warm = json.dumps([{"user_id": f"u{k}", "item_id": f"i{k % ITEMS}"}
                           for k in range(WARM_EVENTS)]).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/events", data=warm, headers={"content-type": "application/json"}),
            timeout=30).read()
        wait_until(lambda: http_status(f"{base}/health/ready") == 200, 90, "model loaded")
        time.sleep(2.0)
        load_before = os.getloadavg()[0]
        rss_before = {"service": rss_mb(service.pid), "trainer": rss_mb(trainer.pid)}

        events_file, scores_file = request_files(tmp, args.batch)
        loadgen = [sys.executable, str(ROOT / "bench/loadgen.py"), "--port", str(port),
                   "--duration", str(args.duration), "--warmup", "2", "--timeout", "10"]
        gens = {
            "POST /events": subprocess.Popen(
                [*loadgen, "--requests", str(events_file),
                 "--rate", str(args.event_rate / args.batch)], stdout=subprocess.PIPE),
            "GET /scores": subprocess.Popen(
                [*loadgen, "--requests", str(scores_file), "--rate", str(args.score_rate)],
                stdout=subprocess.PIPE),
        }
        routes = {name: json.loads(gen.communicate(timeout=args.duration + 120)[0])
                  for name, gen in gens.items()}
        rss_after = {"service": rss_mb(service.pid), "trainer": rss_mb(trainer.pid)}

        event_log, store = make_event_log(settings), make_state_store(settings)
        consumer = event_log.consumer([settings.kafka_events_topic], f"inspect-{tag}")
        ends = consumer.end_offsets()
        consumer.close()
        total = sum(ends.values())

        def lag() -> int:
            progress = progress_of(store, settings.state_prefix)
            done = sum(progress.offsets.values()) if progress else 0
            return total - done

        lag_at_end = lag()
        stopped = time.monotonic()
        deadline = stopped + args.drain_timeout
        while lag() > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        drain_s = time.monotonic() - stopped
        progress = progress_of(store, settings.state_prefix)
        result = {
            "config": vars(args) | {"machine_cores": os.cpu_count(),
                                    "loadavg_1m_before": round(load_before, 2)},
            "routes": routes,
            # with 0 errors the log holds exactly the acknowledged events (the generators'
            # warm-up requests included, which their counts leave out)
            "events": {"in_log": total,
                       "applied": progress.events_applied if progress else 0,
                       "dead_lettered": progress.dead_lettered if progress else 0},
            "trainer_lag_at_end_events": lag_at_end,
            "drain_seconds": round(drain_s, 2), "drained": lag() == 0,
            "rss_mb_before": rss_before, "rss_mb_after": rss_after,
            "rss_growth_mb": {k: round(rss_after[k] - rss_before[k], 1) for k in rss_before},
        }
        store.close()
        event_log.close()
        Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(args.out + ".md").write_text(markdown(result) + "\n")
        print(markdown(result))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis_server.close()
        kafka.close()


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [f"Load test: {c['duration']:.0f} s, {c['event_rate']:.0f} events/s posted in "
             f"batches of {c['batch']} + {c['score_rate']:.0f} GET /scores/s (10 candidates), "
             f"Kafka 0.9 + Redis, {c['machine_cores']} cores (1-min load average "
             f"{c['loadavg_1m_before']} before the run)", "",
             "| route | offered req/s | achieved req/s | errors | status | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["routes"].items():
        lat = r["latency_ms"]
        lines.append(f"| {name} | {r['offered_rps']:.0f} | {r['achieved_rps']:.0f} | "
                     f"{r['errors']} | {r['status']} | {lat.get('p50', 0):.1f} | "
                     f"{lat.get('p99', 0):.1f} |")
    e = result["events"]
    lines += ["", f"events in the log {e['in_log']} (acknowledged, plus any whose request "
              f"timed out at the client after the service had sent them), applied "
              f"{e['applied']} (lost: {e['in_log'] - e['applied']}), dead-lettered "
              f"{e['dead_lettered']}; trainer lag when the load "
              f"stopped: {result['trainer_lag_at_end_events']} events, drained in "
              f"{result['drain_seconds']} s ({'yes' if result['drained'] else 'NOT drained'})",
              f"RSS growth: service {result['rss_growth_mb']['service']} MB "
              f"({result['rss_mb_before']['service']:.0f} -> "
              f"{result['rss_mb_after']['service']:.0f}), trainer "
              f"{result['rss_growth_mb']['trainer']} MB "
              f"({result['rss_mb_before']['trainer']:.0f} -> "
              f"{result['rss_mb_after']['trainer']:.0f})"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
