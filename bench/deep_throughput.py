"""Streaming training throughput of SAML and DUPN (events/s), as the trainer runs them.

    python bench/deep_throughput.py [--models saml,dupn] [--batches 256,1024]
        [--users 500] [--items 5000] [--steps 20] [--warm-clusters 128] [--threads 1]

Each run: a fresh learner from ``trainer.learners.make_learner`` (the trainer's settings;
``--sequence-length``, ``--clusters`` and the ``CELREC_*`` defaults otherwise), fed
pre-built ``Event`` batches (clicks, purchases and carts over ``--scenarios`` scenarios,
half of them with a price level, 30% negatives). Warm-up batches (untimed, splitting at
every step) run until both CEL tables have ``--warm-clusters`` live clusters, since the
reassignment cost grows with the live clusters (not with the entities); they also fill the
users' behaviour sequences. Then ``--steps`` batches are timed with the settings' split
cadence:
``learn()`` whole (sequence bookkeeping, forward/backward, Adam step, GPCA split check,
loss-based reassignment of the newest samples' entities). Also times ``predict_events``
(the progressive-metrics forward). Writes bench/results/deep_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celrec.settings import Settings  # noqa: E402
from schemas.events import Event  # noqa: E402
from trainer.learners import make_learner  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BEHAVIOURS = ("click", "click", "click", "add_to_cart", "purchase")


def make_batches(count: int, batch: int, users: int, items: int, scenarios: int,
                 seed: int = 0) -> list[list[Event]]:
    rng = np.random.default_rng(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out, k = [], 0
    for _ in range(count):
        u = rng.integers(users, size=batch)
        i = rng.integers(items, size=batch)
        beh = rng.integers(len(BEHAVIOURS), size=batch)
        scen = rng.integers(scenarios, size=batch)
        neg = rng.random(batch) < 0.3
        events = []
        for j in range(batch):
            k += 1
            events.append(Event(
                event_id=f"e{k}", user_id=f"u{u[j]}", item_id=f"i{i[j]}",
                event_type="impression" if neg[j] else BEHAVIOURS[beh[j]],
                value=0.0 if neg[j] else 1.0, scenario=f"s{scen[j]}",
                price_level=int(i[j] % 7) if j % 2 else None,
                timestamp=start + timedelta(seconds=k)))
        out.append(events)
    return out


def measure(model: str, batch: int, args: argparse.Namespace) -> dict:
    settings = Settings(model=model, device=args.device, user_clusters=args.clusters,
                        item_clusters=args.clusters, sequence_length=args.sequence_length)
    learner = make_learner(settings)
    target = min(args.warm_clusters, args.clusters)
    for sp in learner.splitters.values():
        sp.split_every = 1
    warm, seed = 0, args.seed
    while min(t.num_active for t in learner.tables.values()) < target:
        for events in make_batches(16, batch, args.users, args.items, args.scenarios, seed):
            learner.learn(events)
            warm += 1
        seed += 1
    for sp in learner.splitters.values():
        sp.split_every = settings.split_every
    stream = make_batches(args.steps, batch, args.users, args.items, args.scenarios,
                          seed + 1000)
    per_step = []
    start = time.perf_counter()
    for events in stream:
        t = time.perf_counter()
        learner.learn(events)
        per_step.append(time.perf_counter() - t)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    for events in stream:
        learner.predict_events(events)
    predict_s = time.perf_counter() - start
    timed = batch * args.steps
    mean_len = float(np.mean([len(learner.sequences.steps(u)) for u in range(
        min(1000, len(learner.ids["user"])))]))
    return {"model": model, "batch": batch, "train_events_per_s": timed / train_s,
            "train_median_ms_per_batch": 1000 * statistics.median(per_step),
            "predict_events_per_s": timed / predict_s, "timed_events": timed,
            "clusters": {s: t.num_active for s, t in learner.tables.items()},
            "users": len(learner.ids["user"]), "items": len(learner.ids["item"]),
            "warmup_batches": warm,
            "mean_sequence_length": mean_len}


def markdown(r: dict) -> str:
    env = r["environment"]
    lines = [
        "# SAML and DUPN streaming training throughput", "",
        f"`{env['command']}`  ",
        f"{r['device']}, {r['threads']} torch thread(s), torch {env['torch']}, {env['cpus']} "
        f"CPUs (shared), load average before/after {env['loadavg_before'][0]:.1f}/"
        f"{env['loadavg_after'][0]:.1f}; cluster budget {r['clusters']} per side, "
        f"sequence length {r['sequence_length']}, defaults of the trainer's settings "
        "otherwise.", "",
        "| model | micro-batch | train events/s | median ms/batch | predict events/s "
        "| live clusters user/item | mean sequence length |",
        "|---|---:|---:|---:|---:|---|---:|"]
    for x in r["results"]:
        lines.append(f"| {x['model']} | {x['batch']:,} | {x['train_events_per_s']:,.0f} | "
                     f"{x['train_median_ms_per_batch']:.1f} | "
                     f"{x['predict_events_per_s']:,.0f} | {x['clusters']['user']}/"
                     f"{x['clusters']['item']} | {x['mean_sequence_length']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="saml,dupn")
    ap.add_argument("--batches", default="256,1024")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--scenarios", type=int, default=4)
    ap.add_argument("--clusters", type=int, default=256)
    ap.add_argument("--sequence-length", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warm-clusters", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "deep_throughput"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = os.getloadavg()
    rows = []
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(model, batch, args)
            rows.append(row)
            print(f"{model} batch {batch}: {row['train_events_per_s']:,.0f} events/s "
                  f"({row['train_median_ms_per_batch']:.1f} ms/batch), clusters "
                  f"{row['clusters']}", flush=True)
    result = {"benchmark": "deep_throughput", "device": args.device, "threads": args.threads,
              "clusters": args.clusters, "sequence_length": args.sequence_length,
              "users": args.users, "items": args.items, "results": rows,
              "environment": {"torch": torch.__version__, "python": platform.python_version(),
                              "cpus": os.cpu_count(), "loadavg_before": before,
                              "loadavg_after": os.getloadavg(),
                              "command": "python bench/deep_throughput.py " + " ".join(
                                  argv if argv is not None else sys.argv[1:])}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
