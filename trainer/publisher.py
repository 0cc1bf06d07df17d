"""Publishing the model for serving: full snapshots and short-cadence deltas.

Layout and visibility rules are in schemas/snapshot.py. A snapshot's arrays and meta are
written first, then the ``current`` pointer switches in a separate write, so a reader
never sees a half-written version; the previous version expires after a grace period.
If the store is down, the changes since the last publish are not lost: the next
successful publish is a full snapshot.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict

from cel.covisit import WINDOW
from celrec.backends import StateStore, StateStoreUnavailable
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event, EventType
from schemas.snapshot import (
    DeltaHeader,
    SnapshotMeta,
    SplitEvent,
    UpdateNotice,
    encode_bundle,
)
from schemas.state import StateKeys, encode_array
from trainer.learner import Learner

log = logging.getLogger(__name__)

ACCEPTED_SAMPLE = 256  # acceptance times carried per delta, for the freshness histogram
SEEN_TTL_S = 30 * 86_400


class Publisher:
    def __init__(self, settings: Settings, store: StateStore):
        self.settings = settings
        self.store = store
        self.keys = StateKeys(settings.state_prefix)
        self.version = 0
        self.seq = 0
        self.need_snapshot = True
        self.last_delta = 0.0
        self.last_snapshot = 0.0
        self._version_keys: list[str] = []
        self._accepted: list[float] = []
        self._accepted_seen = 0
        self._seen: dict[str, list[bytes]] = defaultdict(list)
        self._rng = random.Random(0)
        self.bytes_per_user: float | None = None
        self.bytes_per_item: float | None = None
        self.snapshot_bytes: int | None = None  # state-store memory of the last snapshot

    # -- inputs from the trainer loop -------------------------------------------------
    def note_events(self, events: list[Event], accepted_at: list[float]) -> None:
        """Remember acceptance times (reservoir sample) and the users' interacted items."""
        for t in accepted_at:
            self._accepted_seen += 1
            if len(self._accepted) < ACCEPTED_SAMPLE:
                self._accepted.append(t)
            else:
                k = self._rng.randrange(self._accepted_seen)
                if k < ACCEPTED_SAMPLE:
                    self._accepted[k] = t
        if self.settings.seen_items_max:
            for event in events:
                if event.event_type is not EventType.impression or event.value > 0:
                    self._seen[event.user_id].append(event.item_id.encode())

    # -- publishing --------------------------------------------------------------------
    def maybe_publish(self, learner: Learner, progress: TrainerProgress,
                      now: float | None = None) -> str | None:
        """Publish what is due; returns "snapshot", "delta" or None."""
        now = time.monotonic() if now is None else now
        snapshot_due = now - self.last_snapshot >= self.settings.snapshot_interval_s
        changed = learner.has_changes or bool(self._seen)
        try:
            if self.need_snapshot or (snapshot_due and (changed or self.seq > 0)):
                self.publish_snapshot(learner, progress)
                self.last_snapshot = self.last_delta = now
                return "snapshot"
            if changed and now - self.last_delta >= self.settings.publish_interval_ms / 1000:
                self.publish_delta(learner, progress)
                self.last_delta = now
                return "delta"
        except StateStoreUnavailable as exc:
            log.warning("publishing failed, a full snapshot follows when the store is back: %s",
                        exc)
            self.need_snapshot = True
        return None

    def _flush_seen(self, learner: Learner) -> None:
        if self._seen:
            seen = {self.keys.user_seen(u): items for u, items in self._seen.items()}
            self.store.list_push_many(seen, self.settings.seen_items_max, ttl_s=SEEN_TTL_S)
            self._seen.clear()
        liked = learner.take_liked()
        if liked:
            self.store.list_push_many({self.keys.user_liked(u): items
                                       for u, items in liked.items()}, WINDOW, ttl_s=SEEN_TTL_S)

    def _flush_sequences(self, learner: Learner) -> None:
        """saml/dupn: rewrite the behaviour sequences changed since the last publish (before
        the model state that learnt from them becomes visible)."""
        pending = learner.sequence_values(self.keys)
        if pending:
            self.store.put(pending, ttl_s=SEEN_TTL_S)
        learner.sequences_published()

    def _take_accepted(self) -> list[float]:
        taken, self._accepted, self._accepted_seen = self._accepted, [], 0
        return taken

    def publish_snapshot(self, learner: Learner, progress: TrainerProgress) -> int:
        current = self.store.get(self.keys.model_current)
        version = max(int(current or 0), self.version) + 1
        arrays = learner.snapshot_arrays()
        meta = SnapshotMeta(
            version=version, created_at=time.time(),
            model=learner.model_kind, loss=learner.loss, dim=learner.dim,
            events_applied=progress.events_applied,
            offsets=progress.offsets, sides=learner.side_meta(), scenarios=learner.scenarios,
            arrays=sorted(arrays),
            network=learner.network_spec(), retrieval_weight=learner.retrieval_weight,
            coliked_weight=learner.coliked_weight,
        )
        values = {self.keys.model_array(version, n): encode_array(a) for n, a in arrays.items()}
        values[self.keys.model_meta(version)] = meta.model_dump_json().encode()
        self._flush_seen(learner)
        self._flush_sequences(learner)
        self.store.put(values)
        self.store.put({self.keys.model_current: str(version).encode()})
        if self._version_keys:  # the replaced version stays readable for a grace period
            self.store.expire(self._version_keys, self.settings.version_grace_s)
        self._version_keys = list(values)
        self._measure(version, arrays, meta)
        self.version, self.seq, self.need_snapshot = version, 0, False
        self._take_accepted()
        self._notify(UpdateNotice(version=version, seq=0))
        log.info("published snapshot v%d (%d users, %d items)", version,
                 meta.sides["user"].entities, meta.sides["item"].entities)
        return version

    def publish_delta(self, learner: Learner, progress: TrainerProgress) -> int:
        first_new, splits, arrays = learner.delta_arrays()
        seq = self.seq + 1
        header = DeltaHeader(
            version=self.version, seq=seq, created_at=time.time(),
            events_applied=progress.events_applied, offsets=progress.offsets,
            sides=learner.side_meta(), first_new=first_new, scenarios=learner.scenarios,
            split_events=[SplitEvent(side=s, parent=p, child=c, moved=m)
                          for s, p, c, m in splits],
            accepted_at=self._take_accepted(), retrieval_weight=learner.retrieval_weight,
            coliked_weight=learner.coliked_weight,
        )
        delta_key = self.keys.model_delta(self.version, seq)
        seq_key = self.keys.model_delta_seq(self.version)
        # Deltas outlive the next snapshot, which replaces them, by the grace period.
        ttl = 2 * self.settings.snapshot_interval_s + self.settings.version_grace_s
        self._flush_seen(learner)
        self._flush_sequences(learner)
        self.store.put({delta_key: encode_bundle(header, arrays),
                        seq_key: str(seq).encode()}, ttl_s=ttl)
        self._version_keys += [delta_key, seq_key]
        self.seq = seq
        self._notify(UpdateNotice(version=self.version, seq=seq))
        return seq

    def _notify(self, notice: UpdateNotice) -> None:
        self.store.publish(self.keys.model_updates_channel, notice.model_dump_json().encode())

    def _measure(self, version: int, arrays: dict, meta: SnapshotMeta) -> None:
        """Bytes the store spends on the snapshot, and per user and per item (assignment +
        id map)."""
        self.snapshot_bytes = self.store.memory_bytes(
            [self.keys.model_meta(version)]
            + [self.keys.model_array(version, n) for n in arrays])
        for side in ("user", "item"):
            names = [n for n in arrays if n.startswith(f"{side}.") and n != f"{side}.table"]
            entities = meta.sides[side].entities
            if entities:
                used = self.store.memory_bytes([self.keys.model_array(version, n)
                                                for n in names])
                setattr(self, f"bytes_per_{side}", used / entities)
