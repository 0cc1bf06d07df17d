"""How the online learner's defaults were chosen: one grid, the first part of every stream.

    python bench/prequential_tune.py [--grid defaults|recall] [--streams ...]

Tuning cuts (the evaluation streams' first parts only; the full streams of
bench/prequential.py and the held-out streams are never used to choose):
ml100k-likes first 50,000 events, taobao first 80,000, demo first 15,000, planted first
40,000 (a different workload shape: 3,000 users, 2,000 items, 12 groups, own biases,
Zipf-skewed popularity). Each grid row runs ``cel.online.OnlineCEL`` (the trainer's model
with the config below on top of its defaults) progressively in chunks of 200: predict the
chunk, then learn it. A row's figure is AUC / logloss / first-sight AUC per cut and the
mean AUC over the cuts; the default is the best mean.

``--grid rating``: the squared-loss learner (``CELREC_OBJECTIVE=rating``) on three cuts of the
ml100k-ratings stream's first 50,000 events (all of them; a seeded fifth of their users,
sparser; 4-5 star ratings with a quarter of the others, skewed to high ratings), RMSE per cut
after the first chunk (which every method scores before it has seen anything) and the mean.

``--grid batches``: today's defaults with chunks (the trainer's micro-batches, predicted then
learnt) of 1, 20, 200 or 1,000 events: the trainer batches what arrives.

``--grid recall``: the weight of the model's logit against log(1 + positives) in
recommendations (the default of ``cel.retrieval``, which the trainer leaves only on
evidence), by recall@10 on the same cuts with the evaluation protocol's queries (every 5th
positive after a 20% warm-up whose user had an earlier positive; the user's earlier items
excluded), ranking every known item.

Writes bench/results/prequential_tune_<grid>.jsonl (one line per row).
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
sys.path.insert(0, str(ROOT / "bench"))

from prequential import auc, logloss, select_recall_queries  # noqa: E402
from streams import load_stream  # noqa: E402

from cel.online import OnlineCEL, OnlineCELConfig  # noqa: E402

CUTS = {"ml100k-likes": 50_000, "taobao": 80_000, "demo": 15_000, "planted": 40_000}
CHUNK = 200
# The learner before this work (cel.online defaults then), and the steps to today's.
BEFORE = {"entity_bias": False, "votes": False, "loss_reassign": True, "row_update": "mean",
          "init_std": 0.3, "initial_clusters": 4, "damping": 0.3}
GRIDS = {
    "defaults": [
        {"label": "before", **BEFORE},
        {"label": "+own biases", **BEFORE, "entity_bias": True},
        {"label": "+votes (loss vetoes)", **BEFORE, "entity_bias": True, "votes": True},
        {"label": "+adagrad rows", **BEFORE, "entity_bias": True, "votes": True,
         "row_update": "adagrad"},
        {"label": "chosen (today's defaults)"},
        {"label": "loss moves too", "loss_reassign": True},
        {"label": "no votes, loss moves", "votes": False, "loss_reassign": True},
        {"label": "no own biases", "entity_bias": False},
        {"label": "mean-gradient rows", "row_update": "mean"},
        {"bias_prior_events": 4}, {"bias_prior_events": 20}, {"bias_prior_events": 40},
        {"lr": 0.05}, {"lr": 0.3},
        {"initial_clusters": 4}, {"initial_clusters": 32},
        {"damping": 0.3}, {"vote_tolerance": 0.0}, {"vote_tolerance": 0.05},
        {"vote_window": 8}, {"init_std": 0.3}, {"dim": 64},
    ],
    # The same defaults learnt in the trainer's other micro-batch sizes (prequential_tuning.md)
    "batches": [{"micro_batch": b} for b in (1, 20, 200, 1000)],
    "recall": [{"weight": w} for w in (0.0, 0.125, 0.25, 0.5, 1.0)],
    "rating": [{"lr": lr} for lr in (0.01, 0.02, 0.03, 0.05, 0.1)]
    + [{"lr": 0.03, "bias_prior_events": k} for k in (5, 20)],
}
RATING_EVENTS = 50_000


def rating_cuts(data_root: str | None) -> dict[str, tuple[list[str], list[str], np.ndarray]]:
    s = load_stream("ml100k-ratings", data_root).head(RATING_EVENTS)
    values = np.asarray(s.values, np.float32)
    rng = np.random.default_rng(0)
    users = sorted(set(s.users))
    fifth = set(rng.choice(users, len(users) // 5, replace=False).tolist())
    sparse = [k for k, u in enumerate(s.users) if u in fifth]
    skewed = [k for k in range(len(values)) if values[k] >= 4 or rng.random() < 0.25]

    def pick(index: list[int]) -> tuple[list[str], list[str], np.ndarray]:
        return [s.users[k] for k in index], [s.items[k] for k in index], values[index]

    return {"ratings": pick(list(range(len(values)))), "sparse": pick(sparse),
            "skewed": pick(skewed)}


def progressive(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor,
                config: dict) -> torch.Tensor:
    """``cel.online.OnlineCEL`` with ``config`` over the stream: each chunk predicted, then
    learnt. ``micro_batch`` in ``config`` (the batches grid): chunks of that many events
    instead, as the trainer's batches are when traffic trickles in (a few events) or floods
    (a thousand), each served by the model that learnt every earlier batch."""
    config = dict(config)
    chunk = int(config.pop("micro_batch", CHUNK))
    model = OnlineCEL(OnlineCELConfig(**config), device="cpu")
    preds = []
    for s in range(0, len(users), chunk):
        preds.append(model.predict(users[s:s + chunk], items[s:s + chunk]))
        model.step(users[s:s + chunk], items[s:s + chunk], labels[s:s + chunk])
    return torch.cat(preds)


def run_rating(cut: tuple[list[str], list[str], np.ndarray], config: dict) -> dict:
    labels = torch.from_numpy(cut[2])
    preds = progressive(dense(cut[0]), dense(cut[1]), labels, {"loss": "mse", **config})
    err = (preds - labels).numpy().astype(np.float64)[CHUNK:]
    return {"rmse_after_first_chunk": float(np.sqrt(np.mean(err ** 2))), "events": len(labels)}


def dense(keys: list[str]) -> torch.Tensor:
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys])


def run_scores(stream, config: dict) -> dict:
    users, items = dense(stream.users), dense(stream.items)
    labels = torch.from_numpy(np.asarray(stream.values, np.float32))
    preds = progressive(users, items, labels, config)
    p, y = preds.numpy().astype(np.float64), labels.numpy().astype(np.float64)
    first = np.zeros(len(y), bool)
    seen: set[int] = set()
    for k, i in enumerate(items.tolist()):
        first[k] = i not in seen
        seen.add(i)
    both = len(np.unique(y[first])) == 2
    return {"auc": auc(y, p), "logloss": logloss(y, p),
            "first_sight_auc": auc(y[first], p[first]) if both else None}


def run_recall(stream, weights: list[float]) -> dict[float, float]:
    """recall@10 per weight, every weight ranking with the same model state."""
    users, items = dense(stream.users), dense(stream.items)
    values = np.asarray(stream.values, np.float32)
    labels = torch.from_numpy(values)
    queries = select_recall_queries(stream.users, values)
    query_at = set(queries)
    model = OnlineCEL(OnlineCELConfig(), device="cpu")
    n_items = int(items.max()) + 1
    positives = np.zeros(n_items)
    known = np.zeros(n_items, bool)
    seen: dict[int, set[int]] = {}
    hits = {w: 0 for w in weights}
    asked = 0
    for s in range(0, len(users), CHUNK):
        cand = np.flatnonzero(known)
        for e in range(s, min(s + CHUNK, len(users))):
            if e not in query_at or not len(cand):
                continue
            asked += 1
            u = int(users[e])
            with torch.no_grad():
                p = model.predict(torch.full((len(cand),), u), torch.from_numpy(cand))
            logit = torch.logit(p.clamp(1e-6, 1 - 1e-6)).numpy()
            exclude = seen.get(u, set())
            for w in weights:
                order = cand[np.argsort(-(np.log1p(positives[cand]) + w * logit),
                                        kind="stable")][:10 + len(exclude)]
                top = [i for i in order.tolist() if i not in exclude][:10]
                hits[w] += int(items[e]) in top
        model.step(users[s:s + CHUNK], items[s:s + CHUNK], labels[s:s + CHUNK])
        chunk_items = items[s:s + CHUNK].numpy()
        np.add.at(positives, chunk_items[values[s:s + CHUNK] > 0], 1)
        known[chunk_items] = True
        for u, i in zip(users[s:s + CHUNK].tolist(), chunk_items.tolist(), strict=True):
            seen.setdefault(u, set()).add(i)
    return {w: hits[w] / max(asked, 1) for w in weights}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="defaults")
    ap.add_argument("--streams", default=",".join(CUTS))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--seeds", type=int, default=1,
                    help="defaults grid: run each row with model seeds 0..N-1, mean AUC over all")
    ap.add_argument("--rows", default=None,
                    help="defaults grid: only these row numbers (comma-separated, from 0)")
    ap.add_argument("--tag", default="", help="suffix of the result file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out) / f"prequential_tune_{args.grid}{args.tag}.jsonl"
    rows = []
    if args.grid == "rating":
        rcuts = rating_cuts(args.data_root)
        for config in GRIDS["rating"]:
            result = {n: run_rating(c, config) for n, c in rcuts.items()}
            mean = float(np.mean([r["rmse_after_first_chunk"] for r in result.values()]))
            rows.append({"config": config, "mean_rmse": round(mean, 4),
                         **{n: round(r["rmse_after_first_chunk"], 4) for n, r in result.items()}})
            print(json.dumps(rows[-1]), flush=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"-> {out}")
        return 0
    cuts = {name: load_stream(name, args.data_root).head(CUTS[name])
            for name in args.streams.split(",")}
    if args.grid == "recall":
        weights = [row["weight"] for row in GRIDS["recall"]]
        per_stream = {name: run_recall(stream, weights) for name, stream in cuts.items()}
        for w in weights:
            rows.append({"weight": w, **{n: round(r[w], 4) for n, r in per_stream.items()}})
            print(json.dumps(rows[-1]), flush=True)
    else:
        chosen = GRIDS[args.grid] if args.rows is None else [
            GRIDS[args.grid][int(k)] for k in args.rows.split(",")]
        for row in chosen:
            config = {k: v for k, v in row.items() if k != "label"}
            clock = time.perf_counter()
            per_seed = [{name: run_scores(stream, {**config, "seed": seed})
                         for name, stream in cuts.items()} for seed in range(args.seeds)]
            result = {name: {k: None if per_seed[0][name][k] is None else float(np.mean(
                [r[name][k] for r in per_seed])) for k in per_seed[0][name]} for name in cuts}
            mean = float(np.mean([r["auc"] for r in result.values()]))
            rows.append({"label": row.get("label", json.dumps(config)), "config": config,
                         "seeds": args.seeds, "mean_auc": round(mean, 4),
                         "mean_auc_per_seed": [round(float(np.mean(
                             [r[n]["auc"] for n in cuts])), 4) for r in per_seed],
                         "seconds": round(time.perf_counter() - clock),
                         "cuts": {n: {k: None if v is None else round(v, 4) for k, v in r.items()}
                                  for n, r in result.items()}})
            print(json.dumps({"label": rows[-1]["label"], "mean_auc": rows[-1]["mean_auc"],
                              "per_seed": rows[-1]["mean_auc_per_seed"],
                              **{n: r["auc"] and round(r["auc"], 4)
                                 for n, r in result.items()}}), flush=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
