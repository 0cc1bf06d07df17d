"""Do the CEL tables of the multi-scenario training recover the planted groups? (seed 1)

The synthetic generator plants 8 user groups x 8 item groups; this trains one method on
generator seed 1 (the tuning data) and prints, after each epoch, the number of active
clusters, the adjusted Rand index and the purity (share of entities whose cluster's
majority group is their own) of the learned user and item assignments, then the test AUC
per scenario. ``--oracle`` starts from the planted assignment (no splits, no reassignment):
what the same model reaches with the groups known. Appends JSON lines to
bench/results/saml_cluster_recovery.jsonl.

    python bench/saml_cluster_recovery.py --method shared --per-scenario 20000 --old
    python bench/saml_cluster_recovery.py --method saml
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from cel.metrics import adjusted_rand_index
from cel.synthetic_scenarios import make_scenario_data
from cli.evaluation.multiscenario import (
    MSData,
    MSSpec,
    MSTask,
    build_deepfm,
    build_saml,
    fit,
    per_scenario,
    predict_all,
)

OUT = Path(__file__).resolve().parents[1] / "bench" / "results" / "saml_cluster_recovery.jsonl"
# the synthetic eval's CEL setting before this diagnosis, and after (bench/saml_dupn_eval.py)
OLD = {"clusters": 32, "reassign_window": 16384, "split_every": 10}
NEW = {"clusters": 8, "reassign_window": 10**9, "split_every": 10, "reassign_every": 20,
       "lr": 0.01, "saml_reassign_by": "aux"}


def purity(assignment: torch.Tensor, truth: torch.Tensor) -> float:
    a, t = assignment.long(), truth.long()
    table = torch.zeros(int(a.max()) + 1, int(t.max()) + 1)
    table.index_put_((a, t), torch.ones(len(a)), accumulate=True)
    return float(table.max(dim=1).values.sum() / len(a))


def recovery(fitted, user_group: torch.Tensor, item_group: torch.Tensor) -> dict:
    out = {}
    for side, table in fitted.tables().items():
        truth = user_group if side == "user" else item_group
        out[side] = {"clusters": table.num_active,
                     "ari": round(adjusted_rand_index(table.assignment.long(), truth), 4),
                     "purity": round(purity(table.assignment, truth), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", choices=("saml", "shared"), default="shared")
    parser.add_argument("--per-scenario", type=int, default=40_000)
    parser.add_argument("--old", action="store_true", help="the setting before the fix")
    parser.add_argument("--oracle", action="store_true", help="start from the planted groups")
    parser.add_argument("--set", default="{}", help="JSON overrides of MSSpec fields")
    args = parser.parse_args()
    torch.set_num_threads(1)
    d = make_scenario_data(per_scenario=args.per_scenario, seed=1)

    def conv(s) -> MSData:
        return MSData(s.users, s.items, s.scenarios, s.labels)

    task = MSTask(conv(d.train), conv(d.test), d.num_users, d.num_items, d.num_scenarios)
    spec = replace(MSSpec(table="cel", epochs=8),
                   **{**(OLD if args.old else NEW), **json.loads(args.set)})
    if args.oracle:
        spec = replace(spec, clusters=8, reassign_window=0, reassign_every=0)
    fitted = (build_saml(task, spec) if args.method == "saml"
              else build_deepfm(task, spec, True, task.train.labels))
    if args.oracle:
        for side, table in fitted.tables().items():
            table.num_active = table.max_clusters
            table.assign(d.user_group if side == "user" else d.item_group)
    epochs, clock = [], time.perf_counter()

    def on_epoch(epoch: int, f) -> None:
        epochs.append(recovery(f, d.user_group, d.item_group))
        print(epoch, epochs[-1], f"{time.perf_counter() - clock:.0f} s", flush=True)

    info = fit(fitted, task.train, spec, on_epoch)
    pred = predict_all(fitted, task.test)
    row = {"method": args.method, "per_scenario": args.per_scenario, "oracle": args.oracle,
           "spec": {k: v for k, v in spec.__dict__.items() if k != "extra"},
           "epochs": epochs, "kept_epoch": info["best_epoch"],
           "kept": recovery(fitted, d.user_group, d.item_group),
           "test_auc": {k: round(v["auc"], 4) for k, v in
                        per_scenario(pred, task.test, d.num_scenarios).items()},
           "seconds": round(time.perf_counter() - clock, 1)}
    print(json.dumps(row), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
