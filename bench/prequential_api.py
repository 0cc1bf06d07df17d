"""The prequential protocol through the product's HTTP API, as a user would run it.

``bench/prequential.py`` measures celrec in-process (``cli.evaluation.served.CelrecStream``:
the trainer's learner and the service's serving model with HTTP and the event log left out).
This benchmark runs the literal protocol of evaluation.md instead, side by side with that
in-process method in one run over the same events, so that the two can be compared:

1. ``celrec run`` (the all-in-one process, embedded backends, default settings unless
   ``CELREC_*`` variables are set) is started in its own process on a free loopback port
   (``serving_latency.ServerProcess``);
2. for each chunk of 200 events: every event is scored with ``GET /scores`` (one request per
   user of the chunk; 0.5 while the service answers 503, before its first model), the recall
   queries of the chunk ask ``GET /recommendations/{user}?n=10&exclude_seen=true`` (the
   service's own seen items, its last ``CELREC_SEEN_ITEMS_MAX`` per user, are excluded),
   then the chunk is POSTed to ``/events`` (event type ``click``, value 1/0, the stream's
   timestamp, a unique ``event_id``), then ``GET /model`` is polled until its
   ``events_applied`` covers the chunk, for at most 3 s.

Figures are ``bench/prequential.py``'s (``run_stream``): AUC, logloss, the item and freshness
buckets, recall@10. Also reported: chunks whose wait ran out, and the median wait.

Timestamps are sent as the stream has them, in Unix seconds (synthetic streams count from 0,
which the API takes as 1970-01-01T00:00:00Z).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python bench/prequential_api.py --streams ml100k-likes

Writes ``bench/results/prequential_api.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for path in (BENCH, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from prequential import CHUNK, make_method, run_stream  # noqa: E402
from serving_latency import ServerProcess, running  # noqa: E402
from streams import StreamDataMissing, load_stream  # noqa: E402

APPLY_WAIT_S = 3.0  # the protocol waits at most this long per chunk


class ApiStream:
    """The protocol against a running ``celrec run``: score, recommend, post, wait."""

    name = "celrec-api"

    def __init__(self, base_url: str):
        self.client = httpx.Client(base_url=base_url, timeout=30.0)
        self.posted = 0
        self.waits: list[float] = []
        self.timeouts = 0

    def process(self, users: list[str], items: list[str], values: np.ndarray,
                timestamps: np.ndarray) -> np.ndarray:
        preds = np.full(len(users), 0.5)
        by_user: dict[str, list[int]] = {}
        for k, u in enumerate(users):
            by_user.setdefault(u, []).append(k)
        for user, index in by_user.items():
            r = self.client.get("/scores", params={"user_id": user,
                                                   "item_id": [items[k] for k in index]})
            if r.status_code == 503:  # no model published yet
                continue
            r.raise_for_status()
            preds[index] = [s["score"] for s in r.json()["scores"]]
        body = []
        for u, i, v, t in zip(users, items, values.tolist(), timestamps.tolist(), strict=True):
            self.posted += 1
            body.append({"event_id": f"p{self.posted}", "user_id": u, "item_id": i,
                         "event_type": "click", "value": 1.0 if v > 0 else 0.0,
                         "timestamp": t})
        r = self.client.post("/events", json=body)
        if r.status_code != 202:
            raise RuntimeError(f"POST /events answered {r.status_code}: {r.text[:300]}")
        started = time.monotonic()
        while True:
            m = self.client.get("/model")
            if m.status_code == 200 and m.json()["events_applied"] >= self.posted:
                break
            if time.monotonic() - started > APPLY_WAIT_S:
                self.timeouts += 1
                break
            time.sleep(0.01)
        self.waits.append(time.monotonic() - started)
        return preds

    def recommend(self, user: str, n: int, exclude: set[str]) -> list[str]:
        r = self.client.get(f"/recommendations/{quote(user, safe='')}",
                            params={"n": n, "exclude_seen": True})
        if r.status_code == 503:
            return []
        r.raise_for_status()
        return [x["item_id"] for x in r.json()["items"]]

    def memory_bytes(self) -> int | None:
        r = self.client.get("/model")
        return int(r.json()["memory_bytes"]) if r.status_code == 200 else None


ROW_KEYS = (("auc", "AUC"), ("logloss", "logloss"), ("auc_second_half", "AUC 2nd half"),
            ("recall_at_10", "recall@10"))


HISTORY = """What this benchmark found when it was written (2026-12-07, ml100k-likes):

