"""Trainer checkpoints: one atomic file on disk, and the latest copy in the state store.

A checkpoint is the trainer's whole state at a batch boundary: the learner's blobs (tables,
assignments, optimiser state, id maps, counters), the dedup window and the progress with
the offsets that state reflects. On disk it is one bundle (``schemas.snapshot`` format:
JSON header + named arrays, never pickle) written to a temporary file in the same
directory, fsynced and renamed over the previous one, so a crash leaves the old or the new
checkpoint, never a torn one. In the state store it is one atomic multi-key put (layout in
``schemas.state``). On start the newer of the two wins.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from celrec.backends import StateStore
from schemas.api import TrainerProgress
from schemas.snapshot import decode_bundle, encode_bundle
from schemas.state import ArrayFormatError, StateKeys

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "trainer-checkpoint.celb"
DEDUP_BLOB = "dedup_window"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read; starting fresh would silently lose state."""


class CheckpointHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["celrec-trainer-checkpoint"] = "celrec-trainer-checkpoint"
    format: Literal[1] = 1
    progress: TrainerProgress


@dataclass
class Checkpoint:
    progress: TrainerProgress
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def newer_key(self) -> tuple[float, int]:
        return self.progress.updated_at, self.progress.batches


def encode_dedup(event_ids: list[str]) -> bytes:
    # JSON, not newline-joined: an event id may itself contain a newline.
    return json.dumps(event_ids, separators=(",", ":")).encode("utf-8")


def decode_dedup(blob: bytes) -> list[str]:
    text = blob.decode("utf-8")
    if text.startswith("["):
        ids = json.loads(text)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CheckpointError("dedup window is not a list of strings")
        return ids
    return text.split("\n") if text else []  # written before the JSON encoding


# -- the on-disk format --------------------------------------------------------------------
def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    arrays = {name: np.frombuffer(blob, dtype=np.uint8)
              for name, blob in sorted(checkpoint.blobs.items())}
    return encode_bundle(CheckpointHeader(progress=checkpoint.progress), arrays)


def decode_checkpoint(data: bytes) -> Checkpoint:
    try:
        raw_header, arrays = decode_bundle(data)
        header = CheckpointHeader.model_validate(raw_header)
    except (ArrayFormatError, ValidationError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"not a readable trainer checkpoint: {exc}") from None
    blobs = {}
    for name, array in arrays.items():
        if array.dtype != np.uint8 or array.ndim != 1:
            raise CheckpointError(f"checkpoint blob {name!r} is not a byte array")
        blobs[name] = array.tobytes()
    return Checkpoint(header.progress, blobs)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers (and a crash) see old or new, whole."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


class DiskCheckpoints:
    """The latest checkpoint as one file in ``directory``."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CHECKPOINT_FILE

    def save(self, checkpoint: Checkpoint) -> None:
        write_atomic(self.path, encode_checkpoint(checkpoint))

    def load(self) -> Checkpoint | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return decode_checkpoint(data)


# -- the state-store copy ------------------------------------------------------------------
def store_values(keys: StateKeys, checkpoint: Checkpoint) -> dict[str, bytes]:
    values = {keys.trainer_state(name): blob for name, blob in checkpoint.blobs.items()}
    values[keys.trainer_progress] = checkpoint.progress.model_dump_json().encode()
    return values


def load_from_store(store: StateStore, keys: StateKeys,
                    blob_names: list[str]) -> Checkpoint | None:
    raw = store.get(keys.trainer_progress)
    if raw is None:
        return None
    try:
        progress = TrainerProgress.model_validate_json(raw)
    except ValidationError as exc:
        raise CheckpointError(f"stored trainer progress is unreadable: {exc}") from None
    found = store.get_many([keys.trainer_state(n) for n in blob_names])
    blobs = {n: b for n, b in zip(blob_names, found, strict=True) if b is not None}
    return Checkpoint(progress, blobs)


def newest(*candidates: Checkpoint | None) -> Checkpoint | None:
    """The most recent checkpoint; on a tie the first given (pass the disk copy first)."""
    best: Checkpoint | None = None
    for candidate in candidates:
        if candidate is not None and (best is None or candidate.newer_key > best.newer_key):
            best = candidate
    return best
