"""Test helper: build and publish model snapshots and deltas in the ``schemas.snapshot``
layout (what the trainer's publisher writes), so serving tests need no trainer."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np

from cel.idmap import IdMap
from celrec.backends import StateStore
from schemas.snapshot import DeltaHeader, SideMeta, SnapshotMeta, encode_bundle
from schemas.state import StateKeys, encode_array

Pair = tuple[Sequence[int], Sequence[int]]


def id_arrays(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    idmap = IdMap()
    idmap.lookup_or_add(list(ids))
    return idmap.export_arrays()


class ModelWriter:
    """Builds snapshot ``version`` and its deltas; ``publish=True`` also writes them."""

    def __init__(self, store: StateStore | None = None, keys: StateKeys | None = None):
        self.store, self.keys = store, keys
        self.version = 0
        self.seq = 0
        self.dim = 0
        self.entities = {"user": 0, "item": 0}
        self.rows = {"user": 0, "item": 0}
        self.scenarios: list[str] = []
        self.loss = "logloss"

    def snapshot(self, version: int, users: Sequence[str], items: Sequence[str],
                 user_table: np.ndarray, item_table: np.ndarray,
                 user_assign: Sequence[int], item_assign: Sequence[int], *,
                 popularity: Sequence[int] | None = None, prior: np.ndarray | None = None,
                 scenarios: Sequence[str] = (), global_bias: float = 0.0,
                 loss: str = "logloss", created_at: float | None = None,
                 publish: bool = True) -> tuple[SnapshotMeta, dict[str, np.ndarray]]:
        user_table = np.asarray(user_table, np.float32)
        item_table = np.asarray(item_table, np.float32)
        self.version, self.seq, self.dim, self.loss = version, 0, user_table.shape[1] - 1, loss
        self.entities = {"user": len(users), "item": len(items)}
        self.rows = {"user": len(user_table), "item": len(item_table)}
        self.scenarios = list(scenarios)
        arrays: dict[str, np.ndarray] = {}
        for side, ids, table, assign in (("user", users, user_table, user_assign),
                                         ("item", items, item_table, item_assign)):
            arrays[f"{side}.ids.blob"], arrays[f"{side}.ids.offsets"] = id_arrays(ids)
            arrays[f"{side}.table"] = table
            arrays[f"{side}.assign"] = np.asarray(assign, np.int16)
        arrays["item.popularity"] = np.asarray(
            popularity if popularity is not None else np.zeros(len(items)), np.int32)
        if prior is None:
            prior = np.zeros((len(scenarios), len(item_table)), np.float32)
        arrays["scenario.item_cluster_popularity"] = np.asarray(prior, np.float32)
        arrays["model.global_bias"] = np.asarray([global_bias], np.float32)
        meta = SnapshotMeta(
            version=version, created_at=time.time() if created_at is None else created_at,
            model="mf", loss=loss, dim=self.dim, sides=self._sides(),
            scenarios=list(scenarios), arrays=sorted(arrays),
        )
        if publish:
            self.publish_snapshot(meta, arrays)
        return meta, arrays

    def delta(self, *, new_users: Sequence[str] = (), new_items: Sequence[str] = (),
              user_table: np.ndarray | None = None, item_table: np.ndarray | None = None,
              user_changed: Pair | None = None, item_changed: Pair | None = None,
              popularity: Pair | None = None, prior: np.ndarray | None = None,
              global_bias: float | None = None, accepted_at: Sequence[float] = (),
              retrieval_weight: float | None = None, publish: bool = True
              ) -> tuple[DeltaHeader, dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        first_new = dict(self.entities)
        for side, new, table, changed in (("user", new_users, user_table, user_changed),
                                          ("item", new_items, item_table, item_changed)):
            if new:
                arrays[f"{side}.new_ids.blob"], arrays[f"{side}.new_ids.offsets"] = \
                    id_arrays(new)
                self.entities[side] += len(new)
            if table is not None:
                arrays[f"{side}.table"] = np.asarray(table, np.float32)
                self.rows[side] = len(table)
            if changed is not None:
                arrays[f"{side}.changed.index"] = np.asarray(changed[0], np.int64)
                arrays[f"{side}.changed.row"] = np.asarray(changed[1], np.int32)
        if popularity is not None:
            arrays["item.popularity.index"] = np.asarray(popularity[0], np.int64)
            arrays["item.popularity.value"] = np.asarray(popularity[1], np.int32)
        if prior is not None:
            arrays["scenario.item_cluster_popularity"] = np.asarray(prior, np.float32)
        if global_bias is not None:
            arrays["model.global_bias"] = np.asarray([global_bias], np.float32)
        self.seq += 1
        header = DeltaHeader(
            version=self.version, seq=self.seq, created_at=time.time(),
            sides=self._sides(), first_new=first_new, scenarios=self.scenarios,
            accepted_at=list(accepted_at), retrieval_weight=retrieval_weight,
        )
        if publish:
            self.publish_delta(header, arrays)
        return header, arrays

    def _sides(self) -> dict[str, SideMeta]:
        return {side: SideMeta(entities=self.entities[side], rows=self.rows[side],
                               clustered=True) for side in ("user", "item")}

    def publish_snapshot(self, meta: SnapshotMeta, arrays: dict[str, np.ndarray]) -> None:
        assert self.store is not None and self.keys is not None
        keys, v = self.keys, meta.version
        values = {keys.model_array(v, name): encode_array(a) for name, a in arrays.items()}
        values[keys.model_meta(v)] = meta.model_dump_json().encode()
        self.store.put(values)
        self.store.put({keys.model_current: str(v).encode()})  # the switch comes last
        self._notify(v, 0)

    def publish_delta(self, header: DeltaHeader, arrays: dict[str, np.ndarray]) -> None:
        assert self.store is not None and self.keys is not None
        keys, v, s = self.keys, header.version, header.seq
        self.store.put({keys.model_delta(v, s): encode_bundle(header, arrays),
                        keys.model_delta_seq(v): str(s).encode()})
        self._notify(v, s)

    def _notify(self, version: int, seq: int) -> None:
        assert self.store is not None and self.keys is not None
        message = json.dumps({"version": version, "seq": seq}).encode()
        self.store.publish(self.keys.model_updates_channel, message)
