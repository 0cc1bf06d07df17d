"""Freshness: from an event's acceptance to its effect being visible to GET /scores.

    python bench/freshness.py [--rate 300] [--probes 50] [--probe-interval 0.6] [--warmup 10]

Kafka + Redis, every part its own process: LocalKafka (ZooKeeper + Kafka 0.9) and
LocalRedis on free loopback ports, ``celrec train`` and ``celrec serve`` started with
subprocess. ``bench/loadgen.py`` (another process) POSTs single events at ``--rate``
events/s, open loop, for the whole run. Two measurements while that stream flows:

* exported: the service's ``celrec_freshness_seconds`` histogram (acceptance time carried
  by each delta -> delta applied), the bucket counts accumulated between the end of the
  warm-up and the end of the probes; quantiles interpolated within buckets as Prometheus'
  ``histogram_quantile`` does.
* direct: ``--probes`` times, an event of a brand-new user is POSTed and /scores is polled
  every ``--poll-ms`` until the user is known; freshness = first answer that knows the user
  minus the time the POST was sent (also reported from the 202 answer).

Results: bench/results/serving_freshness.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_latency import (  # noqa: E402
    ServerProcess,
    covering,
    environment,
    run_load,
    running,
    terminate_cleanly,
    write_results,
)

from tests.localservers import LocalKafka, LocalRedis  # noqa: E402

_BUCKET = re.compile(r'^celrec_freshness_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$')


def freshness_buckets(base: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of the exported histogram."""
    text = httpx.get(base + "/metrics", timeout=10).text
    out = []
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if match:
            out.append((float(match.group(1)), float(match.group(2))))
    return sorted(out)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' interpolation: linear within the bucket holding the q-th observation."""
    total = buckets[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the largest finite bound
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def probe(base: str, item: str, poll_s: float, timeout_s: float) -> dict:
    """Post one event of a new user; poll /scores until the user is known."""
    user = f"probe-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=base, timeout=5) as client:
        sent = time.time()
        client.post("/events", json={"user_id": user, "item_id": item, "value": 1}
                    ).raise_for_status()
        acked = time.time()
        deadline = sent + timeout_s
        while time.time() < deadline:
            answer = client.get("/scores", params={"user_id": user, "item_id": item})
            if answer.status_code == 200 and not answer.json()["unknown_user"]:
                seen = time.time()
                return {"from_send_s": seen - sent, "from_ack_s": seen - acked,
                        "ack_s": acked - sent}
            time.sleep(poll_s)
    return {"from_send_s": None, "from_ack_s": None, "ack_s": acked - sent}


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = np.percentile(values, [50, 90, 99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
            "max": float(max(values)), "mean": statistics.fmean(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300.0, help="background events/s")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--probe-interval", type=float, default=0.6, help="s between probes")
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="stream before measuring")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--trainer-threads", type=int, default=None,
                        help="OMP_NUM_THREADS of the trainer process (default: torch's)")
    parser.add_argument("--out", default="serving_freshness", help="results name")
    args = parser.parse_args()
    terminate_cleanly()

    stream = [["POST", "/events", e] for e in covering(args.users, args.items, 4)]
    probing_s = args.probes * args.probe_interval + 15  # probes, their tail, the last scrape
    with contextlib.ExitStack() as stack:
        kafka = stack.enter_context(LocalKafka())
        redis_server = stack.enter_context(LocalRedis())
        env = {"CELREC_EVENT_LOG": "kafka", "CELREC_STATE_STORE": "redis",
               "CELREC_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
               "CELREC_KAFKA_API_VERSION": kafka.api_version,
               "CELREC_REDIS_URL": redis_server.url, "CELREC_DEVICE": "cpu",
               "CELREC_KAFKA_EVENTS_TOPIC": "bench-events",
               "CELREC_KAFKA_CONSUMER_GROUP": "bench-trainer",
               "CELREC_STATE_PREFIX": "bench-fresh"}
        threads = {} if args.trainer_threads is None else {
            "OMP_NUM_THREADS": str(args.trainer_threads)}
        trainer = stack.enter_context(running(ServerProcess("train", {**env, **threads})))
        server = stack.enter_context(running(ServerProcess("serve", env)))
        server.wait_ready(timeout_s=120)  # the trainer's first (empty) snapshot is loaded
        print("kafka, redis, trainer and service up; streaming", flush=True)

        load: dict = {}
        loader = threading.Thread(target=lambda: load.update(run_load(
            server, stream, args.rate, probing_s, warmup_s=args.warmup)))
        loader.start()
        time.sleep(args.warmup + 0.5)
        before = freshness_buckets(server.base)
        started = time.monotonic()
        item = stream[0][2]["item_id"]
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = []
            for k in range(args.probes):
                time.sleep(max(0.0, started + k * args.probe_interval - time.monotonic()))
                futures.append(pool.submit(probe, server.base, item, args.poll_ms / 1000, 10))
            probes = [f.result() for f in futures]
        after = freshness_buckets(server.base)
        loader.join(timeout=probing_s + 120)
        if trainer.proc is None or trainer.proc.poll() is not None:
            raise RuntimeError(f"trainer died:\n{trainer.log_tail()}")

    window = [(bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True)]
    exported = {f"p{int(q * 100)}": histogram_quantile(q, window) for q in (0.5, 0.9, 0.99)}
    exported["observations"] = window[-1][1]
    seen = [p["from_send_s"] for p in probes if p["from_send_s"] is not None]
    direct = {"from_send_s": _quantiles(seen),
              "from_ack_s": _quantiles([p["from_ack_s"] for p in probes
                                        if p["from_ack_s"] is not None]),
              "ack_s": _quantiles([p["ack_s"] for p in probes]),
              "probes": len(probes), "never_seen": len(probes) - len(seen)}
    data = {"what": "freshness, Kafka + Redis, trainer and service as separate processes",
            "exported_histogram_s": exported, "histogram_window": window, "direct": direct,
            "probes": probes, "event_stream": load, "environment": environment(),
            "settings": vars(args)}
    d = direct["from_send_s"]
    table = "\n".join([
        "# Freshness under a steady event stream (Kafka + Redis, separate processes)", "",
        f"Trainer torch threads: {args.trainer_threads or 'default'}. "
        f"Background stream: {args.rate:.0f} events/s offered, "
        f"{load.get('achieved_rps', float('nan')):.1f} accepted/s, POST p99 "
        f"{load.get('latency_ms', {}).get('p99', float('nan')):.1f} ms. Target: p50 <= 1 s.",
        "",
        "| measurement | samples | p50 s | p90 s | p99 s | max s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| exported `celrec_freshness_seconds` (bucket-interpolated) | "
        f"{exported['observations']:.0f} | **{exported['p50']:.3f}** | {exported['p90']:.3f} | "
        f"{exported['p99']:.3f} | - |",
        f"| direct: new user's event POSTed -> /scores knows the user | {len(seen)} | "
        f"**{d.get('p50', float('nan')):.3f}** | {d.get('p90', float('nan')):.3f} | "
        f"{d.get('p99', float('nan')):.3f} | {d.get('max', float('nan')):.3f} |",
        "", f"Probes never seen within 10 s: {direct['never_seen']}. Direct values include up "
        f"to one poll interval ({args.poll_ms:.0f} ms) plus one /scores round trip.", ""])
    write_results(args.out, data, table)


if __name__ == "__main__":
    main()
