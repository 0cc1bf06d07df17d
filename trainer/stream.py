"""The streaming trainer: micro-batches from the event log into the model, at least once.

Per micro-batch: decode and validate every message (bad ones go to the dead-letter topic
with a reason), drop event ids already applied (bounded window), let the learner learn
the rest in event-time order.
At each checkpoint the model state, the dedup window, the counters and the offsets they
reflect are written to the state store in one atomic put; only then are the offsets
committed to the log. On start the trainer restores the checkpoint and seeks to its
offsets, so a crash replays exactly the events the stored state does not contain.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from celrec.backends import (
    BackendUnavailable,
    EventConsumer,
    EventLog,
    EventProducer,
    LogRecord,
    StateStore,
    StateStoreUnavailable,
    TopicPartition,
)
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event
from schemas.messages import DeadLetter, MessageDecodeError, decode_event
from schemas.state import StateKeys
from trainer.checkpoint import (
    DEDUP_BLOB,
    Checkpoint,
    DiskCheckpoints,
    decode_dedup,
    encode_dedup,
    load_from_store,
    newest,
    store_values,
)
from trainer.dedup import DedupWindow
from trainer.learner import BatchReport, Learner
from trainer.publisher import Publisher

if TYPE_CHECKING:
    from trainer.metrics import TrainerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_BACKOFF_S = 0.5


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp[0]}:{tp[1]}"


def _in_event_time(events: list[Event], accepted_at: list[float]
                   ) -> tuple[list[Event], list[float]]:
    """The batch in event-time order (stable: ties keep the log's order). A poll returns
    each partition's records in turn, so without this the learner would see a batch grouped
    by partition (by user key), and what it learns depends on the order of a batch's events
    (first sight, each entity's last events): in time order, the stream as it happened."""
    order = sorted(range(len(events)), key=lambda k: events[k].timestamp)  # type: ignore
    return [events[k] for k in order], [accepted_at[k] for k in order]


def _tp_parse(name: str) -> TopicPartition:
    topic, _, partition = name.rpartition(":")
    return topic, int(partition)


class StreamTrainer:
    def __init__(self, settings: Settings, event_log: EventLog, store: StateStore,
                 learner: Learner, publisher: Publisher | None = None,
                 metrics: TrainerMetrics | None = None):
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.learner = learner
        self.publisher = publisher
        self.keys = StateKeys(settings.state_prefix)
        self.dedup = DedupWindow(settings.dedup_window)
        self.progress = TrainerProgress()
        self.consumer: EventConsumer = event_log.consumer(
            [settings.kafka_events_topic], settings.kafka_consumer_group
        )
        self.producer: EventProducer = event_log.producer()
        self._positions: dict[TopicPartition, int] = {}
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        self._store_behind = False  # the disk holds a checkpoint the store lacks
        self._stop = threading.Event()
        self.disk = DiskCheckpoints(Path(settings.checkpoint_dir)) \
            if settings.checkpoint_dir else None
        self._restore()

    # -- checkpoints -------------------------------------------------------------------
    def _restore(self) -> None:
        names = [*self.learner.blob_names, DEDUP_BLOB]
        stored = self._retry(lambda: load_from_store(self.store, self.keys, names),
                             "load checkpoint")
        on_disk = self.disk.load() if self.disk is not None else None
        chosen = newest(on_disk, stored)  # disk first: it wins a tie
        if chosen is None:
            self._positions = self.consumer.position()
            return
        self.progress = chosen.progress
        self.learner.restore(chosen.blobs)
        if chosen.blobs.get(DEDUP_BLOB):
            self.dedup.restore(decode_dedup(chosen.blobs[DEDUP_BLOB]))
        offsets = {_tp_parse(k): v for k, v in self.progress.offsets.items()}
        self.consumer.seek(offsets)
        self._positions = {**self.consumer.position(), **offsets}
        self._store_behind = chosen is not stored
        log.info("trainer resumed from the %s checkpoint: %d events applied, offsets %s",
                 "disk" if chosen is on_disk else "state-store", self.progress.events_applied,
                 self.progress.offsets)

    def checkpoint(self) -> None:
        """Store the model, dedup window, counters and offsets atomically; then commit.

        With a checkpoint directory the file is written first and a state store that is
        down only delays its copy (retried at the next checkpoint); without one the
        store is the only copy, so the trainer waits for it.
        """
        self.progress.updated_at = time.time()
        blobs = dict(self.learner.state())
        blobs[DEDUP_BLOB] = encode_dedup(self.dedup.export())
        checkpoint = Checkpoint(self.progress.model_copy(deep=True), blobs)
        values = store_values(self.keys, checkpoint)
        if self.disk is not None:
            self.disk.save(checkpoint)
            try:
                self.store.put(values)
                self._store_behind = False
            except BackendUnavailable as exc:
                self._store_outage(exc)
                self._store_behind = True
                log.warning("checkpoint saved to disk; state-store copy failed: %s", exc)
        else:
            self._retry(lambda: self.store.put(values), "store checkpoint")
        try:
            self.consumer.commit(dict(self._positions))
        except Exception as exc:  # harmless: the stored checkpoint carries the offsets
            log.warning("offset commit failed (checkpoint holds them): %s", exc)
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        if self.metrics is not None:
            self.metrics.observe_checkpoint()

    def _store_outage(self, exc: BackendUnavailable) -> None:
        # A store that was away may have come back empty (Redis without persistence):
        # deltas on a lost snapshot would never reach readers, so republish in full.
        if isinstance(exc, StateStoreUnavailable) and self.publisher is not None:
            self.publisher.need_snapshot = True

    # -- the loop ----------------------------------------------------------------------
    def _retry(self, action: Callable[[], T], what: str) -> T:
        """Run ``action`` until the backend answers (or the trainer stops): no work is lost."""
        while True:
            try:
                return action()
            except BackendUnavailable as exc:
                self._store_outage(exc)
                if self._stop.is_set():
                    raise
                log.warning("%s failed, retrying: %s", what, exc)
                time.sleep(RETRY_BACKOFF_S)

    def _poll_batch(self) -> list[LogRecord]:
        deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000
        records: list[LogRecord] = []
        while len(records) < self.settings.batch_max_events:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and records:
                break
            got = self.consumer.poll(
                self.settings.batch_max_events - len(records), max(remaining, 0.0)
            )
            records.extend(got)
            if not got and remaining <= 0:
                break
        return records

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        messages = [(None, letter.encode()) for letter in letters]
        self._retry(
            lambda: self.producer.send(
                self.settings.kafka_dead_letter_topic, messages, self.settings.produce_timeout_s
            ),
            "dead-letter",
        )

    def process(self, records: list[LogRecord]) -> BatchReport:
        started = time.perf_counter()
        report = BatchReport(records=len(records))
        events: list[Event] = []
        accepted_at: list[float] = []
        letters: list[DeadLetter] = []
        batch_ids: set[str] = set()
        for record in records:
            try:
                envelope = decode_event(record.value)
            except MessageDecodeError as exc:
                letters.append(DeadLetter(exc.reason, record.topic, record.partition,
                                          record.offset, record.value))
                continue
            except Exception as exc:  # a decoder bug must cost one message, not the trainer
                reason = f"undecodable: {type(exc).__name__}: {exc}"[:500]
                letters.append(DeadLetter(reason, record.topic, record.partition,
                                          record.offset, record.value))
                continue
            event = envelope.event
            assert event.event_id is not None
            if event.event_id in self.dedup or event.event_id in batch_ids:
                report.duplicates += 1
                continue
            batch_ids.add(event.event_id)
            events.append(event)
            accepted_at.append(envelope.accepted_at)
        if letters:
            self._dead_letter(letters)
            report.dead_lettered = len(letters)
        events, accepted_at = _in_event_time(events, accepted_at)
        if events:
            if self.metrics is not None:
                self.metrics.before_learn(self.learner, events)  # progressive: predict first
            stats = self.learner.learn(events)
            if self.metrics is not None:
                self.metrics.after_learn(stats)
            for event in events:
                self.dedup.add(event.event_id)  # type: ignore[arg-type]
            if stats.skipped:
                report.skipped = len(events)
            else:
                report.applied = len(events)
                if self.publisher is not None:
                    self.publisher.note_events(events, accepted_at)
        for record in records:
            tp = (record.topic, record.partition)
            self._positions[tp] = max(self._positions.get(tp, 0), record.offset + 1)
        self.progress.offsets = {_tp_name(tp): off for tp, off in self._positions.items()}
        self.progress.events_applied += report.applied
        self.progress.events_skipped += report.skipped
        self.progress.duplicates_skipped += report.duplicates
        self.progress.dead_lettered += report.dead_lettered
        self.progress.batches += 1 if records else 0
        self._dirty = self._dirty or bool(records)
        report.seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe_batch(report)
        return report

    def run_once(self) -> BatchReport:
        report = self.process(self._poll_batch())
        due = time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s
        if (self._dirty or self._store_behind) and due:
            self.checkpoint()
            report.checkpointed = True
        if self.publisher is not None:
            started = time.perf_counter()
            kind = self.publisher.maybe_publish(self.learner, self.progress)  # type: ignore[arg-type]
            if self.metrics is not None:
                self.metrics.observe_publish(kind, time.perf_counter() - started, self.publisher)
        if self.metrics is not None:
            self.metrics.maybe_sample(self)
        return report

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        log.info("trainer consuming %s", self.settings.kafka_events_topic)
        while not stop.is_set():
            try:
                self.run_once()
            except BackendUnavailable as exc:
                log.warning("trainer backend unavailable: %s", exc)
                time.sleep(RETRY_BACKOFF_S)
        if self._dirty or self._store_behind:
            try:
                self.checkpoint()
            except BackendUnavailable as exc:
                log.warning("final checkpoint failed; the log will be replayed: %s", exc)

    def lag(self) -> dict[str, int]:
        ends = self.consumer.end_offsets()
        return {_tp_name(tp): end - self._positions.get(tp, 0) for tp, end in ends.items()}

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()


def progress_of(store: StateStore, prefix: str) -> TrainerProgress | None:
    """The progress of the last checkpoint, as readers (tests, the service) see it."""
    raw = store.get(StateKeys(prefix).trainer_progress)
    return None if raw is None else TrainerProgress.model_validate(json.loads(raw))
