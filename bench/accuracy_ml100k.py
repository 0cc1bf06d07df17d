"""Accuracy on MovieLens-100K's five official folds: celrec methods vs Surprise.

    python bench/accuracy_ml100k.py [--data-dir .../ml-100k] [--folds 1,2,3,4,5]

Writes bench/results/accuracy_ml100k.json and .md: mean RMSE overall and on test ratings
of items with at most 5 training ratings. Surprise (SVD, KNNBaseline) runs when installed
(``pip install 'celrec[bench]'``). Hyper-parameters were chosen on validation splits
carved from u1.base and u3.base (never on a test file); the same defaults as ``celrec eval``.
``--validation`` runs on such splits (a seeded 80/20 cut of each u<fold>.base; the test
files are not read) and writes accuracy_ml100k_validation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celrec.presets import load_preset  # noqa: E402
from cli.evaluation.protocols import prepare  # noqa: E402
from cli.evaluation.runner import RunSpec, evaluate  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "movielens-100k" / "ml-100k"
# name -> (method, personalisation epochs)
VARIANTS = {"full": ("full", 0), "hash": ("hash", 0), "dhash": ("dhash", 0),
            "cel": ("cel", 0), "cel+personal": ("cel", 10)}


def cold_rmse(result: dict) -> float | None:
    """RMSE over the 0 and 1-5 item buckets (items with <= 5 training ratings)."""
    parts = [result["buckets"]["item"][b] for b in ("0", "1-5")]
    n = sum(p["n"] for p in parts)
    if not n:
        return None
    return math.sqrt(sum(p["n"] * p["mse"] for p in parts if p["n"]) / n)


def run_spec(name: str, args: argparse.Namespace) -> RunSpec:
    """The celrec run of variant ``name``: the preset, with the variant's personal epochs."""
    method, personal = VARIANTS[name]
    preset = load_preset(args.preset, personal_epochs=personal)
    return RunSpec(methods=(method,), model=args.model, dim=args.dim, clusters=args.clusters,
                   side="item", protocol="folds", device=args.device, preset=preset)


def run_celrec(data_dir: Path, fold: int, name: str, args: argparse.Namespace) -> dict:
    prep = prepare(None, "movielens", "folds", 0, str(data_dir / f"u{fold}.base"),
                   str(data_dir / f"u{fold}.test"))
    spec = run_spec(name, args)
    result = evaluate(prep, spec)[0]
    return {"rmse": result["rmse"], "cold_rmse": cold_rmse(result),
            "memory_bytes": result["memory_bytes"],
            "compression_ratio": result["compression_ratio"],
            "table_compression_ratio": result["table_compression_ratio"]}


def run_surprise(data_dir: Path, fold: int, name: str) -> dict:
    from surprise import SVD, Dataset, KNNBaseline, Reader
    from surprise.model_selection import PredefinedKFold

    reader = Reader("ml-100k")
    data = Dataset.load_from_folds(
        [(str(data_dir / f"u{fold}.base"), str(data_dir / f"u{fold}.test"))], reader)
    train, test = next(iter(PredefinedKFold().split(data)))
    algo = SVD(random_state=0) if name == "surprise-svd" else KNNBaseline(verbose=False)
    algo.fit(train)
    counts: dict[str, int] = {}
    for inner in train.all_items():
        counts[train.to_raw_iid(inner)] = len(train.ir[inner])
    errors, cold = [], []
    for uid, iid, rating in test:
        err = (algo.predict(uid, iid).est - rating) ** 2
        errors.append(err)
        if counts.get(iid, 0) <= 5:
            cold.append(err)
    return {"rmse": math.sqrt(sum(errors) / len(errors)),
            "cold_rmse": math.sqrt(sum(cold) / len(cold)) if cold else None,
            "memory_bytes": None, "compression_ratio": None, "table_compression_ratio": None}