- The API scored worse than the in-process method: AUC 0.6668 against 0.6765 on the first
  10,000 events. A poll returns a micro-batch partition by partition (by user key), and what
  the learner learns depends on the order of a batch's events; grouping each chunk by
  `crc32(user) % 4` in-process reproduced the API's figure exactly. The trainer now learns a
  batch in event-time order (`trainer/stream.py`), and the two agree (0.6764 vs 0.6765).
- recall@10 over the API was 0.0767 against 0.0791 in-process (popularity 0.0778): the
  service excluded only a user's newest 200 items and recommended older ones again. The
  default `CELREC_SEEN_ITEMS_MAX` is now 1,000 (what the service reads), and recall agrees.
"""


def markdown(results: dict, command: str) -> str:
    lines = ["# The protocol through the HTTP API, beside the in-process measurement", "",
             f"`{command}`", "",
             "`celrec-api`: `celrec run` (embedded, default settings) driven over HTTP on "
             "loopback as evaluation.md says; `celrec`: bench/prequential.py's in-process "
             "method over the same events in the same run.", ""]
    for stream, entry in results.items():
        if "skipped" in entry:
            lines += [f"## {stream}", "", f"skipped: {entry['skipped']}", ""]
            continue
        lines += [f"## {stream} ({entry['events']} events)", "",
                  "| method | " + " | ".join(h for _, h in ROW_KEYS) + " | first sight |",
                  "|---|" + "---|" * (len(ROW_KEYS) + 1)]
        for name, r in entry["methods"].items():
            cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else "" for k, _ in ROW_KEYS]
            first = r.get("auc_by_item_history", {}).get("0", {}).get("value")
            cells.append(f"{first:.4f}" if isinstance(first, float) else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        api = entry["api"]
        lines += ["", f"Chunks: {api['chunks']}; waits for `events_applied`: median "
                  f"{api['median_wait_s'] * 1000:.0f} ms, max {api['max_wait_s'] * 1000:.0f} ms, "
                  f"{api['timeouts']} over {APPLY_WAIT_S:.0f} s. Wall: API "
                  f"{entry['methods']['celrec-api']['seconds']:.0f} s.", ""]
    return "\n".join(lines + [HISTORY])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="ml100k-likes",
                        help="comma-separated binary streams (bench/streams.py)")
    parser.add_argument("--events", type=int, default=None, help="only the first N events")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args(argv)
    command = "OMP_NUM_THREADS=1 .venv/bin/python bench/prequential_api.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    results: dict = {}
    for name in args.streams.split(","):
        try:
            stream = load_stream(name, args.data_root)
        except StreamDataMissing as exc:
            print(f"{name}: skipped ({exc})")
            results[name] = {"skipped": str(exc)}
            continue
        if stream.task != "binary":
            raise SystemExit(f"{name} is a {stream.task} stream; the API protocol is for 0/1")
        if args.events:
            stream = stream.head(args.events)
        with running(ServerProcess("run", {})) as server:
            server.wait_ready("/health/live")
            api = ApiStream(server.base)
            try:
                methods = {"celrec-api": api, "celrec": make_method("celrec", stream.task)}
                figures, info = run_stream(stream, methods, CHUNK)
            finally:
                api.client.close()
        waits = np.asarray(api.waits)
        results[name] = {"events": len(stream), "methods": figures, "recall_queries": info,
                         "api": {"chunks": len(waits), "timeouts": api.timeouts,
                                 "median_wait_s": float(np.median(waits)),
                                 "max_wait_s": float(waits.max())}}
        for method, r in figures.items():
            print(f"{name} {method}: AUC {r.get('auc')} logloss {r.get('logloss')} "
                  f"recall {r.get('recall_at_10')}", flush=True)
    out = BENCH / "results" / f"prequential_api{('_' + args.tag) if args.tag else ''}"
    out.with_suffix(".json").write_text(json.dumps({"command": command, "results": results},
                                                   indent=2, default=float))
    out.with_suffix(".md").write_text(markdown(results, command))
    print(f"wrote {out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
