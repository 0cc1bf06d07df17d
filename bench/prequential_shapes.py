"""Streams of other shapes, never used to choose a default: how the defaults carry over.

    python bench/prequential_shapes.py

- ``ml-skewed``: MovieLens-100K with "rating >= 3" as the positive (82% positives);
- ``ml-sparse``: MovieLens-100K likes of every fifth user (19,008 events);
- ``planted-b2``: ``DemoWorkload(users=5000, items=1500, groups=6, bias_std=1.5,
  popularity_skew=0.5, seed=7)``, 30,000 events;
- ``low-ctr``: 11% positives, ``DemoWorkload(users=3000, items=1500, groups=6,
  p_match=0.12, p_other=0.01, bias_std=1.0, popularity_skew=0.8, seed=11)``, 40,000 events;
- ``low-ctr-biases``: 9% positives, no groups, own biases only (``groups=1, p_match=p_other=
  0.03, bias_std=1.5``, seed 12), 40,000 events;
- ``high-ctr``: 73% positives, ``DemoWorkload(users=2000, items=800, groups=10,
  p_match=0.9, p_other=0.6, bias_std=0.8, seed=13)``, 40,000 events.

Same protocol and peers as bench/prequential.py (peers learn per event; ``--peer-updates
chunk``: at celrec's freshness), with the AUC split by the user's freshness at the chunk.
Writes bench/results/prequential_shapes.md (``_chunk.md`` with ``--peer-updates chunk``).
``--chunk 1`` gives celrec the peers' per-event freshness (a diagnostic of the learner, not
the served protocol; writes ``_event_chunk1.md``); ``--shapes`` picks some of the streams.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from peers import UPDATES  # noqa: E402
from prequential import CHUNK, freshness_table, make_method, run_stream  # noqa: E402
from streams import Stream, load_stream, load_workload  # noqa: E402

METHODS = ("celrec", "counter", "river-fm", "vw-lrq", "popularity")
SHOWN = ("auc", "logloss", "auc_first_sight", "recall_at_10")


def shapes() -> dict[str, Stream]:
    ml = load_stream("ml100k-ratings")
    r = np.asarray(ml.values)
    keep = [k for k, u in enumerate(ml.users) if int(u) % 5 == 0]
    return {
        "ml-skewed": Stream("ml-skewed", "binary", ml.users, ml.items,
                            (r >= 3).astype(np.float32), ml.timestamps),
        "ml-sparse": Stream("ml-sparse", "binary", [ml.users[k] for k in keep],
                            [ml.items[k] for k in keep], (r[keep] >= 4).astype(np.float32),
                            ml.timestamps[keep]),
        "planted-b2": load_workload("planted-b2", 30_000, users=5000, items=1500, groups=6,
                                    bias_std=1.5, popularity_skew=0.5, seed=7),
        "low-ctr": load_workload("low-ctr", 40_000, users=3000, items=1500, groups=6,
                                 p_match=0.12, p_other=0.01, bias_std=1.0,
                                 popularity_skew=0.8, seed=11),
        "low-ctr-biases": load_workload("low-ctr-biases", 40_000, users=3000, items=1500,
                                        groups=1, p_match=0.03, p_other=0.03, bias_std=1.5,
                                        popularity_skew=0.8, seed=12),
        "high-ctr": load_workload("high-ctr", 40_000, users=2000, items=800, groups=10,
                                  p_match=0.9, p_other=0.6, bias_std=0.8, seed=13),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-updates", choices=UPDATES, default="event")
    ap.add_argument("--chunk", type=int, default=CHUNK,
                    help="events per chunk (1: celrec learns per event too, a diagnostic)")
    ap.add_argument("--shapes", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args(argv)
    chunk = args.peer_updates == "chunk"
    flag = (" --peer-updates chunk" if chunk else "") + (
        f" --chunk {args.chunk}" if args.chunk != CHUNK else "") + (
        f" --shapes {args.shapes}" if args.shapes else "")
    how = "a chunk after scoring it (celrec's freshness)" if chunk else "one event at a time"
    lines = ["# Streams of other shapes (not used to choose any default)", "",
             f"`python bench/prequential_shapes.py{flag}`; peers learn {how}; chunks of "
             f"{args.chunk} events", ""]
    wanted = [s for s in args.shapes.split(",") if s]
    for name, stream in shapes().items():
        if wanted and name not in wanted:
            continue
        methods = {m: make_method(m, "binary", peer_updates=args.peer_updates)
                   for m in METHODS}
        results, _ = run_stream(stream, methods, chunk=args.chunk, progress=False)
        lines += [f"## {name}: {len(stream)} events, positive rate "
                  f"{float(np.mean(stream.values)):.3f}", "",
                  "| method | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
        for method, figures in results.items():
            first = figures.get("auc_by_item_history", {}).get("0", {}).get("value")
            figures = {**figures, "auc_first_sight": first}
            cells = [f"{figures[k]:.4f}" if isinstance(figures.get(k), float) else ""
                     for k in SHOWN]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += [*freshness_table(results, "auc"), ""]
    text = "\n".join(lines)
    stem = "prequential_shapes" + ("_chunk" if chunk else "") + (
        f"_event_chunk{args.chunk}" if args.chunk != CHUNK else "")
    (ROOT / "bench" / "results" / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
