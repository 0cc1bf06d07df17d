"""SAML against the shared DeepFM it builds on, on several multi-scenario generator configs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/saml_floor.py [--configs a,b,...] [--dim 16]
        [--protocol random|stream]

Each config is written as a CSV (user,item,value,scenario) and run through ``celrec eval
--model saml --methods cel`` (the preset's defaults). Its report carries SAML's AUC and the
shared model's (the DeepFM of ``celrec eval --model deepfm --side both`` on the same data,
which SAML builds on), overall and per scenario: on the test part (random protocol), or
progressive over the file as one stream, each batch scored before it is learnt (stream).
Writes bench/results/saml_floor.md and .json (stream: saml_floor_stream.*).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cel.synthetic_scenarios import make_scenario_data  # noqa: E402
from celrec.presets import load_preset  # noqa: E402
from cli.evaluation.cli import build_parser  # noqa: E402
from cli.evaluation.multiscenario import cli_report  # noqa: E402

# name -> generator arguments (per-scenario samples kept small: a run is minutes on 2 cores)
CONFIGS: dict[str, dict] = {
    "s4g12": {"scenarios": 4, "groups": 12},  # the shape: 4 scenarios, 12 groups
    "s3g8": {"scenarios": 3, "groups": 8},
    "s2g6-weak": {"scenarios": 2, "groups": 6, "strength": 1.0},
    "s5g10-diverse": {"scenarios": 5, "groups": 10, "changed_cells": 0.6},
    "s3g8-tiny": {"scenarios": 3, "groups": 8, "small_ratio": 0.03},
    # dense: about 150 events per user, so the group interactions are learnable (on the
    # configs above every model stays near a biases-only AUC while the ceiling is ~0.87)
    "s3g8-dense": {"scenarios": 3, "groups": 8, "num_users": 300, "num_items": 200,
                   "per_scenario": 20_000},
    "s4g6-dense-diverse": {"scenarios": 4, "groups": 6, "num_users": 300, "num_items": 200,
                           "per_scenario": 15_000, "changed_cells": 0.6},
    # more dense shapes (added after the cell design was settled, seed 0 run once): more
    # scenarios and groups, a weak signal, a tinier small scenario
    "s5g10-dense-diverse": {"scenarios": 5, "groups": 10, "num_users": 300, "num_items": 200,
                            "per_scenario": 12_000, "changed_cells": 0.6},
    "s2g6-dense-weak": {"scenarios": 2, "groups": 6, "strength": 1.0, "num_users": 300,
                        "num_items": 200, "per_scenario": 20_000},
    "s3g8-dense-tiny": {"scenarios": 3, "groups": 8, "small_ratio": 0.03, "num_users": 300,
                        "num_items": 200, "per_scenario": 20_000},
}
SIZE = {"num_users": 1500, "num_items": 800, "per_scenario": 10_000}


DATA = ROOT.parent / "shared" / "data"
# the public multi-scenario samples (tiny: smoke runs whose AUCs mean little), written as
# user,item,value,scenario: Alimama display ads (user, ad category, click, ad slot ``pid``)
# and Ali-CCP (fields 101 user, 205 item, 301 scenario)
SAMPLES = ("alimama-sample", "aliccp-sample")


def write_sample_csv(path: Path, name: str) -> bool:
    """The sample's rows as a CSV; False when its file is absent."""
    rows = ["user,item,value,scenario"]
    if name == "alimama-sample":
        source = DATA / "paddlerec_samples" / "alimama_dmr" / "alimama_sampled_train.txt"
        if not source.is_file():
            return False
        for line in source.open():
            r = line.strip().split(",")
            if len(r) == 267:
                rows.append(f"u{r[250]},c{r[260]},{int(float(r[266]))},p{r[265]}")
    else:
        folder = DATA / "torch-rechub_samples" / "ali-ccp"
        files = [folder / f"ali_ccp_{p}_sample.csv" for p in ("train", "val", "test")]
        if not all(f.is_file() for f in files):
            return False
        for f in files:
            for r in csv.DictReader(f.open()):
                rows.append(f"u{r['101']},i{r['205']},{int(float(r['click']))},s{r['301']}")
    path.write_text("\n".join(rows) + "\n")
    return True


def write_csv(path: Path, kwargs: dict, seed: int) -> None:
    d = make_scenario_data(seed=seed, **{**SIZE, **kwargs})
    rows = ["user,item,value,scenario"]
    for part in (d.train, d.test):
        for u, i, s, y in zip(part.users.tolist(), part.items.tolist(),
                              part.scenarios.tolist(), part.labels.tolist(), strict=True):
            rows.append(f"u{u},i{i},{int(y)},sc{s}")
    path.write_text("\n".join(rows) + "\n")


def served(r: dict) -> str:
    """Which deviation each scenario serves (offline), e.g. ``1 cells, 3 branches``; ``-``:
    the shared model everywhere (and always in the stream table, whose gate switches over
    the stream)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(r["deviation"].items())) or "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join([*CONFIGS, *SAMPLES]))
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", choices=("random", "stream"), default="random")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            path = Path(tmp) / f"{name}.csv"
            if name in SAMPLES:
                if not write_sample_csv(path, name):
                    print(f"{name}: skipped, its file is not under {DATA}", file=sys.stderr)
                    continue
            else:
                write_csv(path, CONFIGS[name], args.seed)
            eval_args = build_parser().parse_args(
                ["--data", str(path), "--format", "csv", "--model", "saml", "--methods", "cel",
                 "--dim", str(args.dim), "--seed", str(args.seed), "--device", "cpu",
                 "--protocol", args.protocol])
            clock = time.perf_counter()
            result = cli_report(eval_args, load_preset())["results"][0]
            small = max(result["scenarios"], key=lambda k: -result["scenarios"][k]["n"])
            report[name] = {"saml": result["scenarios"], "shared": result["shared"],
                            "small": small, "deviation": result.get("deviation", {}),
                            "seconds": time.perf_counter() - clock}
            print(name, {k: (round(result["scenarios"][k]["auc"], 4),
                             round(result["shared"][k]["auc"], 4))
                         for k in result["scenarios"]}, file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "saml_floor" if args.protocol == "random" else "saml_floor_stream"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    figure = "test AUC" if args.protocol == "random" else "progressive AUC"
    lines = [f"# SAML against the shared DeepFM it builds on ({args.protocol} protocol, "
             f"{figure})", "",
             f"`OMP_NUM_THREADS=1 .venv/bin/python bench/saml_floor.py --dim {args.dim} "
             f"--protocol {args.protocol}`; "
             "generator `cel.synthetic_scenarios` (1,500 users, 800 items, 10,000 samples per "
             "scenario unless the config says otherwise, the last scenario smaller), seed "
             f"{args.seed}.", "",
             "| config | SAML all | shared all | SAML small scenario | shared small scenario "
             "| small test samples | deviation served | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report.items():
        s = r["small"]
        shape = CONFIGS.get(name, "(public sample)")
        lines.append(f"| {name} {shape} | {r['saml']['all']['auc']:.4f} | "
                     f"{r['shared']['all']['auc']:.4f} | {r['saml'][s]['auc']:.4f} | "
                     f"{r['shared'][s]['auc']:.4f} | {r['saml'][s]['n']} | "
                     f"{served(r)} | {r['seconds']:.0f} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
