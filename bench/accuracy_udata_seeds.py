"""How much the u.data random-protocol comparison depends on the training seed.

    python bench/accuracy_udata_seeds.py [--seeds 0,1,2] [--methods full,cel] [eval flags]

The split stays the protocol's (random 80/20, seed 0); only the training seed (initial
rows, batch order, GPCA and reassignment coins) changes, with ``celrec eval``'s defaults
otherwise. A report, not a tuning tool: the settings were chosen on validation cuts of
training data before this ran. Writes bench/results/accuracy_udata_seeds.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from accuracy_ml100k import DEFAULT_DATA  # noqa: E402

from celrec.presets import load_preset  # noqa: E402
from cli.evaluation.cli import build_parser, spec_from_args  # noqa: E402
from cli.evaluation.protocols import prepare  # noqa: E402
from cli.evaluation.runner import evaluate  # noqa: E402

OUT = ROOT / "bench" / "results"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    ap.add_argument("--methods", default="full,cel")
    own, rest = ap.parse_known_args(argv)  # the rest: celrec eval flags
    seeds, methods = [int(s) for s in own.seeds.split(",")], own.methods
    udata = DEFAULT_DATA / "u.data"
    if not udata.is_file():
        sys.exit(f"MovieLens-100K not found at {udata}")
    prep = prepare(str(udata), "movielens", "random", 0)
    rmse: dict[str, list[float]] = {m: [] for m in methods.split(",")}
    for seed in seeds:
        args = build_parser().parse_args(
            ["--methods", methods, "--seed", str(seed), "--quiet", *rest])
        for r in evaluate(prep, spec_from_args(args, tuple(rmse), load_preset(args.preset_file))):
            rmse[r["method"]].append(r["rmse"])
            print(f"seed {seed} {r['method']:<6} rmse {r['rmse']:.4f}", file=sys.stderr)
    names = list(rmse)
    lines = ["# u.data random protocol (split seed 0): test RMSE by training seed", "",
             f"Methods {methods}; flags: {' '.join(rest) or '(celrec eval defaults)'}.", "",
             "| training seed | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for k, seed in enumerate(seeds):
        lines.append(f"| {seed} | " + " | ".join(f"{rmse[n][k]:.4f}" for n in names) + " |")
    lines.append("| mean | " + " | ".join(f"{statistics.mean(rmse[n]):.4f}" for n in names)
                 + " |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "accuracy_udata_seeds.json").write_text(json.dumps(
        {"split_seed": 0, "training_seeds": seeds, "flags": rest, "rmse": rmse}, indent=1)
        + "\n")
    (OUT / "accuracy_udata_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
