"""Keeps the service's :class:`service.serving_model.ServingModel` current with the published model.

A background thread loads the snapshot ``model_current`` points to, then applies that
version's deltas in seq order. Update notices (pub/sub) wake it up at once; it also polls
every ``poll_interval_s`` because pub/sub drops messages while disconnected. A new version
is built and caught up off to the side, then swapped in with one reference assignment;
deltas apply under the model's own lock. If the store goes away the last good model keeps
serving and the thread reconnects in the background.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from celrec.backends import BackendUnavailable, StateStore, Subscription
from schemas.snapshot import DeltaHeader, SnapshotMeta, decode_bundle
from schemas.state import ArrayFormatError, StateKeys, decode_array
from service.serving_load import serving_model
from service.serving_model import ModelDataError, ServingModel

if TYPE_CHECKING:
    from service.registry import ServiceMetrics

log = logging.getLogger(__name__)

DELTA_FETCH_CHUNK = 64  # deltas read per round trip while catching up
_BAD_DATA = (ArrayFormatError, ModelDataError, ValidationError, ValueError)


class _Gap(Exception):
    """A delta is missing or unusable. ``suspect``: applying it failed unexpectedly, so the
    model may be part-changed and must be rebuilt (a ModelDataError changes nothing)."""

    def __init__(self, reason: str, suspect: bool = False):
        super().__init__(reason)
        self.suspect = suspect


@dataclass(frozen=True)
class FollowerStatus:
    connected: bool
    last_error: str | None
    last_sync_at: float | None  # last time the store was read successfully


class ModelFollower:
    def __init__(self, store: StateStore, keys: StateKeys, *, poll_interval_s: float = 0.5,
                 retry_interval_s: float = 0.5, metrics: ServiceMetrics | None = None,
                 clock: Callable[[], float] = time.time, freeze_gc: bool = True):
        self.store, self.keys = store, keys
        self.poll_interval_s, self.retry_interval_s = poll_interval_s, retry_interval_s
        self.metrics, self.clock, self.freeze_gc = metrics, clock, freeze_gc
        self._model: ServingModel | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self._failing = False  # the last store access of the loop failed
        self._last_error: str | None = None
        self._last_sync_at: float | None = None
        self._gap_logged: tuple[int, int] | None = None
        self._poisoned: tuple[int, int] | None = None  # a delta whose apply raised a bug
        self._changed = threading.Condition()
        if metrics is not None:
            metrics.model_age.set_function(self._age)

    # ----------------------------------------------------------------- public

    @property
    def model(self) -> ServingModel | None:
        """The current model (None until the first snapshot loaded); take it once per request."""
        return self._model

    @property
    def store_reachable(self) -> bool:
        """False while the running follower finds the store unreachable (a cheap breaker for
        request paths that read the store); True when unknown."""
        running = self._thread is not None and self._thread.is_alive()
        return not (running and self._failing)

    def status(self) -> FollowerStatus:
        return FollowerStatus(self._connected, self._last_error, self._last_sync_at)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="celrec-model-follower",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_for(self, predicate: Callable[[ServingModel], bool], timeout_s: float) -> bool:
        """Block until the current model satisfies ``predicate`` (for start-up and tests)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                model = self._model
                if model is not None and predicate(model):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))

    def sync(self) -> bool:
        """One pass: load a new version or apply pending deltas. Returns whether the model
        changed; raises :class:`BackendUnavailable` when the store cannot be read."""
        raw = self.store.get(self.keys.model_current)
        self._last_sync_at = self.clock()
        if raw is None:
            return False
        try:
            version = int(raw)
        except ValueError:
            self._error(f"model_current is not a version: {raw[:40]!r}", "bad_snapshot")
            return False
        model = self._model
        if model is None or model.version != version:
            return self._load(version)
        try:
            return self._follow(model, observe=True) > 0
        except _Gap as gap:
            return self._on_gap(model, gap)

    # ----------------------------------------------------------------- loop

    def _run(self) -> None:
        subscription: Subscription | None = None
        while not self._stop.is_set():
            try:
                if subscription is None:
                    subscription = self.store.subscribe(self.keys.model_updates_channel)
                self.sync()
                if not self._connected:
                    log.info("model follower connected to the state store")
                    if self._failing:
                        self._last_error = None  # the outage is over
                self._connected, self._failing = True, False
                # A notice or the poll interval, whichever comes first; extra notices
                # queued meanwhile are covered by the next sync.
                subscription.get(self.poll_interval_s)
            except BackendUnavailable as exc:
                if self._connected or self._last_error is None:
                    log.warning("state store unavailable, serving model from memory: %s", exc)
                self._connected, self._failing = False, True
                self._error(str(exc), "store_unavailable", quiet=True)
                subscription = self._close(subscription)
                self._stop.wait(self.retry_interval_s)
            except Exception as exc:  # a bug must not stop following for good
                log.exception("model follower failed")
                self._error(f"{type(exc).__name__}: {exc}", "internal", quiet=True)
                subscription = self._close(subscription)
                self._stop.wait(self.retry_interval_s)
        self._close(subscription)

    @staticmethod
    def _close(subscription: Subscription | None) -> None:
        if subscription is not None:
            try:
                subscription.close()
            except Exception:  # closing a dead connection may fail; nothing to do
                log.debug("closing the update subscription failed", exc_info=True)
        return None

    # ----------------------------------------------------------------- loading

    def _load(self, version: int) -> bool:
        """Build ``version`` from its snapshot, catch up its deltas, then swap it in."""
        try:
            model = self._read_snapshot(version)
        except _BAD_DATA as exc:
            self._error(f"snapshot v{version} unusable: {exc}", "bad_snapshot")
            return False
        if model is None:
            return False  # not (or no longer) complete; the next pass looks again
        accepted: list[float] = []
        try:
            self._follow(model, observe=False, accepted=accepted)
        except _Gap as gap:
            self._log_gap(model, str(gap))
        self._swap(model)
        self._observe(accepted)
        if self.metrics is not None:
            self.metrics.model_reloads.inc()
        log.info("serving model v%d#%d", model.version, model.seq)
        return True

    def _read_snapshot(self, version: int) -> ServingModel | None:
        raw_meta = self.store.get(self.keys.model_meta(version))
        if raw_meta is None:
            return None
        meta = SnapshotMeta.model_validate_json(raw_meta)
        names = list(meta.arrays)
        blobs = self.store.get_many([self.keys.model_array(version, n) for n in names])
        if any(b is None for b in blobs):
            return None
        arrays = {n: decode_array(b) for n, b in zip(names, blobs, strict=True) if b}
        return serving_model(meta, arrays)

    def _follow(self, model: ServingModel, observe: bool,
                accepted: list[float] | None = None) -> int:
        """Apply the deltas of ``model.version`` after ``model.seq``; returns how many."""
        raw = self.store.get(self.keys.model_delta_seq(model.version))
        newest = int(raw) if raw is not None and raw.strip().isdigit() else 0
        applied = 0
        while model.seq < newest:
            seqs = list(range(model.seq + 1, min(newest, model.seq + DELTA_FETCH_CHUNK) + 1))
            blobs = self.store.get_many([self.keys.model_delta(model.version, s) for s in seqs])
            for seq, blob in zip(seqs, blobs, strict=True):
                if self._poisoned == (model.version, seq):
                    raise _Gap(f"delta v{model.version}#{seq} failed before; skipped")
                if blob is None:
                    raise _Gap(f"delta v{model.version}#{seq} is missing")
                try:
                    header_dict, arrays = decode_bundle(blob)
                    header = DeltaHeader.model_validate(header_dict)
                    model.apply_delta(header, arrays)
                except _BAD_DATA as exc:
                    raise _Gap(f"delta v{model.version}#{seq} unusable: {exc}") from None
                except Exception as exc:
                    log.exception("applying delta v%d#%d failed", model.version, seq)
                    self._poisoned = (model.version, seq)
                    raise _Gap(f"delta v{model.version}#{seq} failed: {exc}", True) from None
                applied += 1
                if self.metrics is not None:
                    self.metrics.model_deltas_applied.inc()
                if observe:
                    self._observe(header.accepted_at)
                elif accepted is not None:
                    accepted.extend(header.accepted_at)
        if applied:
            self._notify()
        return applied

    def _on_gap(self, model: ServingModel, gap: _Gap) -> bool:
        """A delta of the live version cannot be applied: follow the pointer if it moved;
        rebuild a possibly part-changed model; else keep serving what we have (reloading
        the same snapshot could not get past the gap)."""
        raw = self.store.get(self.keys.model_current)
        if raw is not None and raw.strip().isdigit() and int(raw) != model.version:
            return self._load(int(raw))
        if gap.suspect:
            return self._load(model.version)
        self._log_gap(model, str(gap))
        return False

    def _log_gap(self, model: ServingModel, reason: str) -> None:
        where = (model.version, model.seq)
        if self._gap_logged != where:
            self._gap_logged = where
            self._error(f"{reason}; serving v{model.version}#{model.seq}", "delta_gap")

    # ----------------------------------------------------------------- bookkeeping

    def _swap(self, model: ServingModel) -> None:
        self._model = model  # one reference assignment: readers see old or new, never mixed
        if self.freeze_gc:
            # Millions of id strings would make every full cyclic-GC pass stall requests
            # (~100 ms at 2M ids). They hold no cycles, so refcounting still frees them
            # when the model is replaced; freezing only stops the GC from scanning them.
            gc.freeze()
        if self.metrics is not None:
            self.metrics.model_version.set(model.version)
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _observe(self, accepted_at: list[float]) -> None:
        if self.metrics is None or not accepted_at:
            return
        now = self.clock()
        for t in accepted_at:
            self.metrics.freshness.observe(max(0.0, now - t))

    def _age(self) -> float:
        model = self._model
        return max(0.0, self.clock() - model.created_at) if model is not None else float("nan")

    def _error(self, message: str, kind: str, quiet: bool = False) -> None:
        if not quiet and message != self._last_error:
            log.warning("model follower: %s", message)
        self._last_error = message
        if self.metrics is not None:
            self.metrics.model_sync_errors.labels(kind=kind).inc()
