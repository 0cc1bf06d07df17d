"""Does the streaming SAML/DUPN learner learn? Progressive AUC on a planted stream.

    python bench/deep_online_auc.py [--models saml,dupn] [--batches 300] [--users 100]

Users and items fall into ``--groups`` planted groups; a click happens with probability
0.7 inside a group and 0.1 across. Events arrive in micro-batches of 256; each batch is
first predicted (``predict_events``, what the trainer's progressive metrics do), then
learnt. Reported: the AUC of those predictions over the last third of the stream, and the
mean number of distinct planted groups per user cluster at the end. Each model runs as
the trainer runs it (clusters found online: GPCA splits + reassignment) and with the CEL
assignment fixed to the planted groups ("oracle clusters", splits, votes and reassignment off),
which separates what the network learns from what the clustering finds.
Writes bench/results/deep_online_auc.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cel.metrics import auc  # noqa: E402
from celrec.settings import Settings  # noqa: E402
from schemas.events import Event  # noqa: E402
from trainer.learners import make_learner  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def stream(args: argparse.Namespace, seed: int):
    rng = np.random.default_rng(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    k = 0
    for _ in range(args.batches):
        u = rng.integers(args.users, size=256)
        i = rng.integers(args.items, size=256)
        y = rng.random(256) < np.where(u % args.groups == i % args.groups, 0.7, 0.1)
        batch = []
        for j in range(256):
            k += 1
            batch.append(Event(event_id=f"e{k}", user_id=f"u{u[j]}", item_id=f"i{i[j]}",
                               value=float(y[j]), scenario=f"s{u[j] % 3}",
                               timestamp=start + timedelta(seconds=k)))
        yield batch


def oracle(learner, args: argparse.Namespace) -> None:
    """Every id known up front, each table's assignment = the planted group."""
    for side, n in (("user", args.users), ("item", args.items)):
        learner.ids[side].lookup_or_add(f"{side[0]}{k}" for k in range(n))
        learner._admit(side)
        table = learner.tables[side]
        table.num_active = args.groups
        table.assign(torch.arange(n) % args.groups)


def run(model: str, clusters: str, args: argparse.Namespace) -> dict:
    extra = {} if clusters == "online" else {"reassign_window": 0, "split_every": 100_000,
                                             "cluster_votes": False}
    learner = make_learner(Settings(model=model, device="cpu", user_clusters=args.clusters,
                                    item_clusters=args.clusters, **extra))
    if clusters == "oracle":
        oracle(learner, args)
    scores, labels = [], []
    for b, events in enumerate(stream(args, args.seed)):
        if b >= args.batches * 2 // 3:
            scores.append(learner.predict_events(events))
            labels.append(np.array([e.value for e in events]))
        learner.learn(events)
    table = learner.tables["user"]
    n = len(learner.ids["user"])
    groups = np.array([int(s[1:]) % args.groups
                       for s in learner.ids["user"].external(range(n))])
    assign = table.assignment[:n].numpy()
    purity = float(np.mean([len(set(groups[assign == c])) for c in np.unique(assign)]))
    value = auc(torch.from_numpy(np.concatenate(scores)),
                torch.from_numpy(np.concatenate(labels)))
    return {"model": model, "clusters": clusters, "auc": float(value),
            "user_clusters": int(table.num_active), "groups_per_user_cluster": purity}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="saml,dupn")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for model in args.models.split(","):
        for clusters in ("online", "oracle"):
            rows.append(run(model, clusters, args))
            print(rows[-1], flush=True)
    command = "python bench/deep_online_auc.py " + " ".join(sys.argv[1:])
    result = {"benchmark": "deep_online_auc", "args": vars(args), "results": rows,
              "environment": {"torch": torch.__version__, "cpus": os.cpu_count(),
                              "command": command}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deep_online_auc.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Progressive AUC of the streaming SAML/DUPN learners on a planted stream", "",
             f"`{command}`: {args.users} users and {args.items} items in {args.groups} "
             f"planted groups, {args.batches} batches of 256, AUC over the last third, "
             f"cluster budget {args.clusters}.", "",
             "| model | clusters | progressive AUC | user clusters | planted groups per "
             "user cluster |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['clusters']} | {r['auc']:.3f} | {r['user_clusters']} | "
              f"{r['groups_per_user_cluster']:.2f} |" for r in rows]
    (RESULTS / "deep_online_auc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
