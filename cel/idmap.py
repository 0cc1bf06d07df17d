"""External string id -> dense internal int, assigned on first sight.

Internal ids are dense (0..n-1, in order of first sight) so every per-entity array of the
model (assignments, state slots) is indexed directly. Export is two flat arrays (a UTF-8
blob and end offsets), never pickle: with ~10-byte ids a user costs ~10 + 4 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_INT32_MAX = np.iinfo(np.int32).max


class IdMap:
    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    def lookup(self, ids: Iterable[str]) -> np.ndarray:
        """Internal ids (int64), -1 for ids never seen."""
        get = self._index.get
        return np.fromiter((get(s, -1) for s in ids), dtype=np.int64)

    def lookup_or_add(self, ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids, adding unknown ones; ``new_mask`` is True where the id was unknown
        before this call (every occurrence of an id repeated within ``ids``)."""
        index = self._index
        order = self._ids
        start = len(order)
        out = []
        for s in ids:
            k = index.get(s)
            if k is None:
                if not isinstance(s, str):
                    raise TypeError(f"external ids must be str, got {type(s).__name__}")
                k = len(order)
                index[s] = k
                order.append(s)
            out.append(k)
        internal = np.asarray(out, dtype=np.int64)
        return internal, internal >= start

    def external(self, internal: Iterable[int]) -> list[str]:
        """External ids of internal ids (IndexError for unknown ones)."""
        order = self._ids
        return [order[int(k)] for k in internal]

    def export_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(blob, offsets)``: ``blob`` is uint8 UTF-8 of all ids concatenated in internal-id
        order; ``offsets[k]`` is the end of id ``k`` (start is ``offsets[k-1]`` or 0).
        Offsets are int32 while the blob fits, else int64."""
        encoded = [s.encode("utf-8") for s in self._ids]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths, dtype=np.int64)
        if len(ends) == 0 or ends[-1] <= _INT32_MAX:
            ends = ends.astype(np.int32)
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return blob, ends

    @classmethod
    def from_arrays(cls, blob: np.ndarray, offsets: np.ndarray) -> IdMap:
        """Inverse of :meth:`export_arrays`; rejects malformed or duplicated input."""
        blob = np.asarray(blob)
        offsets = np.asarray(offsets)
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise ValueError("blob must be a 1-d uint8 array")
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
            raise ValueError("offsets must be a 1-d integer array")
        ends = offsets.astype(np.int64)
        if len(ends) and (np.any(np.diff(ends) < 0) or ends[0] < 0 or ends[-1] != len(blob)):
            raise ValueError("offsets must be non-decreasing and end at len(blob)")
        if not len(ends) and len(blob):
            raise ValueError("blob without offsets")
        raw = blob.tobytes()
        starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
        out = cls()
        out._ids = [raw[a:b].decode("utf-8") for a, b in zip(starts.tolist(), ends.tolist(),
                                                              strict=True)]
        out._index = {s: k for k, s in enumerate(out._ids)}
        if len(out._index) != len(out._ids):
            raise ValueError("duplicate ids in the exported arrays")
        return out
