"""Offline CEL on the implicit sets: is cel at least the biases-only model and full?

    OMP_NUM_THREADS=1 .venv/bin/python bench/implicit_floor.py

``celrec eval --protocol random --model mf --methods bias,full,cel`` with the preset's
defaults (one sampled negative per positive, random 80/20 split, seed 0) on two implicit
sets of other shapes than MovieLens, run once as a check of defaults chosen elsewhere:
the Taobao UserBehavior prefix (84k events, 55k items: almost every item is rare) and
Amazon Video Games (the SASRec file's users 1-6000, ~82k events, written as UserBehavior
rows with the line number as time). Writes bench/results/implicit_floor.md and .json.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.evaluation.cli import main as eval_main  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TAOBAO = DATA / "taobao-userbehavior" / "UserBehavior_prefix_84k.csv"
VIDEO = DATA / "amazon-video-games-sasrec" / "Video.txt"
VIDEO_USERS = 6000


def video_rows(path: Path) -> Path:
    out = Path(tempfile.mkdtemp()) / "video_games.csv"
    with path.open() as src, out.open("w") as dst:
        for n, line in enumerate(src, 1):
            user, item = line.split()
            if int(user) <= VIDEO_USERS:
                dst.write(f"{user},{item},0,pv,{n}\n")
    return out


def run(path: Path) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = eval_main(["--data", str(path), "--format", "userbehavior", "--protocol",
                          "random", "--model", "mf", "--methods", "bias,full,cel", "--json",
                          "--quiet"])
    if code:
        raise SystemExit(f"celrec eval failed on {path}")
    return json.loads(buf.getvalue())


def main() -> int:
    sets = {"taobao-84k": TAOBAO, "video-games-6000-users": VIDEO}
    report = {}
    for name, path in sets.items():
        if not path.is_file():
            print(f"{name}: skipped, {path} is absent", file=sys.stderr)
            continue
        clock = time.perf_counter()
        data = video_rows(path) if path == VIDEO else path
        report[name] = {"seconds": time.perf_counter() - clock, **run(data)}
        report[name]["seconds"] = time.perf_counter() - clock
    out = ROOT / "bench" / "results"
    (out / "implicit_floor.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Offline CEL on implicit sets: bias / full / cel (random 80/20, test AUC)", "",
             "`OMP_NUM_THREADS=1 .venv/bin/python bench/implicit_floor.py` (the preset's "
             "defaults, not tuned on these sets)", "",
             "| set | method | AUC | logloss | AUC items 0 train events | 1-5 | 6-20 | >20 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rep in report.items():
        for r in rep["results"]:
            b = r["buckets"]["item"]
            cells = [f"{b[k]['auc']:.4f} (n={b[k]['n']})" if b.get(k, {}).get("auc") is not None
                     else "" for k in ("0", "1-5", "6-20", ">20")]
            lines.append(f"| {name} | {r['method']} | {r['auc']:.4f} | {r['logloss']:.4f} | "
                         + " | ".join(cells) + " |")
    (out / "implicit_floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
