"""Redis memory of a published model: bytes per user and per item, by id format.

    python bench/redis_memory.py [--users 1000000] [--items 100000] [--formats numeric7,...]

For each user-id format a fresh LocalRedis (``FLUSHALL`` between formats) and a fresh
trainer model: the trainer's CELLearner learns one event per user (items round-robin, so
every item is known too), then the trainer's Publisher writes a snapshot exactly as
``celrec train`` does. Reported per side: ``MEMORY USAGE`` (all samples) of each array key
of the snapshot, bytes per entity of the assignment + id map (what the Publisher itself
measures: ``Publisher.bytes_per_user``), and the ``used_memory`` delta of the snapshot.
For context, what else the trainer keeps per user in Redis is measured the same way:
its checkpoint (``celrec:trainer:state:*``) and the per-user seen-item lists
(``CELREC_SEEN_ITEMS_MAX``) written with the next delta.

Results: bench/results/serving_redis_memory.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_latency import environment, terminate_cleanly, write_results  # noqa: E402

from celrec.backends import make_state_store  # noqa: E402
from celrec.settings import Settings  # noqa: E402
from schemas.api import TrainerProgress  # noqa: E402
from schemas.events import Event  # noqa: E402
from schemas.state import StateKeys  # noqa: E402
from tests.localservers import LocalRedis  # noqa: E402
from trainer.cel_learner import CELLearner  # noqa: E402
from trainer.publisher import Publisher  # noqa: E402

FORMATS: dict[str, Callable[[int], str]] = {
    "numeric7": lambda k: str(1_000_000 + k),  # 7 digits, e.g. a database key
    "user-N": lambda k: f"user-{k}",  # 'user-999999': up to 11 chars
    "hex16": lambda k: f"{(k * 0x9E3779B97F4A7C15) % 2**64:016x}",  # 64-bit hash, hex
    "uuid4": lambda k: str(uuid.UUID(int=(k * 0x9E3779B97F4A7C15) % 2**128, version=4)),
}


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(url: str, fmt: str, users: int, items: int, batch: int) -> dict:
    client = redis.Redis.from_url(url)
    client.flushall()
    settings = Settings(state_store="redis", redis_url=url, state_prefix="mem")
    keys = StateKeys(settings.state_prefix)
    store = make_state_store(settings)
    learner, publisher = CELLearner(settings), Publisher(settings, store)
    make_id = FORMATS[fmt]
    user_ids = [make_id(k) for k in range(users)]
    item_of = np.arange(users) % items
    started = time.perf_counter()
    events_per_batch: list[list[Event]] = []
    for k in range(0, users, batch):
        chunk = [Event(user_id=user_ids[j], item_id=f"item-{item_of[j]}", value=1).completed()
                 for j in range(k, min(users, k + batch))]
        learner.learn(chunk)
        events_per_batch.append(chunk)
    learn_s = time.perf_counter() - started
    base = used_memory(client)
    version = publisher.publish_snapshot(learner, TrainerProgress(events_applied=users))
    snapshot_bytes = used_memory(client) - base
    arrays = {n.split(":array:", 1)[1]: n for n in
              (k.decode() for k in client.keys(f"{keys.prefix}:model:v{version}:array:*"))}
    sizes = {name: int(client.memory_usage(key, samples=0) or 0)
             for name, key in sorted(arrays.items())}
    per_side = {}
    for side, count in (("user", users), ("item", items)):
        entity_keys = [n for n in sizes if n.startswith(f"{side}.") and n != f"{side}.table"]
        entity_bytes = sum(sizes[n] for n in entity_keys)
        per_side[side] = {"entities": count, "arrays": entity_keys,
                          "bytes_per_entity": entity_bytes / count,
                          "publisher_bytes_per_entity": getattr(publisher, f"bytes_per_{side}"),
                          "id_bytes_mean": sizes_of_ids(sizes, side, count)}
    base = used_memory(client)
    store.put({keys.trainer_state(n): b for n, b in learner.state().items()})
    checkpoint_bytes = used_memory(client) - base
    base = used_memory(client)
    now = time.time()
    for chunk in events_per_batch:
        publisher.note_events(chunk, [now] * len(chunk))
    publisher.publish_delta(learner, TrainerProgress(events_applied=users))
    seen_bytes = used_memory(client) - base
    store.close()
    client.close()
    return {"format": fmt, "example_id": user_ids[-1], "users": users, "items": items,
            "learn_s": learn_s, "array_bytes": sizes, "per_side": per_side,
            "snapshot_used_memory_bytes": snapshot_bytes,
            "checkpoint_used_memory_bytes": checkpoint_bytes,
            "seen_lists_used_memory_bytes": seen_bytes}


def sizes_of_ids(sizes: dict[str, int], side: str, count: int) -> float:
    """Mean id length from the blob's memory (the blob holds the UTF-8 ids back to back)."""
    return sizes.get(f"{side}.ids.blob", 0) / count


def table(results: list[dict]) -> str:
    lines = [
        "# Redis memory of a published model", "",
        f"{results[0]['users']:,} users, {results[0]['items']:,} items, one snapshot through "
        "the trainer's Publisher. Target: <= 16 bytes per user (assignment + id map, no "
        "per-user vectors). `MEMORY USAGE ... SAMPLES 0` per key.", "",
        "| user id format | example | user bytes/user (assign + ids blob + offsets) | "
        "of which ids blob | snapshot `used_memory` delta / user | item bytes/item | "
        "trainer checkpoint / user | seen lists / user |",
        "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        user, item = r["per_side"]["user"], r["per_side"]["item"]
        n = r["users"]
        lines.append(
            f"| {r['format']} | `{r['example_id']}` | **{user['bytes_per_entity']:.2f}** | "
            f"{r['array_bytes']['user.ids.blob'] / n:.2f} | "
            f"{r['snapshot_used_memory_bytes'] / n:.2f} | {item['bytes_per_entity']:.2f} | "
            f"{r['checkpoint_used_memory_bytes'] / n:.1f} | "
            f"{r['seen_lists_used_memory_bytes'] / n:.1f} |")
    first = results[0]["array_bytes"]
    lines += ["", "Per-array bytes of the first format: " + ", ".join(
        f"`{k}` {v:,}" for k, v in first.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--batch", type=int, default=4096)
    args = parser.parse_args()
    terminate_cleanly()
    torch.set_num_threads(1)  # preparation only; 2 threads on a busy 2-core box crawl
    results = []
    with LocalRedis() as server:
        for fmt in args.formats.split(","):
            result = measure(server.url, fmt, args.users, args.items, args.batch)
            results.append(result)
            print(f"{fmt}: {result['per_side']['user']['bytes_per_entity']:.2f} B/user "
                  f"(learned in {result['learn_s']:.1f}s)", flush=True)
    write_results("serving_redis_memory", {"results": results, "environment": environment(),
                                           "settings": vars(args)}, table(results))


if __name__ == "__main__":
    main()
