"""GET /scores latency with DUPN (or SAML): 100 candidates, the user's sequence from Redis.

    python bench/deep_serving_latency.py [--model dupn] [--rates 200] [--duration 10]
        [--repeats 3] [--users 2000] [--items 2000] [--events-per-user 60]

The model is learned here by the trainer's own learner (``make_learner`` with
``CELREC_MODEL``) and published by its Publisher into a LocalRedis, sequences included,
exactly as ``celrec train`` does; every user has ``--events-per-user`` events (85%
positive: clicks, carts, purchases over 4 scenarios), so most sequences are full
(``CELREC_SEQUENCE_LENGTH``, 50). Loss-based reassignment is off while preparing (speed
only: it changes the clusters, not the network served). ``celrec serve`` then runs in its
own process; each request scores 100 random known items for a random known user in
scenario s1: one Redis GET of the sequence, the user part once, the head over the 100
candidates. Load: ``bench/loadgen.py`` (open loop, latency from each request's due time),
rates interleaved and repeated, medians over repeats. Results:
bench/results/serving_scores_<model>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.append(str(ROOT / "bench"))

from serving_latency import (  # noqa: E402
    ServerProcess,
    _lower,
    check_answer,
    environment,
    interleaved,
    latency_table,
    redis_settings,
    running,
    summary,
    terminate_cleanly,
    write_results,
)

from celrec.backends import make_state_store  # noqa: E402
from celrec.settings import Settings  # noqa: E402
from schemas.api import TrainerProgress  # noqa: E402
from schemas.events import Event  # noqa: E402
from tests.localservers import LocalRedis  # noqa: E402
from trainer.learners import make_learner  # noqa: E402
from trainer.publisher import Publisher  # noqa: E402

BEHAVIOURS = ("click", "click", "add_to_cart", "purchase")


def events(users: int, items: int, per_user: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    n = users * per_user
    u = rng.permutation(np.arange(n) % users)
    i = rng.integers(items, size=n)
    positive = rng.random(n) < 0.85
    beh = rng.integers(len(BEHAVIOURS), size=n)
    scen = rng.integers(4, size=n)
    start = datetime.now(UTC) - timedelta(seconds=n + 10)
    return [Event(event_id=f"e{k}", user_id=f"user-{u[k]}", item_id=f"item-{i[k]}",
                  event_type=BEHAVIOURS[beh[k]] if positive[k] else "impression",
                  value=float(positive[k]), scenario=f"s{scen[k]}",
                  price_level=int(i[k] % 7) if positive[k] else None,
                  timestamp=start + timedelta(seconds=k)) for k in range(n)]


def publish(settings: Settings, stream: list[Event], batch: int = 1024) -> dict:
    torch.set_num_threads(1)
    learner = make_learner(settings)
    store = make_state_store(settings)
    publisher = Publisher(settings, store)
    started = time.perf_counter()
    for k in range(0, len(stream), batch):
        learner.learn(stream[k: k + batch])
    learned = time.perf_counter() - started
    version = publisher.publish_snapshot(learner, TrainerProgress(events_applied=len(stream)))
    lengths = [len(learner.sequences.steps(u)) for u in range(len(learner.ids["user"]))]
    store.close()
    return {"model": settings.model, "version": version, "events": len(stream),
            "learn_s": learned, "users": len(learner.ids["user"]),
            "items": len(learner.ids["item"]), "mean_sequence_length": float(np.mean(lengths)),
            "clusters": {s: t.num_active for s, t in learner.tables.items()}}


def requests(users: int, items: int, count: int = 2000, candidates: int = 100) -> list:
    rng = random.Random(1)
    out = []
    for _ in range(count):
        query = "&".join(f"item_id=item-{rng.randrange(items)}" for _ in range(candidates))
        out.append(["GET", f"/scores?user_id=user-{rng.randrange(users)}&scenario=s1&{query}",
                    None])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("dupn", "saml"), default="dupn")
    ap.add_argument("--rates", default="200")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--events-per-user", type=int, default=60)
    args = ap.parse_args()
    terminate_cleanly()
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(LocalRedis())
        env = {**redis_settings(redis_server.url, f"bench-{args.model}"),
               "CELREC_MODEL": args.model}
        settings = Settings(**_lower(env), device="cpu", reassign_window=0)
        model = publish(settings, events(args.users, args.items, args.events_per_user))
        print(f"model ready: {model}", flush=True)
        server = stack.enter_context(running(ServerProcess("serve", env)))
        server.wait_ready(timeout_s=120)
        reqs = requests(args.users, args.items)
        check_answer(server, reqs[0], "scores", 100)
        model["server_rss_bytes"] = server.rss_bytes()
        rates = [int(r) for r in args.rates.split(",")]
        runs = interleaved({"redis": server}, {"redis": reqs}, rates, args.repeats,
                           args.duration)
    rows = summary(runs)
    data = {"what": f"GET /scores with {args.model}, 100 candidates, sequence from Redis",
            "model": model, "summary": rows, "runs": runs, "environment": environment(),
            "settings": {"duration_s": args.duration, "warmup_s": 2.0,
                         "repeats": args.repeats, "users": args.users, "items": args.items}}
    write_results(f"serving_scores_{args.model}", data, latency_table(
        f"GET /scores with {args.model.upper()}, 100 candidates", rows,
        "Target (DUPN): p99 <= 25 ms at 200 req/s."))


if __name__ == "__main__":
    main()