def carve_validation(data_dir: Path, folds: list[int], out_dir: Path, seed: int) -> None:
    """u<fold>.base -> 80% as out_dir/u<fold>.base, 20% as out_dir/u<fold>.test."""
    for fold in folds:
        lines = (data_dir / f"u{fold}.base").read_text().splitlines(keepends=True)
        order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(seed))
        cut = int(0.8 * len(lines))
        (out_dir / f"u{fold}.base").write_text("".join(lines[i] for i in order[:cut]))
        (out_dir / f"u{fold}.test").write_text("".join(lines[i] for i in order[cut:]))


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--folds", default="1,2,3,4,5")
    p.add_argument("--methods", default=",".join(VARIANTS))
    p.add_argument("--model", default="mf")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=50)
    p.add_argument("--preset", metavar="FILE",
                   help="JSON file of preset fields to change (celrec eval --show-preset)")
    p.add_argument("--device", default="auto")
    p.add_argument("--validation", action="store_true",
                   help="tune: evaluate on 80/20 splits of u<fold>.base, not on the test files")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the --validation cut")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.data_dir / "u1.base").is_file():
        print(f"accuracy_ml100k: ML-100K folds not found under {args.data_dir}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    folds = [int(f) for f in args.folds.split(",")]
    stem = "accuracy_ml100k_validation" if args.validation else "accuracy_ml100k"
    with tempfile.TemporaryDirectory() as tmp:
        if args.validation:
            carve_validation(args.data_dir, folds, Path(tmp), args.split_seed)
            args.data_dir = Path(tmp)
        return run_all(args, folds, stem)


def _portable(value: object) -> str:
    """Settings as recorded: paths relative to the repository, never a machine's own."""
    if not isinstance(value, Path):
        return str(value)
    path = value.resolve()
    for base, prefix in ((ROOT, "."), (ROOT.parent, "..")):
        if path.is_relative_to(base):
            return f"{prefix}/{path.relative_to(base).as_posix()}"
    return "<temporary directory>"


def run_all(args: argparse.Namespace, folds: list[int], stem: str) -> int:
    names = [m for m in args.methods.split(",") if m]
    try:
        import surprise  # noqa: F401

        names += ["surprise-svd", "surprise-knnbaseline"]
    except ImportError:
        print("accuracy_ml100k: scikit-surprise not installed; celrec methods only",
              file=sys.stderr)
    per_fold: dict[str, list[dict]] = {n: [] for n in names}
    for fold in folds:
        for name in names:
            start = time.perf_counter()
            if name.startswith("surprise"):
                out = run_surprise(args.data_dir, fold, name)
            else:
                out = run_celrec(args.data_dir, fold, name, args)
            out["seconds"] = time.perf_counter() - start
            per_fold[name].append(out)
            print(f"fold {fold} {name:<22} rmse {out['rmse']:.4f} "
                  f"cold<=5 {out['cold_rmse']:.4f} ({out['seconds']:.0f}s)", file=sys.stderr)
    summary = {n: {"rmse": _mean([r["rmse"] for r in rs]),
                   "cold_rmse": _mean([r["cold_rmse"] for r in rs]),
                   "memory_bytes": rs[0]["memory_bytes"],
                   "compression_ratio": rs[0]["compression_ratio"],
                   "table_compression_ratio": rs[0]["table_compression_ratio"]}
               for n, rs in per_fold.items()}
    report = {"dataset": "MovieLens-100K u1..u5", "folds": folds,
              "settings": {k: _portable(v) for k, v in vars(args).items()},
              "summary": summary, "per_fold": per_fold}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    title = (f"validation splits (80/20 of u<fold>.base, seed {args.split_seed}) of folds"
             if args.validation else "official folds")
    lines = [f"# ML-100K {title} {args.folds}: mean test RMSE",
             "", f"Model {args.model}, d={args.dim}, {args.clusters} item clusters "
             "(memory: item side only; tables + assignment arrays + cel's own item biases, "
             "scales and extra-row weights; embedding table: the rows alone).", "",
             "| method | RMSE | RMSE items <=5 train ratings | item memory (B) | compression "
             "| embedding table compression |",
             "|---|---|---|---|---|---|"]
    for n, s in summary.items():
        mem = "-" if s["memory_bytes"] is None else str(s["memory_bytes"])
        ratio, table = (("-" if s[k] is None else f"{s[k]:.1f}x")
                        for k in ("compression_ratio", "table_compression_ratio"))
        lines.append(f"| {n} | {s['rmse']:.4f} | {s['cold_rmse']:.4f} | {mem} | {ratio} "
                     f"| {table} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
