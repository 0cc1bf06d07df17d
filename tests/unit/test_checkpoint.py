"""Trainer checkpoints: the atomic on-disk file, its format, and resuming from it."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from celrec.backends import StateStoreUnavailable
from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event
from schemas.messages import encode_event
from trainer import checkpoint as ckpt
from trainer.cel_learner import CELLearner
from trainer.checkpoint import (
    Checkpoint,
    CheckpointError,
    DiskCheckpoints,
    decode_checkpoint,
    decode_dedup,
    encode_checkpoint,
    encode_dedup,
    newest,
)
from trainer.stream import StreamTrainer, progress_of


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict = dict(batch_max_events=10, batch_max_wait_ms=10, checkpoint_interval_s=3600,
                        entity_state_capacity=1000, checkpoint_dir=str(tmp_path),
                        user_clusters=8, item_clusters=8, embedding_dim=8)
    values.update(overrides)
    return Settings(**values)


def produce(log: EmbeddedEventLog, ids: range) -> None:
    now = time.time()
    events = [Event(event_id=f"e{k}", user_id=f"u{k % 7}", item_id=f"i{k % 3}",
                    value=k % 2).completed() for k in ids]
    log.producer().send("events", [encode_event(e, now) for e in events], 1.0)


def drain(trainer: StreamTrainer) -> None:
    for _ in range(100):
        if trainer.run_once().records == 0:
            return


def sample() -> Checkpoint:
    progress = TrainerProgress(events_applied=7, batches=2, offsets={"t:0": 7}, updated_at=1.5)
    return Checkpoint(progress, {"a": b"\x00\x01binary", "dedup_window": encode_dedup(["x"])})


def test_checkpoint_round_trips_through_the_bundle_format():
    again = decode_checkpoint(encode_checkpoint(sample()))
    assert again.progress == sample().progress
    assert again.blobs == sample().blobs


@pytest.mark.parametrize("bad", [b"", b"CELB", pickle.dumps({"a": 1}),
                                 encode_checkpoint(sample())[:-3]])
def test_unreadable_checkpoints_are_refused_not_unpickled(bad):
    with pytest.raises(CheckpointError):
        decode_checkpoint(bad)


def test_event_ids_with_newlines_survive_the_dedup_encoding():
    ids = ["plain", "two\nlines", ""]
    assert decode_dedup(encode_dedup(ids)) == ids
    assert decode_dedup(b"a\nb") == ["a", "b"]  # the earlier newline format still loads


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    disk = DiskCheckpoints(tmp_path)
    disk.save(sample())

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    newer = Checkpoint(TrainerProgress(events_applied=99, updated_at=9.0), {})
    with pytest.raises(OSError):
        disk.save(newer)
    assert disk.load().progress.events_applied == 7
    assert os.listdir(tmp_path) == [ckpt.CHECKPOINT_FILE]


def test_newest_prefers_the_later_checkpoint_and_the_first_on_a_tie():
    old, new = sample(), sample()
    new.progress.updated_at = 2.0
    assert newest(old, new) is new and newest(None, old) is old and newest(None, None) is None
    twin = sample()
    assert newest(twin, old) is twin


def test_resumes_from_disk_alone_and_applies_the_rest_exactly_once(tmp_path):
    log = EmbeddedEventLog(partitions=2)
    produce(log, range(100))
    settings = settings_for(tmp_path)
    first = StreamTrainer(settings, log, EmbeddedStateStore(), CELLearner(settings))
    for _ in range(3):
        first.run_once()
    first.checkpoint()  # 30 events on disk; 20 more in memory only, then the process dies
    first.run_once()
    first.run_once()
    assert first.progress.events_applied == 50

    # a fresh state store (e.g. Redis lost its data): the disk copy alone resumes
    fresh_store = EmbeddedStateStore()
    second = StreamTrainer(settings, log, fresh_store, CELLearner(settings))
    assert second.progress.events_applied == 30
    assert second.learner.events_applied == 30
    drain(second)
    second.checkpoint()
    assert progress_of(fresh_store, "celrec").events_applied == 100
    assert second.learner.events_applied == 100
    assert second.learner.positives() == 50
    table = second.learner.model.cluster_table("user")
    assert torch.isfinite(table).all()


def test_state_store_outage_does_not_stop_checkpoints_and_the_store_catches_up(tmp_path):
    class FlakyStore(EmbeddedStateStore):
        down = False

        def put(self, values, ttl_s=None):  # type: ignore[no-untyped-def]
            if self.down:
                raise StateStoreUnavailable("store down")
            super().put(values, ttl_s)

    log, store = EmbeddedEventLog(partitions=1), FlakyStore()
    produce(log, range(40))
    settings = settings_for(tmp_path, checkpoint_interval_s=0)
    trainer = StreamTrainer(settings, log, store, CELLearner(settings))
    trainer.run_once()
    store.down = True
    drain(trainer)  # keeps learning; each checkpoint lands on disk only
    assert trainer.progress.events_applied == 40
    assert progress_of(store, "celrec").events_applied == 10
    assert DiskCheckpoints(tmp_path).load().progress.events_applied == 40
    store.down = False
    trainer.run_once()  # nothing new to read, but the store is behind: it is caught up
    assert progress_of(store, "celrec").events_applied == 40


def test_disk_checkpoint_holds_only_arrays_of_our_format(tmp_path):
    log = EmbeddedEventLog(partitions=1)
    produce(log, range(20))
    settings = settings_for(tmp_path)
    trainer = StreamTrainer(settings, log, EmbeddedStateStore(), CELLearner(settings))
    drain(trainer)
    trainer.checkpoint()
    data = (tmp_path / ckpt.CHECKPOINT_FILE).read_bytes()
    assert data[:4] == b"CELB"
    loaded = decode_checkpoint(data)
    assert set(loaded.blobs) == {*trainer.learner.blob_names, "dedup_window"}
    assert decode_dedup(loaded.blobs["dedup_window"]) == [f"e{k}" for k in range(20)]
    assert all(np.frombuffer(b, np.uint8).size for b in loaded.blobs.values())


def test_replay_of_a_file_builds_a_checkpoint_the_trainer_resumes(tmp_path, capsys):
    import argparse
    import json

    from cli.replay import replay

    lines = [json.dumps({"event_id": f"f{k}", "user_id": f"u{k % 5}", "item_id": f"i{k % 3}",
                         "value": k % 2}) for k in range(60)]
    old = Event(event_id="old", user_id="u", item_id="i").completed()
    lines += [lines[0], "not json", json.dumps({"user_id": "u"}), "[" * 5000,
              encode_event(old, 1000.0)[1].decode(), ""]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ckpt"
    settings = settings_for(out, batch_max_events=16)
    args = argparse.Namespace(file=source, since="2001-09-09T01:46:40+00:00",
                              checkpoint_dir=out, publish=False, force=False)
    assert replay(settings, args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["read"], report["applied"], report["duplicates"]) == (65, 60, 1)
    assert (report["rejected"], report["before_since"]) == (3, 1)

    resumed = StreamTrainer(settings, EmbeddedEventLog(partitions=1), EmbeddedStateStore(),
                            CELLearner(settings))
    assert resumed.progress.events_applied == 60
    assert resumed.learner.events_applied == 60 and resumed.learner.positives() == 30
    assert "f7" in resumed.dedup
