"""``celrec replay``: learn a fresh model from the event log (from the start or a time) or
from a file, with the trainer's own decoding, validation and dedup.

The result is a trainer checkpoint: written to ``--checkpoint-dir`` (``celrec train`` with
``CELREC_CHECKPOINT_DIR`` pointing there resumes from it and, for a topic replay, continues
at the offsets reached) and/or, with ``--publish``, stored under ``CELREC_STATE_PREFIX``
with a model snapshot for serving. Nothing is committed to the live consumer group.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from celrec.backends import make_event_log, make_state_store
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event
from schemas.messages import MessageDecodeError, decode_event, encode_event
from schemas.state import StateKeys
from trainer.checkpoint import (
    DEDUP_BLOB,
    Checkpoint,
    DiskCheckpoints,
    encode_dedup,
    store_values,
)
from trainer.dedup import DedupWindow
from trainer.learner import Learner
from trainer.learners import make_learner

IDLE_END_S = 5.0  # a topic replay ends when the end offsets are reached or nothing arrives


@dataclass
class ReplayReport:
    read: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    before_since: int = 0
    skipped: int = 0  # events of batches the model refused as non-finite
    reasons: Counter[str] = field(default_factory=Counter)
    offsets: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"read": self.read, "applied": self.applied, "duplicates": self.duplicates,
                "rejected": self.rejected, "before_since": self.before_since,
                "skipped": self.skipped, "offsets": self.offsets,
                "top_reject_reasons": dict(self.reasons.most_common(5))}


class Replayer:
    def __init__(self, settings: Settings, since: float | None = None):
        self.settings = settings
        self.since = since
        self.learner: Learner = make_learner(settings)
        self.dedup = DedupWindow(settings.dedup_window)
        self.report = ReplayReport()
        self._pending: list[Event] = []
        self._pending_ids: set[str] = set()

    def feed(self, value: bytes | None) -> None:
        self.report.read += 1
        try:
            envelope = decode_event(value)
        except (MessageDecodeError, RecursionError) as exc:
            self.report.rejected += 1
            reason = exc.reason if isinstance(exc, MessageDecodeError) else "nested too deeply"
            self.report.reasons[reason.split(":")[0][:80]] += 1
            return
        if self.since is not None and envelope.accepted_at < self.since:
            self.report.before_since += 1
            return
        event = envelope.event
        if event.event_id in self.dedup or event.event_id in self._pending_ids:
            self.report.duplicates += 1
            return
        self._pending.append(event)
        self._pending_ids.add(event.event_id)  # type: ignore[arg-type]
        if len(self._pending) >= self.settings.batch_max_events:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        stats = self.learner.learn(self._pending)
        for event in self._pending:
            self.dedup.add(event.event_id)  # type: ignore[arg-type]
        if stats.skipped:
            self.report.skipped += len(self._pending)
        else:
            self.report.applied += len(self._pending)
        self._pending, self._pending_ids = [], set()

    def checkpoint(self) -> Checkpoint:
        self.flush()
        progress = TrainerProgress(events_applied=self.report.applied,
                                   duplicates_skipped=self.report.duplicates,
                                   dead_lettered=self.report.rejected,
                                   events_skipped=self.report.skipped,
                                   offsets=dict(self.report.offsets), updated_at=time.time())
        blobs = dict(self.learner.state())
        blobs[DEDUP_BLOB] = encode_dedup(self.dedup.export())
        return Checkpoint(progress, blobs)


def file_messages(path: Path) -> Iterator[bytes]:
    """Lines of a JSON-lines file: log messages as they are, bare events wrapped as one."""
    now = time.time()
    start = datetime.now(UTC)  # bare events without a time keep the file's order
    with path.open("rb") as lines:
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                body = json.loads(line)
            except (ValueError, RecursionError):
                yield line  # decode_event rejects it with the reason
                continue
            if isinstance(body, dict) and "schema" not in body:
                try:
                    event = Event.model_validate(body).completed(Event.server_time(start, k))
                    yield encode_event(event, now)[1]
                except ValidationError:
                    yield line
                continue
            yield line


def topic_messages(settings: Settings, report: ReplayReport) -> Iterable[bytes | None]:
    """Every retained message of the events topic up to its end when the replay began."""
    event_log = make_event_log(settings)
    consumer = event_log.consumer([settings.kafka_events_topic],
                                  f"celrec-replay-{uuid.uuid4().hex[:8]}")
    try:
        ends = consumer.end_offsets()
        position = consumer.position()
        idle_since = time.monotonic()
        while any(position.get(tp, 0) < end for tp, end in ends.items()):
            records = consumer.poll(settings.batch_max_events, 0.5)
            if not records:
                if time.monotonic() - idle_since > IDLE_END_S:
                    break
                continue
            idle_since = time.monotonic()
            for record in records:
                tp = (record.topic, record.partition)
                if record.offset >= ends.get(tp, 0):
                    continue  # arrived after the replay began
                position[tp] = record.offset + 1
                yield record.value
        report.offsets = {f"{t}:{p}": off for (t, p), off in position.items()}
    finally:
        consumer.close()
        event_log.close()


def parse_since(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        from datetime import UTC, datetime

        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path,
                        help="JSON-lines file of events or log messages (default: the topic)")
    parser.add_argument("--since", help="only events the log accepted at or after this time "
                        "(unix seconds or ISO 8601); default: from the start")
    parser.add_argument("--checkpoint-dir", type=Path, help="write the result as a trainer "
                        "checkpoint here")
    parser.add_argument("--publish", action="store_true", help="store the result under "
                        "CELREC_STATE_PREFIX and publish it for serving")
    parser.add_argument("--force", action="store_true",
                        help="with --publish, replace an existing trainer checkpoint")


def replay(settings: Settings, args: argparse.Namespace) -> int:
    replayer = Replayer(settings, parse_since(args.since) if args.since else None)
    messages = file_messages(args.file) if args.file else topic_messages(settings,
                                                                          replayer.report)
    for value in messages:
        replayer.feed(value)
    checkpoint = replayer.checkpoint()
    if args.checkpoint_dir:
        DiskCheckpoints(args.checkpoint_dir).save(checkpoint)
    if args.publish:
        store = make_state_store(settings)
        keys = StateKeys(settings.state_prefix)
        if store.get(keys.trainer_progress) is not None and not args.force:
            print(f"celrec replay: {settings.state_prefix} already holds a trainer "
                  "checkpoint; pass --force to replace it (stop that trainer first)")
            return 1
        store.put(store_values(keys, checkpoint))
        from trainer.publisher import Publisher

        Publisher(settings, store).publish_snapshot(replayer.learner,  # type: ignore[arg-type]
                                                    checkpoint.progress)
        store.close()
    print(json.dumps(replayer.report.as_dict()))
    return 0
