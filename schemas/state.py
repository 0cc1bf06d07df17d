"""State-store (Redis) layout and binary array encoding.

Keys (``{p}`` is the configured prefix, default ``celrec``):

| key | value |
|---|---|
| ``{p}:trainer:progress`` | JSON :class:`schemas.api.TrainerProgress` of the last checkpoint |
| ``{p}:trainer:stats`` | JSON summary the trainer shares with the dashboard (expires) |
| ``{p}:trainer:state:{name}`` | one blob of the trainer's checkpoint (model state, dedup window) |
| ``{p}:model:current`` | the current model version (ASCII integer), the pointer readers follow |
| ``{p}:model:v{version}:meta`` | JSON metadata of that version |
| ``{p}:model:v{version}:array:{name}`` | one array in :func:`encode_array` format |
| ``{p}:model:v{version}:delta:{seq}`` | one delta bundle (see ``schemas.snapshot``) |
| ``{p}:model:v{version}:delta_seq`` | newest delta seq of that version (ASCII integer) |
| ``{p}:user:{user_id}:seen`` | list of recent item ids of that user, newest first (bounded) |
| ``{p}:user:{user_id}:liked`` | the user's latest positive item ids, newest first (bounded) |
| ``{p}:user:{user_id}:sequence`` | saml, dupn: behaviour sequence (``schemas.sequence``) |

Channel ``{p}:model:updates`` carries a JSON notice whenever a new version or delta lands.

Arrays are never pickled: a 16-byte header (magic ``CELA``, format version, dtype code,
ndim, reserved) followed by ``ndim`` little-endian uint64 dimensions and the raw
little-endian C-order buffer.
"""

from __future__ import annotations

import struct

import numpy as np

ARRAY_MAGIC = b"CELA"
ARRAY_FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBBx8x")  # magic, version, dtype code, ndim, padding to 16 bytes
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("<i8"),
    5: np.dtype("<i2"),
    6: np.dtype("<u1"),
    7: np.dtype("<f2"),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
MAX_NDIM = 8


class ArrayFormatError(ValueError):
    pass


def encode_array(array: np.ndarray) -> bytes:
    dtype = array.dtype.newbyteorder("<")
    code = _CODES.get(dtype)
    if code is None:
        raise ArrayFormatError(f"unsupported dtype {array.dtype}")
    if array.ndim > MAX_NDIM:
        raise ArrayFormatError(f"at most {MAX_NDIM} dimensions")
    data = np.ascontiguousarray(array, dtype=dtype)
    header = _HEADER.pack(ARRAY_MAGIC, ARRAY_FORMAT_VERSION, code, array.ndim)
    shape = struct.pack(f"<{array.ndim}Q", *array.shape)
    return header + shape + data.tobytes()


def decode_array(blob: bytes) -> np.ndarray:
    if len(blob) < _HEADER.size:
        raise ArrayFormatError("blob shorter than the array header")
    magic, version, code, ndim = _HEADER.unpack_from(blob)
    if magic != ARRAY_MAGIC or version != ARRAY_FORMAT_VERSION:
        raise ArrayFormatError("not a celrec array (bad magic or version)")
    if code not in _DTYPES or ndim > MAX_NDIM:
        raise ArrayFormatError("unknown dtype code or too many dimensions")
    start = _HEADER.size + 8 * ndim
    if len(blob) < start:
        raise ArrayFormatError("truncated shape")
    shape = struct.unpack_from(f"<{ndim}Q", blob, _HEADER.size)
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(blob) - start != expected:
        raise ArrayFormatError(f"payload is {len(blob) - start} bytes, shape needs {expected}")
    return np.frombuffer(blob, dtype=dtype, offset=start).reshape(shape).copy()


class StateKeys:
    """Key names under one prefix; the only place key strings are built."""

    def __init__(self, prefix: str = "celrec"):
        self.prefix = prefix

    @property
    def trainer_progress(self) -> str:
        return f"{self.prefix}:trainer:progress"

    @property
    def trainer_stats(self) -> str:
        return f"{self.prefix}:trainer:stats"

    def trainer_state(self, name: str) -> str:
        return f"{self.prefix}:trainer:state:{name}"

    @property
    def model_current(self) -> str:
        return f"{self.prefix}:model:current"

    @property
    def model_updates_channel(self) -> str:
        return f"{self.prefix}:model:updates"

    def model_meta(self, version: int) -> str:
        return f"{self.prefix}:model:v{version}:meta"

    def model_array(self, version: int, name: str) -> str:
        return f"{self.prefix}:model:v{version}:array:{name}"

    def model_delta(self, version: int, seq: int) -> str:
        return f"{self.prefix}:model:v{version}:delta:{seq}"

    def model_delta_seq(self, version: int) -> str:
        return f"{self.prefix}:model:v{version}:delta_seq"

    def user_seen(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:seen"

    def user_liked(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:liked"

    def user_sequence(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:sequence"
