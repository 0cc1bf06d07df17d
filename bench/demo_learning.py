"""Does `celrec run --demo` show learning? The dashboard's online AUC over time.

    python bench/demo_learning.py [--seconds 180] [--every 10]

Starts `celrec run --demo` (embedded, default settings) on free loopback ports, reads the
trainer's progressive AUC and log loss (``celrec_trainer_online_auc``: predicted before
learning, over a sliding window of events, what the dashboard plots) every ``--every``
seconds for ``--seconds``, stops the service, and writes bench/results/demo_learning.json
and .md with the demo workload's ceiling AUC (true click probabilities as scores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celrec.demo import DemoWorkload  # noqa: E402

METRIC = re.compile(r'^celrec_trainer_(online_auc|online_logloss|online_window_events)'
                    r'\{scenario="demo"\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {name: float(value) for name, value in METRIC.findall(text)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo_learning"))
    args = ap.parse_args(argv)
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "CELREC_PORT": str(port), "CELREC_HOST": "127.0.0.1",
           "CELREC_TRAINER_METRICS_PORT": str(metrics_port)}
    celrec = Path(sys.executable).with_name("celrec")
    proc = subprocess.Popen([str(celrec), "run", "--demo"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    start, samples = time.monotonic(), []
    try:
        while time.monotonic() - start < args.seconds:
            time.sleep(args.every)
            values = read(f"http://127.0.0.1:{metrics_port}/metrics")
            sample = {"seconds": round(time.monotonic() - start), **values}
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            if proc.poll() is not None:
                print("celrec run --demo stopped early", file=sys.stderr)
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    ceiling = DemoWorkload().ceiling_auc()
    within = next((s["seconds"] for s in samples
                   if s.get("online_auc", 0.0) >= ceiling - 0.05), None)
    report = {"command": "python bench/demo_learning.py " + " ".join(argv or sys.argv[1:]),
              "ceiling_auc": ceiling, "seconds_to_within_0.05": within, "samples": samples,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# `celrec run --demo`: the dashboard's online AUC over time ({report['date']})",
             "", f"`{report['command']}`", "",
             f"Ceiling AUC of the demo workload (true click probabilities): {ceiling:.4f}. "
             f"Online AUC within 0.05 of it after: {within} s.", "",
             "| seconds | online AUC | online log loss | window events |", "|---|---|---|---|"]
    lines += [f"| {s['seconds']} | {s.get('online_auc', float('nan')):.4f} | "
              f"{s.get('online_logloss', float('nan')):.4f} | "
              f"{int(s.get('online_window_events', 0))} |" for s in samples]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if samples else 1


if __name__ == "__main__":
    raise SystemExit(main())
