"""A small open-loop HTTP/1.1 load generator (run it as its own process).

    python bench/loadgen.py --port 8000 --requests reqs.json --rate 500 --duration 10 \
        [--warmup 2] [--max-connections 256] [--timeout 5] > result.json

``reqs.json`` is a JSON list of ``[method, path, body-or-null]``, used round-robin.
Request ``i`` is *due* at ``start + i / rate`` whatever happened to earlier ones (open
loop), so a slow server cannot slow the offered load down. Latency is measured from the
due time, not the send time: time spent waiting for a free connection or behind a stalled
generator counts, which avoids coordinated omission. ``service_ms`` (send to last byte) is
reported too. Requests due during ``--warmup`` are sent but not counted.

Raw asyncio streams over keep-alive connections instead of an HTTP library: the generator
shares a 2-core machine with the server and must stay cheap (~50 us of CPU per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

Request = tuple[str, str, bytes | None]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# uvicorn closes keep-alive connections idle for 5 s; reusing one then fails the request,
# which is the client's fault, not the server's: such connections are replaced instead.
MAX_IDLE_S = 3.0


@dataclass
class Sample:
    due: float
    latency_s: float
    service_s: float
    status: int  # 0: connection error or timeout


class _Pool:
    """Keep-alive connections; when all are busy, requests wait their turn (and that wait
    counts in their latency)."""

    def __init__(self, host: str, port: int, max_connections: int):
        self.host, self.port, self.max_connections = host, port, max_connections
        self.idle: list[tuple[Conn, float]] = []  # with the time each became idle
        self.waiting: deque[asyncio.Future[Conn]] = deque()
        self.opened = 0
        self._refills: set[asyncio.Task] = set()

    async def acquire(self) -> Conn:
        while self.idle:
            conn, since = self.idle.pop()  # the most recently used first
            if time.perf_counter() - since < MAX_IDLE_S:
                return conn
            self.opened -= 1
            conn[1].close()
        if self.opened < self.max_connections:
            self.opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
        waiter: asyncio.Future[Conn] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        return await waiter

    def release(self, conn: Conn) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():  # a waiter that timed out is cancelled
                waiter.set_result(conn)
                return
        self.idle.append((conn, time.perf_counter()))

    def discard(self, conn: Conn) -> None:
        self.opened -= 1
        conn[1].close()
        if self.waiting:  # hand a fresh connection to the next waiter
            task = asyncio.get_running_loop().create_task(self._refill())
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    async def _refill(self) -> None:
        self.opened += 1
        try:
            conn = await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.opened -= 1
            return
        self.release(conn)

    def close(self) -> None:
        for (_, writer), _ in self.idle:
            writer.close()


def _encode(method: str, path: str, body: bytes | None, host: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


async def _exchange(conn: Conn, raw: bytes) -> tuple[int, bool]:
    """Send one request, read one response; (status, connection still usable)."""
    reader, writer = conn
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def _one(pool: _Pool, raw: bytes, due: float, timeout_s: float,
               samples: list[Sample]) -> None:
    conn = None
    sent = due
    try:
        async with asyncio.timeout(timeout_s):
            conn = await pool.acquire()
            sent = time.perf_counter()
            status, keep = await _exchange(conn, raw)
        done = time.perf_counter()
        if keep:
            pool.release(conn)
        else:
            pool.discard(conn)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        done, status = time.perf_counter(), 0
        if conn is not None:
            pool.discard(conn)
    samples.append(Sample(due, done - due, done - sent, status))


async def run_load(port: int, requests: list[Request], rate: float, duration_s: float,
                   warmup_s: float = 0.0, max_connections: int = 256, timeout_s: float = 5.0,
                   host: str = "127.0.0.1") -> dict:
    pool = _Pool(host, port, max_connections)
    raws = [_encode(m, p, b, host) for m, p, b in requests]
    total = int((warmup_s + duration_s) * rate)
    samples: list[Sample] = []
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter() + 0.05
    max_lag = 0.0
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        task = asyncio.create_task(_one(pool, raws[i % len(raws)], due, timeout_s, samples))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s + 1)
    pool.close()
    measured = [s for s in samples if s.due >= start + warmup_s]
    return summarise(measured, rate, duration_s, max_lag, pool.opened)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    q = np.percentile(values * 1000, [50, 90, 99, 99.9])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "p999": float(q[3]),
            "max": float(values.max() * 1000), "mean": float(values.mean() * 1000)}


def summarise(samples: list[Sample], rate: float, duration_s: float, max_lag_s: float,
              connections: int) -> dict:
    ok = [s for s in samples if 200 <= s.status < 300]
    if samples:
        first = min(s.due for s in samples)
        last = max(s.due + s.latency_s for s in samples)
        span = max(last - first, 1e-9)
    else:
        span = duration_s
    latency = np.array([s.latency_s for s in samples])  # errors count with their wait
    service = np.array([s.service_s for s in ok])
    return {
        "offered_rps": rate, "duration_s": duration_s, "requests": len(samples),
        "ok": len(ok), "errors": len(samples) - len(ok),
        "status": {str(k): v for k, v in sorted(Counter(s.status for s in samples).items())},
        "achieved_rps": len(ok) / span,
        "latency_ms": _quantiles(latency), "service_ms": _quantiles(service),
        "generator_max_lag_ms": max_lag_s * 1000, "connections_opened": connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--requests", required=True, help="JSON list of [method, path, body]")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loadgen: only loopback targets")
    with open(args.requests) as f:
        requests = [(m, p, None if b is None else json.dumps(b).encode())
                    for m, p, b in json.load(f)]
    result = asyncio.run(run_load(args.port, requests, args.rate, args.duration, args.warmup,
                                  args.max_connections, args.timeout, args.host))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
