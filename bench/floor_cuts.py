"""Does CEL stay above the biases-only floor on sparse data? (issue: models that hold)

    OMP_NUM_THREADS=1 .venv/bin/python bench/floor_cuts.py [--methods bias,full,cel]

Cuts of MovieLens-100K's u.data, built here and never tuned on: ``full`` (all ratings),
``sparse10``/``sparse10b`` (seeded 10% samples of the ratings, re-cut to their 5-core: every
user and item keeps at least 5 ratings) and ``skewed`` (a 5-core sample that keeps ratings of
4 and 5 three times as often as the others, so most ratings are high, as on review
sites). Each runs ``celrec eval``'s random 80/20 protocol (seed 0) with the preset's
defaults. Writes bench/results/floor_cuts.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celrec.presets import load_preset  # noqa: E402
from cli.evaluation.cli import build_parser, spec_from_args  # noqa: E402
from cli.evaluation.protocols import prepare, random_split  # noqa: E402
from cli.evaluation.runner import evaluate  # noqa: E402

UDATA = ROOT.parent / "shared" / "data" / "movielens-100k" / "ml-100k" / "u.data"


def core(rows: np.ndarray, k: int) -> np.ndarray:
    """The k-core of (user, item, ...) rows: drop users/items with < k rows until stable."""
    while True:
        users, ucount = np.unique(rows[:, 0], return_counts=True)
        items, icount = np.unique(rows[:, 1], return_counts=True)
        keep = (np.isin(rows[:, 0], users[ucount >= k])
                & np.isin(rows[:, 1], items[icount >= k]))
        if keep.all():
            return rows
        rows = rows[keep]


def cuts() -> dict[str, np.ndarray]:
    rows = np.loadtxt(UDATA, dtype=np.int64)
    out = {"full": rows}
    for name, seed in (("sparse10", 0), ("sparse10b", 1)):
        out[name] = core(rows[np.random.default_rng(seed).random(len(rows)) < 0.10], 5)
    # skewed to high ratings, as review sites are: ratings below 4 kept at a third the rate
    keep = np.where(rows[:, 2] >= 4, 0.15, 0.05)
    out["skewed"] = core(rows[np.random.default_rng(2).random(len(rows)) < keep], 5)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="bias,full,cel")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--validation", action="store_true",
                    help="each cut's training 80%% only, re-cut 80/20 (seed 1): for choosing "
                    "defaults; the test 20%% is never read")
    ap.add_argument("--preset", default=None, help="a preset JSON file (celrec eval --preset)")
    args = ap.parse_args()
    if not UDATA.is_file():
        sys.exit(f"MovieLens-100K not found at {UDATA}")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in cuts().items():
            seed = 0
            if args.validation:  # the rows prepare() puts in the training part, then re-cut
                rows, seed = rows[random_split(len(rows), 0)[0]], 1
            path = Path(tmp) / f"{name}.data"
            np.savetxt(path, rows, fmt="%d", delimiter="\t")
            eval_args = build_parser().parse_args(
                ["--data", str(path), "--methods", args.methods, "--device", "cpu"])
            methods = tuple(args.methods.split(","))
            prep = prepare(str(path), "movielens", "random", seed)
            results = evaluate(prep, spec_from_args(eval_args, methods,
                                                    load_preset(args.preset)))
            report[name] = {"ratings": len(rows), "users": int(len(np.unique(rows[:, 0]))),
                            "items": int(len(np.unique(rows[:, 1]))),
                            "rmse": {r["method"]: r["rmse"] for r in results},
                            "cold_1_5": {r["method"]: r["buckets"]["item"]["1-5"]["rmse"]
                                         for r in results}}
            print(name, report[name], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "floor_cuts_validation" if args.validation else "floor_cuts"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    methods = args.methods.split(",")
    if args.validation:
        head = ["# CEL against the biases-only floor: VALIDATION cuts (preset defaults)", "",
                "`OMP_NUM_THREADS=1 .venv/bin/python bench/floor_cuts.py --validation` (each "
                "cut's training 80%, re-cut 80/20 with seed 1; the test 20% is not read)", ""]
    else:
        head = ["# CEL against the biases-only floor (random 80/20, seed 0, preset defaults)",
                "", "`OMP_NUM_THREADS=1 .venv/bin/python bench/floor_cuts.py`", ""]
    lines = head + [
             "| cut | ratings | users | items | " + " | ".join(methods)
             + " | " + " | ".join(f"{m} items 1-5" for m in methods) + " |",
             "|---|---|---|---|" + "---|" * (2 * len(methods))]
    for name, r in report.items():
        lines.append(f"| {name} | {r['ratings']} | {r['users']} | {r['items']} | "
                     + " | ".join(f"{r['rmse'][m]:.4f}" for m in methods) + " | "
                     + " | ".join("-" if r["cold_1_5"][m] is None else f"{r['cold_1_5'][m]:.4f}"
                                  for m in methods) + " |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
