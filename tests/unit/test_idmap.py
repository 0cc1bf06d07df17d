"""IdMap: dense ids on first sight, compact array export without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from cel.idmap import IdMap


def test_first_sight_assigns_dense_ids_in_order():
    m = IdMap()
    ids, new = m.lookup_or_add(["b", "a", "b", "c"])
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 0, 2]
    assert new.tolist() == [True, True, True, True]  # "b" was unknown before this call
    ids, new = m.lookup_or_add(["c", "d"])
    assert ids.tolist() == [2, 3] and new.tolist() == [False, True]
    assert len(m) == 4 and "d" in m and "z" not in m


def test_lookup_unknown_is_minus_one_and_adds_nothing():
    m = IdMap()
    m.lookup_or_add(["x"])
    out = m.lookup(["x", "nope", ""])
    assert out.dtype == np.int64 and out.tolist() == [0, -1, -1]
    assert len(m) == 1
    assert m.lookup([]).shape == (0,)
    assert m.external([0]) == ["x"]


def test_export_round_trip_with_unicode_and_empty_id():
    m = IdMap()
    names = ["user-1", "", "ünïcødé", "日本", "user-1", "x" * 300]
    m.lookup_or_add(names)
    blob, offsets = m.export_arrays()
    assert blob.dtype == np.uint8 and offsets.dtype == np.int32
    assert len(offsets) == len(m) == 5
    back = IdMap.from_arrays(blob, offsets)
    assert back.lookup(names).tolist() == m.lookup(names).tolist()
    assert back.external(range(len(back))) == m.external(range(len(m)))


def test_export_is_compact():
    m = IdMap()
    m.lookup_or_add([f"u{k:08d}" for k in range(10_000)])  # 9-byte ids
    blob, offsets = m.export_arrays()
    assert (blob.nbytes + offsets.nbytes) / len(m) <= 16


def test_empty_map_round_trip():
    blob, offsets = IdMap().export_arrays()
    assert len(IdMap.from_arrays(blob, offsets)) == 0


@pytest.mark.parametrize("blob, offsets", [
    (np.frombuffer(b"abc", np.uint8), np.array([1, 2], np.int32)),  # does not end at len
    (np.frombuffer(b"abc", np.uint8), np.array([2, 1, 3], np.int32)),  # decreasing
    (np.frombuffer(b"aa", np.uint8), np.array([1, 2], np.int32)),  # duplicate id
    (np.frombuffer(b"ab", np.uint8).astype(np.int16), np.array([1, 2], np.int32)),
    (np.frombuffer(b"\xff", np.uint8), np.array([1], np.int32)),  # not UTF-8
])
def test_malformed_arrays_are_rejected(blob, offsets):
    with pytest.raises(ValueError):
        IdMap.from_arrays(blob, offsets)


def test_non_string_ids_are_rejected():
    with pytest.raises(TypeError):
        IdMap().lookup_or_add([1])
