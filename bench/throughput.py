"""Online CEL training throughput (events/s), per micro-batch size and interaction model.

    python bench/throughput.py [--device cpu|cuda|auto] [--threads 2] [--batches 1024,4096]
        [--entities 1000000] [--steps 60] [--interaction mf]

Each run: a fresh OnlineCEL with ``--entities`` users and items pre-registered (not timed),
an untimed warm-up, then ``--steps`` timed ``step()`` calls on pre-generated batches already
on the device (full online update: gradient step, ring buffers, reassignment, splits).
Also times ``predict()`` on the same batches. Writes bench/results/throughput.json and .md
(or ``throughput_<device>_<interaction>`` when not the CPU/MF default).

Adding an interaction model: register a factory in ``INTERACTIONS`` (config -> nn.Module
taking user and item rows ``(B, dim + 1)``, last column the bias, returning raw scores);
``mf`` and ``deepfm`` (``cel.models.DeepFM``) are registered.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from online_update import add_model_args, build, config_from, make_stream, sync  # noqa: E402

from cel.models import DeepFM  # noqa: E402
from cel.online import MFInteraction, OnlineCELConfig, resolve_device  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# Interaction hook: name -> factory. Others add their models here (DeepFM-style, ...).
INTERACTIONS: dict[str, Callable[[OnlineCELConfig], nn.Module]] = {
    "mf": lambda cfg: MFInteraction(),
    "deepfm": lambda cfg: DeepFM(cfg.dim),
}


def measure(batch: int, args: argparse.Namespace, cfg: OnlineCELConfig,
            device: torch.device) -> dict:
    model = build(args.entities, cfg, device)
    model.model = INTERACTIONS[args.interaction](cfg).to(device)
    stream = [(u.to(device), i.to(device), y.to(device))
              for u, i, y in make_stream(args.warmup + args.steps, batch, args.entities,
                                         args.seed)]
    for u, i, y in stream[: args.warmup]:
        model.step(u, i, y)
    timed = stream[args.warmup:]
    per_step: list[float] = []
    sync(device)
    start = time.perf_counter()
    for u, i, y in timed:
        t = time.perf_counter()
        model.step(u, i, y)
        sync(device)
        per_step.append(time.perf_counter() - t)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    for u, i, _ in timed:
        model.predict(u, i)
    sync(device)
    predict_s = time.perf_counter() - start
    events = batch * len(timed)
    return {
        "batch": batch,
        "train_events_per_s": events / train_s,
        "train_median_ms_per_batch": statistics.median(per_step) * 1000.0,
        "predict_events_per_s": events / predict_s,
        "timed_events": events,
        "clusters": [model.cluster_sizes(s).numel() for s in ("user", "item")],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="256,1024,4096", help="micro-batch sizes")
    ap.add_argument("--entities", type=int, default=1_000_000, help="known ids per side")
    ap.add_argument("--steps", type=int, default=60, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--interaction", choices=sorted(INTERACTIONS), default="mf")
    add_model_args(ap)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = config_from(args)
    load_before = os.getloadavg()
    rows = []
    for batch in sorted(int(b) for b in args.batches.split(",")):
        row = measure(batch, args, cfg, device)
        rows.append(row)
        print(f"batch {batch:>6}: train {row['train_events_per_s']:>12,.0f} events/s "
              f"(median {row['train_median_ms_per_batch']:.2f} ms/batch), "
              f"predict {row['predict_events_per_s']:>12,.0f} events/s", flush=True)
    result = {
        "benchmark": "throughput",
        "interaction": args.interaction,
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": args.threads,
        "entities_per_side": args.entities,
        "config": {k: getattr(cfg, k) for k in ("dim", "user_clusters", "initial_clusters",
                                                "candidates", "history", "state_capacity",
                                                "split_window", "loss")},
        "results": rows,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "cpus": os.cpu_count(), "loadavg_before": load_before,
                        "loadavg_after": os.getloadavg(),
                        "command": "python bench/throughput.py " + " ".join(
                            argv if argv is not None else sys.argv[1:])},
    }
    default = device.type == "cpu" and args.interaction == "mf"
    out = Path(args.out) if args.out else RESULTS / (
        "throughput" if default else f"throughput_{device.type}_{args.interaction}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"-> {out}.json/.md")
    return result


def markdown(r: dict) -> str:
    env = r["environment"]
    lines = [
        f"# Online CEL training throughput ({r['interaction']}, {r['device']})",
        "",
        f"`{env['command']}`  ",
        f"{r['device_name']}, {r['threads']} torch threads, {r['entities_per_side']:,} known "
        f"ids per side, torch {env['torch']}, load average before/after "
        f"{env['loadavg_before'][0]:.1f}/{env['loadavg_after'][0]:.1f}",
        "",
        "| micro-batch | train events/s | median ms/batch | predict events/s |",
        "|---:|---:|---:|---:|",
    ]
    for row in r["results"]:
        lines.append(f"| {row['batch']:,} | {row['train_events_per_s']:,.0f} "
                     f"| {row['train_median_ms_per_batch']:.2f} "
                     f"| {row['predict_events_per_s']:,.0f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
