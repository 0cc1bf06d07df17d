"""Serving latency of GET /scores and GET /recommendations/{user}, server in its own process.

    python bench/serving_latency.py scores [--rates 100,250,500,750] [--duration 10]
        [--repeats 3] [--backends embedded,redis] [--users 5000] [--items 2000]
    python bench/serving_latency.py recommendations [--rates 100,250,500] [--items 100000]

``scores``: the all-in-one ``celrec run`` (embedded log and store; the model is warmed by
POSTing events to it, the trainer in that process learns them) and ``celrec serve`` against
a LocalRedis (the model is learned here by the trainer's CELLearner and written by its
Publisher, exactly as ``celrec train`` does), both uvicorn processes started with
subprocess. Each request scores 100 known candidates for a random known user.
``recommendations``: ``celrec serve`` on Redis with ``--items`` items in the model, top 10
for a random known user, seen items excluded (one Redis LRANGE per request).

Load comes from ``bench/loadgen.py`` in another process, open loop at a fixed rate (latency
from each request's due time). Rates x backends are interleaved and repeated, so machine
load drifting over the run hits all of them alike; the medians over repeats are reported.
Server CPU per request comes from /proc. Results: bench/results/serving_<what>.json, .md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# Appended: PYTHONPATH=<clean checkout> measures that code while results land here.
sys.path.append(str(ROOT))

from celrec.backends import make_state_store  # noqa: E402
from celrec.settings import Settings  # noqa: E402
from schemas.api import TrainerProgress  # noqa: E402
from schemas.events import Event  # noqa: E402
from tests.localservers import LocalRedis, free_port  # noqa: E402
from trainer.cel_learner import CELLearner  # noqa: E402
from trainer.publisher import Publisher  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CELREC = str(Path(sys.executable).with_name("celrec"))
LOADGEN = str(ROOT / "bench" / "loadgen.py")
GROUPS = 16  # planted user/item groups: clicks are likelier within a group
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


# ------------------------------------------------------------------ server processes

def _die_with_parent() -> None:  # in the child: SIGKILL it if the benchmark dies
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``celrec <command>`` in its own process group, logging to a temp file."""

    def __init__(self, command: str, env: dict[str, str], port: int | None = None):
        self.command, self.port = command, port or free_port()
        self.env = {**os.environ, "CELREC_LOG_LEVEL": "WARNING", **env,
                    "CELREC_HOST": "127.0.0.1", "CELREC_PORT": str(self.port)}
        self.log = tempfile.NamedTemporaryFile(prefix=f"celrec-{command}-", suffix=".log",
                                               delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen([CELREC, self.command], env=self.env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, path: str = "/health/ready", timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"celrec {self.command} exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"celrec {self.command} not ready in {timeout_s}s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"celrec {self.command} is not running:\n{self.log_tail()}")

    def cool_down(self, timeout_s: float = 20.0) -> None:
        """Wait until the server answers promptly again: an overload run leaves a backlog
        that must not spill into the next run."""
        time.sleep(1.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(self.base + "/health/live", timeout=5)
                if time.perf_counter() - started < 0.02:
                    return
            time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads) so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, chars: int = 3000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            print(f"celrec {self.command} had exited ({self.proc.returncode}):\n"
                  f"{self.log_tail()}", file=sys.stderr)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server.start()
    finally:
        server.stop()


# ------------------------------------------------------------------ load

def run_load(server: ServerProcess, requests: list, rate: float, duration_s: float,
             warmup_s: float = 2.0) -> dict:
    """One open-loop run of bench/loadgen.py (its own process) against ``server``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(requests, f)
    try:
        server.check_alive()
        server.cool_down()
        load_before = os.getloadavg()[0]
        cpu_before = server.cpu_seconds()
        done = subprocess.run(
            [sys.executable, LOADGEN, "--port", str(server.port), "--requests", f.name,
             "--rate", str(rate), "--duration", str(duration_s), "--warmup", str(warmup_s)],
            capture_output=True, text=True, timeout=warmup_s + duration_s + 60, check=True)
        cpu = server.cpu_seconds() - cpu_before
    finally:
        Path(f.name).unlink(missing_ok=True)
    result = json.loads(done.stdout)
    sent = rate * (warmup_s + duration_s)
    result["server_cpu_ms_per_request"] = 1000 * cpu / sent
    result["loadavg_1m_before"] = load_before
    return result


# ------------------------------------------------------------------ workload and model

def covering(users: int, items: int, per_entity: int, seed: int = 0) -> list[dict]:
    """Click events over ``user-<n>`` / ``item-<n>`` in which every user and every item
    occurs ``per_entity`` times or more (so the model knows them all), in random order;
    clicks are likelier within planted groups, so the model has clusters to find."""
    rng = np.random.default_rng(seed)
    n = per_entity * max(users, items)
    u = rng.permutation(np.arange(n) % users)
    i = rng.permutation(np.arange(n) % items)
    clicks = rng.random(n) < np.where(u % GROUPS == i % GROUPS, 0.6, 0.05)
    return [{"user_id": f"user-{a}", "item_id": f"item-{b}", "event_type": "click",
             "value": int(c)} for a, b, c in zip(u.tolist(), i.tolist(), clicks.tolist(),
                                                  strict=True)]


def warm_over_http(server: ServerProcess, events: list[dict], timeout_s: float = 300) -> None:
    """POST the events in batches and wait until the served model reflects all of them."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for k in range(0, len(events), 1000):
            client.post("/events", json=events[k: k + 1000]).raise_for_status()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = client.get("/model")
            if answer.status_code == 200 and answer.json()["events_applied"] >= len(events):
                return
            time.sleep(0.5)
    raise RuntimeError("the served model did not reach the posted events in time")


def publish_learned(settings: Settings, events: list[dict], batch: int = 4096) -> dict:
    """Learn ``events`` with the trainer's CELLearner and publish one snapshot through the
    trainer's Publisher into the configured store (what ``celrec train`` does)."""
    torch.set_num_threads(1)  # preparation only; 2 threads on a busy 2-core box crawl
    learner = CELLearner(settings)
    store = make_state_store(settings)
    publisher = Publisher(settings, store)
    started = time.perf_counter()
    now = time.time()
    for k in range(0, len(events), batch):
        chunk = [Event.model_validate(e).completed() for e in events[k: k + batch]]
        learner.learn(chunk)
        publisher.note_events(chunk, [now] * len(chunk))
    learned = time.perf_counter() - started
    progress = TrainerProgress(events_applied=len(events))
    version = publisher.publish_snapshot(learner, progress)
    meta = learner.side_meta()
    store.close()
    return {"version": version, "learn_s": learned, "events": len(events),
            "users": meta["user"].entities, "items": meta["item"].entities,
            "user_rows": meta["user"].rows, "item_rows": meta["item"].rows}


def scores_requests(users: int, items: int, count: int = 2000, candidates: int = 100,
                    seed: int = 1) -> list:
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        query = "&".join(f"item_id=item-{rng.randrange(items)}" for _ in range(candidates))
        requests.append(["GET", f"/scores?user_id=user-{rng.randrange(users)}&{query}", None])
    return requests


def recommendation_requests(users: int, count: int = 2000, n: int = 10, seed: int = 2) -> list:
    rng = random.Random(seed)
    return [["GET", f"/recommendations/user-{rng.randrange(users)}?n={n}", None]
            for _ in range(count)]


def check_answer(server: ServerProcess, request: list, key: str, expect: int) -> dict:
    """One request by hand: the benchmark must measure real answers, not errors."""
    answer = httpx.get(server.base + request[1], timeout=10)
    answer.raise_for_status()
    body = answer.json()
    if len(body[key]) != expect or body["unknown_user"]:
        raise RuntimeError(f"unexpected answer: {str(body)[:300]}")
    return body


# ------------------------------------------------------------------ runs

def interleaved(servers: dict[str, ServerProcess], requests: dict[str, list], rates: list[int],
                repeats: int, duration_s: float) -> list[dict]:
    runs = []
    for repeat in range(repeats):
        for rate in rates:
            for name, server in servers.items():
                result = run_load(server, requests[name], rate, duration_s)
                result.update(backend=name, repeat=repeat)
                runs.append(result)
                lat = result["latency_ms"]
                print(f"  {name:9s} {rate:5d}/s #{repeat}: p50 {lat['p50']:7.2f} ms  "
                      f"p99 {lat['p99']:8.2f} ms  {result['achieved_rps']:7.1f} req/s  "
                      f"errors {result['errors']}  cpu/req "
                      f"{result['server_cpu_ms_per_request']:.2f} ms", flush=True)
    return runs


def summary(runs: list[dict]) -> list[dict]:
    """Median over repeats of each (backend, rate)."""
    rows = []
    for backend in dict.fromkeys(r["backend"] for r in runs):
        for rate in dict.fromkeys(r["offered_rps"] for r in runs):
            group = [r for r in runs if r["backend"] == backend and r["offered_rps"] == rate]
            if not group:
                continue

            def med(get) -> float:
                return statistics.median(get(r) for r in group)  # noqa: B023

            rows.append({
                "backend": backend, "offered_rps": rate, "repeats": len(group),
                "p50_ms": med(lambda r: r["latency_ms"]["p50"]),
                "p90_ms": med(lambda r: r["latency_ms"]["p90"]),
                "p99_ms": med(lambda r: r["latency_ms"]["p99"]),
                "p99_ms_each": [round(r["latency_ms"]["p99"], 2) for r in group],
                "max_ms": max(r["latency_ms"]["max"] for r in group),
                "achieved_rps": med(lambda r: r["achieved_rps"]),
                "errors": sum(r["errors"] for r in group),
                "server_cpu_ms_per_request": med(lambda r: r["server_cpu_ms_per_request"]),
                "loadavg_1m": med(lambda r: r["loadavg_1m_before"]),
                "generator_max_lag_ms": max(r["generator_max_lag_ms"] for r in group),
                "service_p99_ms": med(lambda r: r["service_ms"].get("p99", float("nan"))),
            })
    return rows


def environment() -> dict:
    import celrec

    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
            "code": str(Path(celrec.__file__).resolve().parents[1]),
            "commit": os.environ.get("BENCH_COMMIT", "working tree"),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


def write_results(name: str, data: dict, table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


def latency_table(title: str, rows: list[dict], target: str) -> str:
    lines = [f"# {title}", "", target, "",
             "| backend | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms "
             "(median of repeats) | p99 ms each repeat | max ms | errors | server CPU ms/req "
             "| load avg | generator max lag ms | send-to-answer p99 ms |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['offered_rps']:.0f} | {r['achieved_rps']:.1f} | "
            f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | **{r['p99_ms']:.2f}** | "
            f"{', '.join(f'{v:.1f}' for v in r['p99_ms_each'])} | {r['max_ms']:.1f} | "
            f"{r['errors']} | {r['server_cpu_ms_per_request']:.2f} | {r['loadavg_1m']:.1f} | "
            f"{r['generator_max_lag_ms']:.1f} | {r['service_p99_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def redis_settings(url: str, prefix: str) -> dict[str, str]:
    return {"CELREC_STATE_STORE": "redis", "CELREC_REDIS_URL": url,
            "CELREC_STATE_PREFIX": prefix}


def bench_scores(args: argparse.Namespace) -> None:
    backends = args.backends.split(",")
    events = covering(args.users, args.items, per_entity=args.events_per_entity)
    servers: dict[str, ServerProcess] = {}
    model: dict[str, dict] = {}
    variants = parse_variants(args.variant)
    with contextlib.ExitStack() as stack:
        if "redis" in backends:
            redis_server = stack.enter_context(LocalRedis())
            env = redis_settings(redis_server.url, "bench-scores")
            model["redis"] = publish_learned(Settings(**_lower(env)), events)
            for label, extra in variants.items():
                name = "redis" + label
                servers[name] = stack.enter_context(running(ServerProcess("serve",
                                                                          {**env, **extra})))
                servers[name].wait_ready()
                model[name] = dict(model["redis"])
        if "embedded" in backends:
            for label, extra in variants.items():
                server = stack.enter_context(running(ServerProcess(
                    "run", {"CELREC_DEVICE": "cpu", **extra})))
                server.wait_ready("/health/live")
                started = time.perf_counter()
                warm_over_http(server, events)
                model["embedded" + label] = {"events": len(events),
                                             "warm_s": time.perf_counter() - started}
                servers["embedded" + label] = server
        requests = scores_requests(args.users, args.items)
        for name, server in servers.items():
            check_answer(server, requests[0], "scores", 100)
            model[name]["server_rss_bytes"] = server.rss_bytes()
        print(f"model(s) ready: {model}", flush=True)
        rates = [int(r) for r in args.rates.split(",")]
        runs = interleaved(servers, dict.fromkeys(servers, requests), rates, args.repeats,
                           args.duration)
    rows = summary(runs)
    data = {"what": "GET /scores, 100 candidates", "model": model, "summary": rows,
            "runs": runs, "environment": environment(),
            "settings": {"duration_s": args.duration, "warmup_s": 2.0, "repeats": args.repeats,
                         "users": args.users, "items": args.items}}
    write_results(args.out, data, latency_table(
        "GET /scores with 100 candidates", rows, "Target: p99 <= 10 ms at 500 req/s."))


def bench_recommendations(args: argparse.Namespace) -> None:
    events = covering(args.users, args.items, per_entity=args.events_per_entity)
    with LocalRedis() as redis_server:
        env = redis_settings(redis_server.url, "bench-recs")
        model = publish_learned(Settings(**_lower(env)), events)
        with running(ServerProcess("serve", env)) as server:
            server.wait_ready(timeout_s=120)
            requests = recommendation_requests(args.users)
            check_answer(server, requests[0], "items", 10)
            model["server_rss_bytes"] = server.rss_bytes()
            print(f"model ready: {model}", flush=True)
            rates = [int(r) for r in args.rates.split(",")]
            runs = interleaved({"redis": server}, {"redis": requests}, rates, args.repeats,
                               args.duration)
    rows = summary(runs)
    data = {"what": "GET /recommendations/{user}?n=10, exclude_seen", "model": model,
            "summary": rows, "runs": runs, "environment": environment(),
            "settings": {"duration_s": args.duration, "warmup_s": 2.0, "repeats": args.repeats,
                         "users": args.users, "items": args.items}}
    write_results("serving_recommendations", data, latency_table(
        f"GET /recommendations/{{user}}?n=10 with {model['items']:,} items in the model",
        rows, "Target: p99 <= 20 ms."))


def terminate_cleanly() -> None:
    """SIGTERM unwinds like Ctrl-C, so every server started here is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """Variants measured side by side in one run: ``label=path[:path]`` runs that label's
    servers with PYTHONPATH=path (another checkout, or extra packages);
    ``label=NAME=VALUE[,NAME=VALUE]`` with those environment variables."""
    if not specs:
        return {"": {}}
    out = {}
    for spec in specs:
        label, _, rest = spec.partition("=")
        if "=" in rest:
            out[f"/{label}"] = dict(pair.split("=", 1) for pair in rest.split(","))
        else:
            out[f"/{label}"] = {"PYTHONPATH": rest} if rest else {}
    return out


def _lower(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("CELREC_").lower(): v for k, v in env.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    scores = sub.add_parser("scores")
    scores.add_argument("--rates", default="100,250,500,750")
    scores.add_argument("--backends", default="embedded,redis")
    scores.add_argument("--users", type=int, default=5000)
    scores.add_argument("--items", type=int, default=2000)
    scores.add_argument("--events-per-entity", type=int, default=10)
    recs = sub.add_parser("recommendations")
    recs.add_argument("--rates", default="100,250,500")
    recs.add_argument("--users", type=int, default=20000)
    recs.add_argument("--items", type=int, default=100_000)
    recs.add_argument("--events-per-entity", type=int, default=3)
    scores.add_argument("--out", default="serving_scores", help="results name")
    scores.add_argument("--variant", action="append", default=[],
                        help="label=PYTHONPATH or label=NAME=VALUE[,...]: servers run with "
                        "that code or environment, measured side by side")
    for p in (scores, recs):
        p.add_argument("--duration", type=float, default=10.0, help="measured s per run")
        p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    terminate_cleanly()
    {"scores": bench_scores, "recommendations": bench_recommendations}[args.what](args)


if __name__ == "__main__":
    main()
