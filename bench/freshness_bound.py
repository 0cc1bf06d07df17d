"""How much of the per-event peers' lead is freshness? A chunk-fresh reference on the tuning cut.

    OMP_NUM_THREADS=1 .venv/bin/python bench/freshness_bound.py [--stream ml100k-likes]
        [--events 50000]

The prequential protocol scores a chunk of 200 events before any of them is learnt; the peers
may learn one event at a time. This scores the tuning cut (the stream's first ``--events``)
side by side: celrec as served, River FM learning per event and per chunk
(``bench/peers.py``), and a batch reference of what chunk freshness allows a biases model:
global, user and item biases refit before every chunk on ALL earlier events (warm-started
full-batch Adam, 15 iterations, L2 1 per bias). If the reference stays below the per-event peer, the
peer's lead is the freshness the protocol denies to any served model, not model quality.
Writes bench/results/freshness_bound.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peers import make_peer  # noqa: E402
from prequential import CHUNK, auc, logloss  # noqa: E402
from streams import load_stream  # noqa: E402


def dense(keys: list[str]) -> torch.Tensor:
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys])


def refit_biases(users: list[str], items: list[str], labels: np.ndarray,
                 iterations: int = 15, l2: float = 1.0) -> np.ndarray:
    """Per chunk: predict with the biases fitted on every earlier event, then refit."""
    u, i = dense(users), dense(items)
    y = torch.from_numpy(labels.astype(np.float32))
    bu = torch.zeros(int(u.max()) + 1, requires_grad=True)
    bi = torch.zeros(int(i.max()) + 1, requires_grad=True)
    b0 = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([bu, bi, b0], lr=0.05)
    preds = []
    for start in range(0, len(y), CHUNK):
        end = min(len(y), start + CHUNK)
        with torch.no_grad():
            preds.append(torch.sigmoid(b0 + bu[u[start:end]] + bi[i[start:end]]))
        for _ in range(iterations):
            optimizer.zero_grad()
            logits = b0 + bu[u[:end]] + bi[i[:end]]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y[:end], reduction="sum")
            loss = (loss + l2 * (bu.square().sum() + bi.square().sum())) / end
            loss.backward()
            optimizer.step()
    return torch.cat(preds).numpy().astype(np.float64)


def river_fm(users: list[str], items: list[str], labels: np.ndarray, updates: str
             ) -> np.ndarray:
    peer = make_peer("river-fm", "binary", seed=0, updates=updates)
    stamps = np.zeros(len(labels))
    return np.concatenate([peer.process(users[s:s + CHUNK], items[s:s + CHUNK],
                                        labels[s:s + CHUNK], stamps[s:s + CHUNK])
                           for s in range(0, len(labels), CHUNK)])


def celrec(users: list[str], items: list[str], labels: np.ndarray) -> np.ndarray:
    from cli.evaluation.served import CelrecStream

    stream = CelrecStream("binary", seed=0)
    stamps = np.zeros(len(labels))
    return np.concatenate([stream.process(users[s:s + CHUNK], items[s:s + CHUNK],
                                          labels[s:s + CHUNK], stamps[s:s + CHUNK])
                           for s in range(0, len(labels), CHUNK)])


def figures(labels: np.ndarray, preds: np.ndarray, items: list[str]) -> dict:
    first = np.zeros(len(labels), bool)
    seen: set[str] = set()
    for k, item in enumerate(items):
        first[k] = item not in seen
        seen.add(item)
    return {"auc": auc(labels, preds), "logloss": logloss(labels, preds),
            "auc_first_sight": auc(labels[first], preds[first])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="ml100k-likes")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = load_stream(args.stream).head(args.events)
    users, items = list(s.users), list(s.items)
    labels = (np.asarray(s.values) > 0).astype(np.float64)
    rows = {
        "River FM, per event": river_fm(users, items, labels, "event"),
        "River FM, per chunk": river_fm(users, items, labels, "chunk"),
        "biases refit on all earlier events, per chunk": refit_biases(users, items, labels),
        "celrec (served, per chunk)": celrec(users, items, labels),
    }
    report = {name: figures(labels, p, items) for name, p in rows.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "freshness_bound.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# Freshness: {args.stream}, first {args.events} events (a tuning cut)", "",
             f"`OMP_NUM_THREADS=1 .venv/bin/python bench/freshness_bound.py --stream "
             f"{args.stream} --events {args.events}`", "",
             "| method | AUC | logloss | AUC first sight |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['auc_first_sight']:.4f} |"
              for n, r in report.items()]
    (args.out / "freshness_bound.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
