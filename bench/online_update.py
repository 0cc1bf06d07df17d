"""Online CEL: time per micro-batch versus the number of known entities.

    python bench/online_update.py [--scales 10000,100000,1000000,10000000] [--batches 60]
        [--repeats 3] [--threads 2] [--device cpu] [--stream same|spread]

For each scale N, a fresh OnlineCEL gets N users and N items pre-registered (random live
clusters; not timed), then the SAME stream of micro-batches (default 1024 events) is
replayed after a short untimed warm-up. With ``--stream same`` the batches are identical at
every scale (ids drawn from the smallest scale); with ``--stream spread`` the same
popularity ranks are scattered over all N ids (cache-unfriendly, more LRU evictions).
Writes bench/results/online_update[_<stream>].json and .md: median and p90 ms per batch per
scale and the ratio largest/smallest (target <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cel.online import OnlineCEL, OnlineCELConfig, resolve_device  # noqa: E402

RESULTS = ROOT / "bench" / "results"
_SPREAD = 2_654_435_761  # Knuth's multiplicative hash constant, coprime with any N < 2^31


def make_stream(batches: int, batch: int, id_range: int, seed: int = 0
                ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of (user rank, item rank, click) with a heavy head: rank = range**U - 1 is
    log-uniform, so a few ids are hot and most are rare, as in real traffic."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        u = (id_range ** torch.rand(batch, generator=g, dtype=torch.float64)).long() - 1
        i = (id_range ** torch.rand(batch, generator=g, dtype=torch.float64)).long() - 1
        # planted taste: users and items in 8 groups, clicks likely within a group
        p = torch.where(u % 8 == i % 8, 0.6, 0.05)
        out.append((u, i, (torch.rand(batch, generator=g) < p).float()))
    return out


def place(ranks: torch.Tensor, n: int, spread: bool) -> torch.Tensor:
    return (ranks * _SPREAD) % n if spread else ranks


def build(n: int, cfg: OnlineCELConfig, device: torch.device) -> OnlineCEL:
    model = OnlineCEL(cfg, device)
    g = torch.Generator().manual_seed(1)
    for side in ("user", "item"):
        chunk = 1 << 22  # register in chunks to keep the temporary tensors small
        for start in range(0, n, chunk):
            ids = torch.arange(start, min(n, start + chunk))
            clusters = torch.randint(0, cfg.initial_clusters, ids.shape, generator=g)
            model.register(side, ids, clusters)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Scale:
    """One model at one scale, its placed stream and the timings gathered so far."""

    def __init__(self, n: int, stream, warmup: int, cfg: OnlineCELConfig,
                 device: torch.device, spread: bool) -> None:
        t0 = time.perf_counter()
        self.n, self.device = n, device
        self.model = build(n, cfg, device)
        self.register_s = time.perf_counter() - t0
        self.batches = [(place(u, n, spread).to(device), place(i, n, spread).to(device),
                         y.to(device)) for u, i, y in stream]
        for u, i, y in self.batches[:warmup]:
            self.model.step(u, i, y)
        self.warmup = warmup
        self.times: list[float] = []
        self.reassigned = self.splits = 0

    def run(self) -> None:
        for u, i, y in self.batches[self.warmup:]:
            sync(self.device)
            t = time.perf_counter()
            out = self.model.step(u, i, y)
            sync(self.device)
            self.times.append((time.perf_counter() - t) * 1000.0)
            self.reassigned += out.reassigned["user"] + out.reassigned["item"]
            self.splits += out.splits["user"] + out.splits["item"]

    def summary(self) -> dict:
        times, model = self.times, self.model
        return {
            "entities_per_side": self.n,
            "median_ms": statistics.median(times),
            "p90_ms": percentile(times, 0.9),
            "mean_ms": statistics.fmean(times),
            "timed_batches": len(times),
            "reassigned_per_batch": self.reassigned / len(times),
            "splits": self.splits,
            "clusters": [model.cluster_sizes(s).numel() for s in ("user", "item")],
            "state_entities": [model.sides[s].used for s in ("user", "item")],
            "model_memory_bytes": model.memory_bytes(),
            "register_s": self.register_s,
        }


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Arguments both online-CEL benchmarks share: threads, device, model size, output."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--clusters", type=int, default=256, help="budget M_max per side")
    ap.add_argument("--initial-clusters", type=int, default=128)
    ap.add_argument("--state-capacity", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output path without extension")


def config_from(args: argparse.Namespace) -> OnlineCELConfig:
    return OnlineCELConfig(user_clusters=args.clusters, item_clusters=args.clusters,
                           initial_clusters=args.initial_clusters,
                           state_capacity=args.state_capacity, seed=args.seed)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="10000,100000,1000000,10000000")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=60, help="timed batches per repeat")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the scales")
    ap.add_argument("--stream", choices=("same", "spread"), default="same")
    add_model_args(ap)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    scales = sorted(int(float(s)) for s in args.scales.split(","))
    # ids of the stream are ranks below the smallest scale, so every batch is valid at all
    stream = make_stream(args.warmup + args.batches, args.batch, scales[0], args.seed)
    cfg = config_from(args)
    load_before = os.getloadavg()
    # All scales live side by side (10^7 per side is ~1 GiB) and the repeats are interleaved,
    # so drifting machine load hits every scale alike instead of skewing the ratio.
    runs = [Scale(n, stream, args.warmup, cfg, device, args.stream == "spread")
            for n in scales]
    for _ in range(args.repeats):
        for run in runs:
            run.run()
    rows = [run.summary() for run in runs]
    for row in rows:
        print(f"N={row['entities_per_side']:>11,}  median {row['median_ms']:7.2f} ms  "
              f"p90 {row['p90_ms']:7.2f} ms  memory {row['model_memory_bytes'] / 2**20:8.1f} MiB",
              flush=True)
    result = {
        "benchmark": "online_update",
        "stream": args.stream,
        "batch_events": args.batch,
        "threads": args.threads,
        "device": str(device),
        "config": {k: getattr(cfg, k) for k in ("dim", "user_clusters", "initial_clusters",
                                                "candidates", "history", "state_capacity",
                                                "split_window", "loss")},
        "scales": rows,
        "ratio_median_largest_smallest": rows[-1]["median_ms"] / rows[0]["median_ms"],
        "ratio_p90_largest_smallest": rows[-1]["p90_ms"] / rows[0]["p90_ms"],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "cpus": os.cpu_count(), "loadavg_before": load_before,
                        "loadavg_after": os.getloadavg(),
                        "command": "python bench/online_update.py " + " ".join(
                            argv if argv is not None else sys.argv[1:])},
    }
    out = Path(args.out) if args.out else RESULTS / (
        "online_update" if args.stream == "same" else f"online_update_{args.stream}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"ratio largest/smallest: median {result['ratio_median_largest_smallest']:.2f}x, "
          f"p90 {result['ratio_p90_largest_smallest']:.2f}x -> {out}.json/.md")
    return result


def markdown(r: dict) -> str:
    lines = [
        f"# Online CEL: time per micro-batch ({r['batch_events']} events) vs known entities",
        "",
        f"`{r['environment']['command']}`  ",
        f"device {r['device']}, {r['threads']} torch threads, stream `{r['stream']}`, "
        f"torch {r['environment']['torch']}, load average before/after "
        f"{r['environment']['loadavg_before'][0]:.1f}/{r['environment']['loadavg_after'][0]:.1f}",
        "",
        "| entities per side | median ms | p90 ms | mean ms | reassigned/batch | splits "
        "| model memory MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["scales"]:
        lines.append(f"| {s['entities_per_side']:,} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} "
                     f"| {s['mean_ms']:.2f} | {s['reassigned_per_batch']:.0f} | {s['splits']} "
                     f"| {s['model_memory_bytes'] / 2**20:.1f} |")
    lines += ["", f"Ratio largest/smallest scale: median "
              f"**{r['ratio_median_largest_smallest']:.2f}x**, p90 "
              f"{r['ratio_p90_largest_smallest']:.2f}x (target <= 1.5x). Peak RSS "
              f"{r['peak_rss_bytes'] / 2**30:.2f} GiB.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
