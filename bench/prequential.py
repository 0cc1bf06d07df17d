"""Prequential (test-then-train) benchmark: celrec's online learner side by side with online peers.

Protocol (/work/shared/docs/evaluation.md). A stream (bench/streams.py) is cut into chunks of 200
events in stream order. For each chunk, first the recall@10 queries that fall in it are put to every
recommending method, then every method ``process``-es the chunk: it returns a prediction for each
event of the chunk, each made before the method learnt that event, and has learnt the whole chunk
when it returns. celrec (``cli.evaluation.served.CelrecStream``) scores the whole chunk, then
learns it. Peers (bench/peers.py) learn one event at a time, in order; ``--peer-updates`` says when
the scoring peers score: ``event`` (default) scores each event just before learning it (one event
fresher than celrec), ``chunk`` scores the whole chunk with the state from before it, then learns
its events one at a time -- celrec's freshness. The top-N peers answer the recall queries before
the chunk is processed, so they are the same in both modes. Every method sees the same events in
the same order, with the same seed.

Figures per method over the whole stream:

- binary streams: progressive AUC (ties count half), AUC of the second half, logloss (probabilities
  clipped to [1e-7, 1 - 1e-7]), AUC by the number of earlier events (any value) of the event's item
  in the stream: ``0`` (first sight), ``1-5``, ``6-20``, ``>20``, the same for the user side, and
  the AUC of all events so far at every 10% of the stream;
- rating streams: RMSE over the whole stream, the second half and the same item buckets;
- recall@10 (binary streams): positives (value > 0) in time order; the first 20% of them warm up;
  counting the positives after the warm-up, the 5th, 10th, 15th ... is a query when its user had a
  positive earlier in the stream. Before the query's chunk is processed by anyone, each recommending
  method is asked ``recommend(user, 10, exclude=items the user had any event with before this
  chunk)``; a hit when the event's item is among the 10. recall = hits / queries.
- wall seconds (time spent in ``process`` and ``recommend``) and ``memory_bytes()`` at the end.

Run::

    .venv/bin/python bench/prequential.py \\
        --streams ml100k-likes,ml100k-ratings,taobao,demo,planted \\
        --methods celrec,counter,river-fm,vw-lrq,popularity,isgd,river-baseline,river-biasedmf \\
        [--peer-updates chunk --tag peers_chunk]

Writes ``bench/results/prequential[_TAG].json``, ``.md`` and ``.png`` (progressive AUC per binary
stream; skipped with a message when matplotlib is missing).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))

from peers import UPDATES, PeerUnavailable, make_peer  # noqa: E402
from streams import (  # noqa: E402
    STREAMS,
    Stream,
    StreamDataMissing,
    StreamUnavailable,
    load_stream,
)

CHUNK = 200
RECALL_N = 10
WARMUP_FRACTION = 0.2
QUERY_EVERY = 5
CURVE_POINTS = 10
CLIP = 1e-7
BUCKETS = (("0", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20), (">20", 21, None))

METHODS_BY_TASK = {
    "binary": ("celrec", "counter", "river-fm", "vw-lrq", "popularity", "isgd"),
    "rating": ("celrec", "counter", "river-baseline", "river-biasedmf"),
}
ALL_METHODS = ("celrec", "counter", "river-fm", "vw-lrq", "popularity", "isgd",
               "river-baseline", "river-biasedmf")


class StreamMethod(Protocol):
    name: str

    def process(self, users: list[str], items: list[str], values: np.ndarray,
                timestamps: np.ndarray) -> np.ndarray | None:
        """Predictions for each event of the chunk, each made BEFORE the method learns that event;
        then the method has learnt the whole chunk. None: the method only recommends (it still
        learns)."""

    def recommend(self, user: str, n: int, exclude: set[str]) -> list[str] | None:
        """Top-n items for the user now, excluding `exclude`; None: the method does not
        recommend."""

    def memory_bytes(self) -> int | None: ...


class MethodUnavailable(RuntimeError):
    pass


def make_method(name: str, task: str, seed: int = 0, peer_updates: str = "event"
                ) -> StreamMethod:
    """A fresh method for one stream; ``MethodUnavailable`` says why it cannot run.

    ``peer_updates`` (``event`` or ``chunk``) applies to the peers; celrec always scores a chunk,
    then learns it."""
    if name == "celrec":
        try:
            from cli.evaluation.served import CelrecStream
        except ImportError as exc:
            raise MethodUnavailable(
                f"celrec: not available ({exc.__class__.__name__}: {exc})") from exc
        return CelrecStream(task, seed=seed)
    try:
        return make_peer(name, task, seed=seed, updates=peer_updates)
    except PeerUnavailable as exc:
        raise MethodUnavailable(f"{name}: skipped, {exc}") from exc


# ---------------------------------------------------------------------------------------- metrics

def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given the average of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    bounds = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    counts = np.diff(bounds)
    avg = bounds[:-1] + (counts + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half); NaN when one class is absent."""
    y = np.asarray(labels) > 0
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(scores)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, clip: float = CLIP) -> float:
    y = (np.asarray(labels) > 0).astype(np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), clip, 1.0 - clip)
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def rmse(values: np.ndarray, preds: np.ndarray) -> float:
    if len(values) == 0:
        return float("nan")
    d = np.asarray(preds, dtype=np.float64) - np.asarray(values, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def prior_counts(keys: Sequence[str]) -> np.ndarray:
    """For each event, how many earlier events in the stream had the same key."""
    seen: dict[str, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    for k, key in enumerate(keys):
        c = seen.get(key, 0)
        out[k] = c
        seen[key] = c + 1
    return out


def bucket_of(counts: np.ndarray) -> np.ndarray:
    """Bucket label per event: ``0``, ``1-5``, ``6-20``, ``>20`` earlier events."""
    counts = np.asarray(counts)
    out = np.empty(len(counts), dtype=object)
    for label, lo, hi in BUCKETS:
        mask = (counts >= lo) if hi is None else (counts >= lo) & (counts <= hi)
        out[mask] = label
    return out


def bucket_metric(metric, values: np.ndarray, preds: np.ndarray, counts: np.ndarray) -> dict:
    return group_metric(metric, values, preds, bucket_of(counts),
                        [label for label, _, _ in BUCKETS])


FRESHNESS_GROUPS = ("first chunk", "user known", "user new")


def freshness_groups(users: Sequence[str], chunk: int = CHUNK) -> np.ndarray:
    """Per event: ``first chunk`` (scored before any model exists), ``user known`` (the user
    had an event before this chunk) or ``user new`` (the user's first events are in this
    chunk). A served model knows nothing of a ``user new`` event's user; a peer that learns
    one event at a time has learnt that user's earlier events in the chunk. The split shows
    how much of a gap is that freshness edge and how much is the model."""
    out = np.empty(len(users), dtype=object)
    seen: set[str] = set()
    for start in range(0, len(users), chunk):
        part = users[start:start + chunk]
        out[start:start + len(part)] = (["first chunk"] * len(part) if start == 0 else
                                        ["user known" if u in seen else "user new" for u in part])
        seen.update(part)
    return out


def group_metric(metric, values: np.ndarray, preds: np.ndarray, groups: np.ndarray,
                 labels: Sequence[str] = FRESHNESS_GROUPS) -> dict:
    """``metric`` and the event count per group label (``groups``: one label per event)."""
    return {g: {"value": metric(values[groups == g], preds[groups == g]),
                "n": int((groups == g).sum())} for g in labels}


def auc_curve(labels: np.ndarray, scores: np.ndarray, points: int = CURVE_POINTS) -> list[dict]:
    n = len(labels)
    out = []
    for k in range(1, points + 1):
        end = math.ceil(k * n / points)
        out.append({"fraction": k / points, "events": end, "auc": auc(labels[:end], scores[:end])})
    return out


def score_metrics(task: str, values: np.ndarray, preds: np.ndarray, item_counts: np.ndarray,
                  user_counts: np.ndarray, freshness: np.ndarray | None = None) -> dict:
    preds = np.asarray(preds, dtype=np.float64)
    bad = ~np.isfinite(preds)
    out: dict = {"nonfinite_predictions": int(bad.sum())}
    if bad.any():  # counted and reported; replaced by an uninformed guess
        preds = preds.copy()
        preds[bad] = 0.5 if task == "binary" else float(np.mean(values))
    half = len(values) // 2
    if task == "binary":
        out.update(auc=auc(values, preds), auc_second_half=auc(values[half:], preds[half:]),
                   logloss=logloss(values, preds),
                   logloss_second_half=logloss(values[half:], preds[half:]),
                   auc_by_item_history=bucket_metric(auc, values, preds, item_counts),
                   auc_by_user_history=bucket_metric(auc, values, preds, user_counts),
                   auc_curve=auc_curve(values, preds))
        if freshness is not None:
            out["auc_by_freshness"] = group_metric(auc, values, preds, freshness)
    else:
        out.update(rmse=rmse(values, preds), rmse_second_half=rmse(values[half:], preds[half:]),
                   rmse_by_item_history=bucket_metric(rmse, values, preds, item_counts),
                   rmse_by_user_history=bucket_metric(rmse, values, preds, user_counts))
        if freshness is not None:
            out["rmse_by_freshness"] = group_metric(rmse, values, preds, freshness)
    return out


# ----------------------------------------------------------------------------------- recall@10

def select_recall_queries(users: Sequence[str], values: np.ndarray,
                          warmup_fraction: float = WARMUP_FRACTION,
                          every: int = QUERY_EVERY) -> list[int]:
    """Event indices of the recall queries (the ISGD protocol, see the module docstring)."""
    pos = np.flatnonzero(np.asarray(values) > 0)
    warm = int(len(pos) * warmup_fraction)
    had_positive: set[str] = set()
    queries = []
    for rank, k in enumerate(pos):
        u = users[k]
        after = rank - warm + 1  # 1-based count of positives after the warm-up
        if after >= 1 and after % every == 0 and u in had_positive:
            queries.append(int(k))
        had_positive.add(u)
    return queries


# --------------------------------------------------------------------------------------- runner

def run_stream(stream: Stream, methods: dict[str, StreamMethod], chunk: int = CHUNK,
               recall_n: int = RECALL_N, progress: bool = True) -> tuple[dict, dict]:
    """Run every method over the stream prequentially: (figures per method, recall query info).

    Besides recall over every query (the protocol), recall is also given over the queries whose
    user had a positive before the query's chunk (``known_users``): with the literal rule a user
    whose only earlier positives are in the same, not yet processed, chunk is unknown to every
    method."""
    n = len(stream)
    values = np.asarray(stream.values, dtype=np.float32)
    users, items = stream.users, stream.items
    preds = {name: np.full(n, np.nan) for name in methods}
    scores = dict.fromkeys(methods, True)
    recommends = dict.fromkeys(methods, True)
    seconds = dict.fromkeys(methods, 0.0)
    hits = dict.fromkeys(methods, 0)
    hits_known = dict.fromkeys(methods, 0)
    info = {"queries": 0, "known_users": 0, "item_unseen_before_chunk": 0,
            "item_in_exclude_set": 0}
    errors: dict[str, str] = {}

    queries = select_recall_queries(users, values) if stream.task == "binary" else []
    by_chunk: dict[int, list[int]] = {}
    for q in queries:
        by_chunk.setdefault(q // chunk, []).append(q)
    user_seen: dict[str, set[str]] = {}
    users_with_positive: set[str] = set()
    items_seen: set[str] = set()
    report_every = max(1, (n // chunk) // 10)
    started = time.perf_counter()

    for c, start in enumerate(range(0, n, chunk)):
        end = min(n, start + chunk)
        for q in by_chunk.get(c, ()):
            exclude = user_seen.get(users[q], set())
            known = users[q] in users_with_positive
            info["queries"] += 1
            info["known_users"] += known
            info["item_unseen_before_chunk"] += items[q] not in items_seen
            info["item_in_exclude_set"] += items[q] in exclude
            for name, m in methods.items():
                if not recommends[name] or name in errors:
                    continue
                t0 = time.perf_counter()
                recs = m.recommend(users[q], recall_n, set(exclude))
                seconds[name] += time.perf_counter() - t0
                if recs is None:
                    recommends[name] = False
                elif items[q] in list(recs)[:recall_n]:
                    hits[name] += 1
                    hits_known[name] += known
        cu, ci = users[start:end], items[start:end]
        cv, ct = values[start:end], stream.timestamps[start:end]
        for name, m in methods.items():
            if name in errors:
                continue
            t0 = time.perf_counter()
            try:
                p = m.process(list(cu), list(ci), cv.copy(), ct.copy())
            except Exception as exc:  # one failing method must not stop the others
                errors[name] = f"{exc.__class__.__name__}: {exc} (chunk {c})"
                print(f"  {name}: failed at chunk {c}: {errors[name]}", flush=True)
                continue
            finally:
                seconds[name] += time.perf_counter() - t0
            if p is None:
                scores[name] = False
            else:
                p = np.asarray(p, dtype=np.float64).reshape(-1)
                if len(p) != end - start:
                    errors[name] = f"process returned {len(p)} predictions for {end - start}"
                    print(f"  {name}: {errors[name]}", flush=True)
                    continue
                preds[name][start:end] = p
        for u, i, v in zip(cu, ci, cv.tolist(), strict=True):
            user_seen.setdefault(u, set()).add(i)
            items_seen.add(i)
            if v > 0:
                users_with_positive.add(u)
        if progress and (c + 1) % report_every == 0:
            print(f"  {stream.name}: {end}/{n} events, {time.perf_counter() - started:.0f} s "
                  + " ".join(f"{k}={v:.0f}s" for k, v in seconds.items()), flush=True)

    item_counts = prior_counts(items)
    user_counts = prior_counts(users)
    freshness = freshness_groups(users, chunk)
    result: dict = {}
    for name, m in methods.items():
        r: dict = {"seconds": seconds[name]}
        if name in errors:
            r["error"] = errors[name]
        try:
            r["memory_bytes"] = m.memory_bytes()
        except Exception as exc:  # noqa: BLE001
            r["memory_bytes"] = None
            r["memory_error"] = f"{exc.__class__.__name__}: {exc}"
        if scores[name] and name not in errors:
            r.update(score_metrics(stream.task, values, preds[name], item_counts, user_counts,
                                   freshness))
        if stream.task == "binary" and recommends[name] and name not in errors:
            nk = info["known_users"]
            r["recall_at_10"] = hits[name] / len(queries) if queries else float("nan")
            r["recall_hits"] = hits[name]
            r["recall_queries"] = len(queries)
            r["recall_at_10_known_users"] = hits_known[name] / nk if nk else float("nan")
            r["recall_hits_known_users"] = hits_known[name]
            r["recall_queries_known_users"] = nk
        result[name] = r
    return result, info


def stream_summary(stream: Stream) -> dict:
    item_b = bucket_of(prior_counts(stream.items))
    out = {"task": stream.task, "events": len(stream), "users": len(set(stream.users)),
           "items": len(set(stream.items)), "meta": stream.meta,
           "events_by_item_history": {lb: int((item_b == lb).sum()) for lb, _, _ in BUCKETS}}
    if stream.task == "binary":
        out["positive_rate"] = float(np.mean(stream.values > 0))
        # a sanity check of the stream, not a method: how far "the fewer earlier events an item
        # had, the likelier a positive" goes (0.84 on taobao when its negatives were drawn from
        # the items seen so far; near 0.5 is what a sampler without that leak gives)
        out["auc_inverse_item_history"] = auc(stream.values,
                                              -prior_counts(stream.items).astype(np.float64))
    else:
        out["mean_value"] = float(np.mean(stream.values))
    return out


# -------------------------------------------------------------------------------------- reports

def _f(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.{digits}f}"


def _mem(b) -> str:
    if b is None:
        return ""
    if b >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    return f"{b / 1024:.0f} KiB"


def markdown(report: dict) -> str:
    mode = report["settings"].get("peer_updates", "event")
    how = ("each event scored just before the peer learns it" if mode == "event" else
           "the whole chunk scored with the state from before it, then learnt one event at a "
           "time (celrec's freshness)")
    lines = [f"# Prequential benchmark, peer updates: {mode} ({report['date']})", "",
             f"`{report['command']}`", "",
             f"Chunks of {report['settings']['chunk']} events; scoring peers: {how}. See "
             "bench/prequential.py for the protocol.", ""]
    for sname, s in report["streams"].items():
        info = s["summary"]
        lines.append(f"## {sname} ({info['task']})")
        lines.append("")
        desc = f"{info['events']} events, {info['users']} users, {info['items']} items"
        if info["task"] == "binary":
            desc += f", positive rate {info['positive_rate']:.3f}"
        desc += "; events by item history " + ", ".join(
            f"{k}: {v}" for k, v in info["events_by_item_history"].items()) + "."
        q = s.get("recall_queries")
        if info.get("meta", {}).get("ceiling_auc") is not None:
            desc += (f" Ceiling AUC (true click probabilities, first {info['meta']['events']} "
                     f"events): {info['meta']['ceiling_auc']:.4f}.")
        if info["task"] == "binary":
            desc += (" AUC of the stream-check score -(item's earlier events): "
                     f"{_f(info['auc_inverse_item_history'])}.")
        if q and q["queries"]:
            desc += (f" recall@10: {q['queries']} queries, {q['known_users']} of them with a user "
                     f"who had a positive before the query's chunk (column 'known'); "
                     f"{q['item_unseen_before_chunk']} ask for an item never seen before the "
                     f"chunk, {q['item_in_exclude_set']} for an item in the exclude set "
                     "(no method can hit those).")
        lines += [desc, ""]
        ms = s["methods"]
        if info["task"] == "binary":
            lines.append("| method | AUC | AUC 2nd half | logloss | AUC first sight | 1-5 | 6-20 "
                         "| >20 | recall@10 | recall@10 known | seconds | memory |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for name, r in ms.items():
                b = r.get("auc_by_item_history", {})
                lines.append("| " + " | ".join([
                    name, _f(r.get("auc")), _f(r.get("auc_second_half")), _f(r.get("logloss")),
                    *(_f(b.get(lb, {}).get("value")) for lb, _, _ in BUCKETS),
                    _f(r.get("recall_at_10")), _f(r.get("recall_at_10_known_users")),
                    f"{r['seconds']:.1f}", _mem(r.get("memory_bytes")),
                ]) + " |")
            lines += group_table(ms, "auc_by_user_history", "AUC by the user's earlier events",
                                 [label for label, _, _ in BUCKETS])
        else:
            lines.append("| method | RMSE | RMSE 2nd half | RMSE first sight | 1-5 | 6-20 | >20 "
                         "| seconds | memory |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for name, r in ms.items():
                b = r.get("rmse_by_item_history", {})
                lines.append("| " + " | ".join([
                    name, _f(r.get("rmse")), _f(r.get("rmse_second_half")),
                    *(_f(b.get(lb, {}).get("value")) for lb, _, _ in BUCKETS),
                    f"{r['seconds']:.1f}", _mem(r.get("memory_bytes")),
                ]) + " |")
        lines += freshness_table(ms, "auc" if info["task"] == "binary" else "rmse")
        notes = [f"{k}: {r['error']}" for k, r in ms.items() if "error" in r]
        notes += [f"{k}: {r['nonfinite_predictions']} non-finite predictions (scored as an "
                  "uninformed guess)" for k, r in ms.items() if r.get("nonfinite_predictions")]
        notes += list(s.get("skipped", {}).values())
        if notes:
            lines += ["", *(f"- {x}" for x in notes)]
        lines.append("")
    if report.get("streams_skipped"):
        lines += ["Streams skipped:", "", *(f"- {k}: {v}" for k, v in
                                            report["streams_skipped"].items()), ""]
    return "\n".join(lines)


def group_table(methods: dict, key: str, title: str, labels: Sequence[str]) -> list[str]:
    """One row per method that has the grouped figures ``key``, one column per label."""
    scorers = [k for k, r in methods.items() if key in r]
    if not scorers:
        return []
    lines = ["", f"{title}:", "", "| method | " + " | ".join(labels) + " |",
             "|---" * (len(labels) + 1) + "|"]
    for name in scorers:
        b = methods[name][key]
        lines.append("| " + " | ".join([name, *(_f(b[g]["value"]) for g in labels)]) + " |")
    return lines


def freshness_table(methods: dict, metric: str) -> list[str]:
    """The metric by :func:`freshness_groups`, for the methods that score."""
    key = f"{metric}_by_freshness"
    scorers = [r for r in methods.values() if key in r]
    if not scorers:
        return []
    n = scorers[0][key]
    title = (f"{metric.upper()} by the user's freshness at the chunk (events: "
             + ", ".join(f"{g} {n[g]['n']}" for g in FRESHNESS_GROUPS) + ")")
    return group_table(methods, key, title, FRESHNESS_GROUPS)


def plot(report: dict, path: Path) -> str | None:
    """Progressive AUC per binary stream; returns why it was skipped, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"plot skipped: matplotlib not installed ({exc})"
    binary = [(k, s) for k, s in report["streams"].items() if s["summary"]["task"] == "binary"
              and any("auc_curve" in r for r in s["methods"].values())]
    if not binary:
        return "plot skipped: no binary stream with a scoring method"
    fig, axes = plt.subplots(1, len(binary), figsize=(5.5 * len(binary), 4.2), squeeze=False)
    for ax, (sname, s) in zip(axes[0], binary, strict=True):
        for name, r in s["methods"].items():
            if "auc_curve" not in r:
                continue
            xs = [p["events"] for p in r["auc_curve"]]
            ys = [p["auc"] for p in r["auc_curve"]]
            ax.plot(xs, ys, marker="o", ms=3, lw=3.0 if name == "celrec" else 1.3,
                    zorder=3 if name == "celrec" else 2, label=name)
        ax.set_title(sname)
        ax.set_xlabel("events")
        ax.set_ylabel("progressive AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "river", "vowpalwabbit", "matplotlib", "celrec", "torch"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=BENCH.parent, capture_output=True, text=True,
            check=True).stdout.strip()
        # tracked files changed since that commit (the demo stream, celrec) or None when clean
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH.parent,
            capture_output=True, text=True, check=True).stdout.split("\n")
        out["git_modified"] = [ln[3:] for ln in dirty if ln.strip()] or None
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = None
    return out


def _clean(x):
    """JSON-safe: NaN becomes null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--limit", type=int, default=None, help="first N events of each stream")
    ap.add_argument("--data-root", type=Path, default=None,
                    help="folder holding movielens-100k/ and taobao-userbehavior/ "
                         "(default <repo>/../shared/data)")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--tag", default="",
                    help="suffix of the output files, prequential_TAG.*: e.g. 'peers' for "
                         "--peer-updates event, 'peers_chunk' for --peer-updates chunk")
    ap.add_argument("--peer-updates", choices=UPDATES, default="event",
                    help="when scoring peers score: 'event' (default) just before learning each "
                         "event; 'chunk' the whole chunk with the state from before it, then "
                         "learn its events in order (celrec's freshness through the API)")
    ap.add_argument("--chunk", type=int, default=CHUNK)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    stream_names = [s for s in args.streams.split(",") if s]
    method_names = [m for m in args.methods.split(",") if m]
    for m in method_names:
        if m not in ALL_METHODS:
            ap.error(f"unknown method {m!r}; known: {', '.join(ALL_METHODS)}")
    argv_list = list(sys.argv[1:] if argv is None else argv)
    report: dict = {
        "command": " ".join([".venv/bin/python", "bench/prequential.py", *argv_list]),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "settings": {"chunk": args.chunk, "seed": args.seed, "limit": args.limit,
                     "peer_updates": args.peer_updates,
                     "recall_n": RECALL_N, "warmup_fraction": WARMUP_FRACTION,
                     "query_every": QUERY_EVERY, "logloss_clip": CLIP,
                     "buckets": [b[0] for b in BUCKETS]},
        "streams": {}, "streams_skipped": {},
    }
    unavailable: dict[str, str] = {}
    for sname in stream_names:
        try:
            stream = load_stream(sname, args.data_root)
        except (StreamDataMissing, StreamUnavailable, KeyError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            print(f"{sname}: skipped ({msg})", flush=True)
            report["streams_skipped"][sname] = str(msg)
            continue
        if args.limit:
            stream = stream.head(args.limit)
        methods: dict[str, StreamMethod] = {}
        skipped: dict[str, str] = {}
        for m in method_names:
            if m not in METHODS_BY_TASK[stream.task]:
                continue
            if m in unavailable:
                skipped[m] = unavailable[m]
                continue
            try:
                methods[m] = make_method(m, stream.task, seed=args.seed,
                                         peer_updates=args.peer_updates)
            except MethodUnavailable as exc:
                unavailable[m] = skipped[m] = str(exc)
                print(str(exc), flush=True)
        summary = stream_summary(stream)
        print(f"{sname}: {summary['events']} events ({stream.task}), methods "
              f"{', '.join(methods) or 'none'}", flush=True)
        results, recall_info = run_stream(stream, methods, chunk=args.chunk)
        report["streams"][sname] = {"summary": summary, "methods": results, "skipped": skipped,
                                    "recall_queries": recall_info}

    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / ("prequential" + (f"_{args.tag}" if args.tag else ""))
    report = _clean(report)
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    base.with_suffix(".md").write_text(md + "\n")
    why = plot(report, base.with_suffix(".png"))
    print()
    print(md)
    print(why or f"wrote {base}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
