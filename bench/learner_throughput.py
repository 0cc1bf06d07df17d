"""The trainer's learner per micro-batch: with and without the recommendation-weight check,
and without the co-liked rows (``cel.covisit``).

    OMP_NUM_THREADS=2 .venv/bin/python bench/learner_throughput.py [--entities 1000000]

``bench/throughput.py`` times ``OnlineCEL.step``; this times ``CELLearner.learn`` (id maps,
labels, the step, the positives' counts and the retrieval-weight evidence of
``cel.retrieval``, the co-liked rows and their weight's evidence), as is, with the weight
checks switched off, and with the co-liked rows off (``CELREC_COLIKED=false``),
alternating, on
1,024-event batches of random clicks over ``--entities`` known ids per side. Writes
bench/results/learner_throughput.md and .json (medians of each run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celrec.settings import Settings  # noqa: E402
from schemas.events import Event, EventType  # noqa: E402
from trainer.cel_learner import CELLearner  # noqa: E402

BATCH = 1024


def run(entities: int, check: bool, batches: int, seed: int, coliked: bool = True) -> float:
    """Median seconds per batch after 10 warm-up batches."""
    learner = CELLearner(Settings(  # type: ignore[call-arg]
        _env_file=None, device="cpu", coliked=coliked))
    if not check:
        learner._judge_retrieval = lambda *args: None  # type: ignore[method-assign]
    for side in ("user", "item"):
        ids, _ = learner.ids[side].lookup_or_add(f"{side[0]}{k}" for k in range(entities))
        learner.model.register(side, torch.from_numpy(ids))
    rng = np.random.default_rng(seed)

    def batch(n: int) -> list[Event]:
        u, i = rng.integers(0, entities, BATCH), rng.integers(0, entities, BATCH)
        y = rng.random(BATCH) < 0.5
        return [Event(event_id=f"e{n}.{k}", user_id=f"u{a}", item_id=f"i{b}",
                      event_type=EventType.click, value=float(c))
                for k, (a, b, c) in enumerate(zip(u, i, y, strict=True))]

    work = [batch(n) for n in range(batches + 10)]
    for events in work[:10]:
        learner.learn(events)
    times = []
    for events in work[10:]:
        clock = time.perf_counter()
        learner.learn(events)
        times.append(time.perf_counter() - clock)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for r in range(args.repeats):
        for check, coliked in ((False, True), (True, True), (True, False)):
            seconds = run(args.entities, check, args.batches, seed=r, coliked=coliked)
            rows.append({"repeat": r, "weight_check": check, "coliked": coliked,
                         "ms_per_batch": 1000 * seconds, "events_per_s": BATCH / seconds})
            print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "results"
    (out / "learner_throughput.json").write_text(json.dumps(
        {"entities": args.entities, "batch": BATCH, "threads": args.threads, "runs": rows},
        indent=1) + "\n")
    lines = ["# The trainer's learner per 1,024-event batch: the recommendation-weight "
             "checks and the co-liked items", "",
             f"`OMP_NUM_THREADS={args.threads} .venv/bin/python bench/learner_throughput.py "
             f"--entities {args.entities}`: {args.entities:,} known ids per side, random "
             "clicks, medians over each run; runs alternate.", "",
             "| run | weight checks | co-liked items | median ms/batch | events/s |",
             "|---|---|---|---:|---:|"]
    lines += [f"| {r['repeat'] + 1} | {'on' if r['weight_check'] else 'off'} | "
              f"{'on' if r['coliked'] else 'off'} | "
              f"{r['ms_per_batch']:.2f} | {r['events_per_s']:,.0f} |" for r in rows]
    (out / "learner_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
