"""Published model state: full snapshots and deltas (trainer writes, service reads).

A **snapshot** of version ``v`` is :class:`SnapshotMeta` (JSON at ``StateKeys.model_meta``)
plus one key per array (``StateKeys.model_array``, :func:`schemas.state.encode_array`
format). It becomes visible when ``StateKeys.model_current`` is switched to ``v``; the
previous version's keys expire after a grace period.

A **delta** (``StateKeys.model_delta(v, seq)``, seq = 1, 2, ...) is one bundle
(:func:`encode_bundle`): a :class:`DeltaHeader` and arrays. ``StateKeys.model_delta_seq(v)``
holds the newest seq. Deltas apply in seq order on top of snapshot ``v``; a reader that
finds a gap reloads the snapshot. Every publish is announced on
``StateKeys.model_updates_channel`` as JSON ``{"version": v, "seq": s}`` (seq 0: new
snapshot).

Array names (``{side}`` is ``user`` or ``item``; S = snapshot, D = delta):

- ``{side}.table`` (S, D): f32 (rows, dim + 1), last column the bias; rows are the live
  clusters, or one per entity on an unclustered side. Deltas carry the whole table: small.
- ``{side}.assign`` (S): int16 or int32 (entities,), the row of each internal id.
- ``{side}.ids.blob`` / ``{side}.ids.offsets`` (S): uint8 / int32|int64, the external ids
  in internal-id order (see ``cel.idmap``).
- ``{side}.new_ids.blob`` / ``.offsets`` (D): ids first seen since the last publish; their
  internal ids continue from ``DeltaHeader.first_new[side]``.
- ``{side}.changed.index`` / ``{side}.changed.row`` (D): int64 / int32, the new row of
  every new, reassigned or split-moved id.
- ``{side}.bias`` (S): f32 (entities,), each id's own bias, added to the score next to
  its row's (mf/deepfm with ``CELREC_ENTITY_BIAS``; absent: none);
  ``{side}.bias.index`` / ``{side}.bias.value`` (D): int64 / f32, the changed own biases;
  ``{side}.bias_prior`` (S, D): f32 (1,), the own bias of an id not seen yet.
- ``item.popularity`` (S): int32 (items,), positive events per item;
  ``item.popularity.index`` / ``.value`` (D): the changed counts.
- ``item.coliked.index`` / ``.counts`` / ``.positives`` (S, D): int64 (R,) / f32 (R, rows) /
  f32 (rows,): how often items of item row ``index[k]`` were liked close to items of each
  row (``cel.covisit``; in a snapshot every row, in a delta the changed ones), and the
  positives counted per row. Absent when the learner keeps none.
- ``scenario.item_cluster_popularity`` (S, D): f32 (scenarios, item rows), positive
  events per scenario and item row: the cold-start prior.
- ``model.{name}`` (S, D): f32, the interaction model's weights (mf: ``global_bias``;
  deepfm: ``cel.models.DeepFM``'s ``global_bias`` and ``deep.*`` MLP).

saml and dupn (``SnapshotMeta.model``) use the same arrays with these meanings:

- ``{side}.table``: the network's global CEL table, live clusters only, with a zero last
  column (the layout above); retrieval and the dashboard read it, scoring does not;
- ``{side}.assign`` / ``{side}.changed.*``: the CEL assignment of the user and item tables;
- ``model.{name}``: the network's ``state_dict`` entries without the per-entity
  ``*.assignment`` / ``*.counts`` buffers (f32; SAML's ``slot_of``, scenario index -> branch,
  is int64 and grows as scenarios get branches); every delta carries all of them;
- ``SnapshotMeta.network``: the config to rebuild the network (``cel.deep_serving``); the
  scenario index is the position in ``scenarios``;
- each user's behaviour sequence is not an array: it is a state-store key of its own
  (``schemas.sequence``), read by the service per request.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.state import ArrayFormatError, decode_array, encode_array

SIDES = ("user", "item")
BUNDLE_MAGIC = b"CELB"
BUNDLE_FORMAT = 1
_BUNDLE_HEAD = struct.Struct("<4sII")  # magic, format, header length
_ENTRY_HEAD = struct.Struct("<HQ")  # name length, array blob length


class SideMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: int = Field(ge=0, description="known ids on this side")
    rows: int = Field(ge=0, description="live rows of the table (clusters if clustered)")
    clustered: bool


class SplitEvent(BaseModel):
    side: str
    parent: int
    child: int
    moved: int


_RETRIEVAL_WEIGHT = ("weight of the model's score against log(1 + positives) when ranking "
                     "recommendations, as the trainer last chose it (cel.retrieval); None: "
                     "the default weight")
_COLIKED_WEIGHT = ("weight of log(1 + co-liked score) in recommendations, as the trainer last "
                   "chose it (cel.covisit); None: the serving default")


class SnapshotMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = 1
    version: int = Field(ge=1)
    created_at: float
    model: str = Field(description="interaction model kind, e.g. mf")
    loss: str = Field(description="logloss (scores are probabilities) or mse")
    dim: int
    events_applied: int = 0
    offsets: dict[str, int] = Field(default_factory=dict)
    sides: dict[str, SideMeta]
    scenarios: list[str] = Field(default_factory=list)
    arrays: list[str] = Field(description="names of the arrays stored with this version")
    network: dict[str, Any] = Field(
        default_factory=dict,
        description="saml/dupn: what rebuilds the network (cel.deep_serving.network_spec: "
        "kind, config, max_scenarios, behaviours); empty for mf",
    )
    retrieval_weight: float | None = Field(None, ge=0, description=_RETRIEVAL_WEIGHT)
    coliked_weight: float | None = Field(None, ge=0, description=_COLIKED_WEIGHT)


class DeltaHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    seq: int = Field(ge=1)
    created_at: float
    events_applied: int = 0
    offsets: dict[str, int] = Field(default_factory=dict)
    sides: dict[str, SideMeta]
    first_new: dict[str, int] = Field(description="internal id of each side's first new id")
    scenarios: list[str] = Field(default_factory=list)
    split_events: list[SplitEvent] = Field(default_factory=list)
    accepted_at: list[float] = Field(
        default_factory=list,
        description="acceptance times (unix s) of a sample of the events this delta covers",
    )
    retrieval_weight: float | None = Field(None, ge=0, description=_RETRIEVAL_WEIGHT)
    coliked_weight: float | None = Field(None, ge=0, description=_COLIKED_WEIGHT)


class UpdateNotice(BaseModel):
    version: int
    seq: int = 0


def encode_bundle(header: BaseModel, arrays: Mapping[str, np.ndarray]) -> bytes:
    head = header.model_dump_json().encode("utf-8")
    parts = [_BUNDLE_HEAD.pack(BUNDLE_MAGIC, BUNDLE_FORMAT, len(head)), head]
    for name, array in arrays.items():
        raw_name, blob = name.encode("utf-8"), encode_array(np.asarray(array))
        parts += [_ENTRY_HEAD.pack(len(raw_name), len(blob)), raw_name, blob]
    return b"".join(parts)


def decode_bundle(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """(header as a dict, arrays); raises ArrayFormatError on anything malformed."""
    if len(blob) < _BUNDLE_HEAD.size:
        raise ArrayFormatError("bundle shorter than its header")
    magic, version, head_len = _BUNDLE_HEAD.unpack_from(blob)
    if magic != BUNDLE_MAGIC or version != BUNDLE_FORMAT:
        raise ArrayFormatError("not a celrec bundle (bad magic or format)")
    pos = _BUNDLE_HEAD.size
    try:
        header = json.loads(blob[pos: pos + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArrayFormatError(f"bad bundle header: {exc}") from None
    pos += head_len
    arrays: dict[str, np.ndarray] = {}
    while pos < len(blob):
        if pos + _ENTRY_HEAD.size > len(blob):
            raise ArrayFormatError("truncated bundle entry")
        name_len, size = _ENTRY_HEAD.unpack_from(blob, pos)
        pos += _ENTRY_HEAD.size
        name = blob[pos: pos + name_len].decode("utf-8", errors="strict")
        pos += name_len
        if pos + size > len(blob):
            raise ArrayFormatError(f"truncated array {name!r}")
        arrays[name] = decode_array(blob[pos: pos + size])
        pos += size
    return header, arrays


def assignment_dtype(rows: int) -> np.dtype:
    """int16 while row ids fit (the common case: cluster budgets < 32768), else int32."""
    return np.dtype("<i2") if rows < 32768 else np.dtype("<i4")
