"""Validation runs for MovieLens choices: cuts carved from training data only.

    python bench/accuracy_validation_cuts.py LABEL [--cuts udata,1,3,udata90] [celrec eval flags]

Cuts: ``udata`` / ``udata90`` re-cut the training 80% of the u.data random protocol (seed 0)
80/20 or 90/10 (the 20% test part is never read); ``1``, ``3``... are seeded 80/20 cuts of
u<fold>.base (``accuracy_ml100k.carve_validation``; the .test files are never read). Each
method gets the ``celrec eval`` settings the flags give. Prints the mean RMSE, the RMSE on
items with <= 5 training ratings and the >20 / 6-20 item buckets, and appends the line to
bench/results/accuracy_validation_cuts.log.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from accuracy_ml100k import DEFAULT_DATA, carve_validation, cold_rmse  # noqa: E402

from celrec.presets import load_preset  # noqa: E402
from cli.evaluation.cli import build_parser, spec_from_args  # noqa: E402
from cli.evaluation.protocols import Prepared, prepare  # noqa: E402
from cli.evaluation.runner import evaluate  # noqa: E402

LOG = ROOT / "bench" / "results" / "accuracy_validation_cuts.log"


def udata_cut(data: Path, fraction: float) -> Prepared:
    """The training part of the u.data seed-0 random split, re-cut (seeded)."""
    prep = prepare(str(data / "u.data"), "movielens", "random", 0)
    train = prep.train
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(train)))
    cut = int(round(fraction * len(train)))
    fit, valid = train.subset(perm[:cut]), train.subset(perm[cut:])
    return Prepared(fit, valid, prep.num_users, prep.num_items, "rating", (),
                    float(fit.labels.mean()))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    label, argv = sys.argv[1], sys.argv[2:]
    cuts = "udata,1,3"
    if argv and argv[0].startswith("--cuts="):
        cuts, argv = argv[0].split("=", 1)[1], argv[1:]
    if not DEFAULT_DATA.is_dir():
        sys.exit(f"MovieLens-100K not found at {DEFAULT_DATA}")
    args = build_parser().parse_args(argv)
    methods = tuple(args.methods.split(","))
    spec = spec_from_args(args, methods, load_preset(args.preset_file))
    out: dict[str, list[tuple]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for cut in cuts.split(","):
            if cut in ("udata", "udata90"):
                prep = udata_cut(DEFAULT_DATA, 0.9 if cut == "udata90" else 0.8)
            else:
                carve_validation(DEFAULT_DATA, [int(cut)], Path(tmp), 0)
                prep = prepare(None, "movielens", "folds", 0, f"{tmp}/u{cut}.base",
                               f"{tmp}/u{cut}.test")
            clock = time.time()
            for r in evaluate(prep, spec):
                b = r["buckets"]["item"]
                out[r["method"]].append((r["rmse"], cold_rmse(r), b[">20"]["rmse"],
                                         b["6-20"]["rmse"]))
            print(f"  cut {cut}: {time.time() - clock:.0f} s", file=sys.stderr)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    for method, rows in out.items():
        mean = [sum(r[k] for r in rows) / len(rows) for k in range(4)]
        line = (f"{label:<40} {method:<6} rmse {mean[0]:.4f} cold<=5 {mean[1]:.4f} "
                f">20 {mean[2]:.4f} 6-20 {mean[3]:.4f}  per-cut "
                f"{[round(r[0], 4) for r in rows]}")
        print(line)
        with LOG.open("a") as f:
            f.write(f"{line}  ARGS --cuts={cuts} {' '.join(argv)}\n")


if __name__ == "__main__":
    main()
