"""The id-side arrays every learner publishes (layout in ``schemas.snapshot``).

Learners differ in their model arrays, not in how ids, assignments and item popularity
travel: one home for that part keeps the MF and the SAML/DUPN learners' deltas identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cel.idmap import IdMap
from schemas.snapshot import SIDES, assignment_dtype

RowsOf = Callable[[str, np.ndarray], np.ndarray]  # (side, internal ids) -> current rows


def delta_id_arrays(ids: Mapping[str, IdMap], first_new: Mapping[str, int],
                    changed: Mapping[str, Sequence[np.ndarray]], rows_of: RowsOf,
                    popular: Sequence[np.ndarray], popularity: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """New ids since ``first_new``, the rows of every new or changed id, changed counts."""
    arrays: dict[str, np.ndarray] = {}
    for side in SIDES:
        new = np.arange(first_new[side], len(ids[side]), dtype=np.int64)
        fresh = IdMap()
        fresh.lookup_or_add(ids[side].external(new))
        arrays[f"{side}.new_ids.blob"], arrays[f"{side}.new_ids.offsets"] = \
            fresh.export_arrays()
        moved = np.unique(np.concatenate([new, *changed[side]]).astype(np.int64))
        arrays[f"{side}.changed.index"] = moved
        arrays[f"{side}.changed.row"] = rows_of(side, moved).astype(np.int32)
    index = (np.unique(np.concatenate(popular)) if popular
             else np.zeros(0, np.int64)).astype(np.int64)
    arrays["item.popularity.index"] = index
    arrays["item.popularity.value"] = popularity[index].astype(np.int32)
    return arrays


def snapshot_id_arrays(ids: Mapping[str, IdMap], rows_of: RowsOf,
                       table_rows: Mapping[str, int], popularity: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """Every id, its current row (the narrowest dtype for the table) and item popularity."""
    arrays: dict[str, np.ndarray] = {}
    for side in SIDES:
        rows = rows_of(side, np.arange(len(ids[side]), dtype=np.int64))
        arrays[f"{side}.assign"] = rows.astype(assignment_dtype(table_rows[side]))
        arrays[f"{side}.ids.blob"], arrays[f"{side}.ids.offsets"] = ids[side].export_arrays()
    items = len(ids["item"])
    counts = np.zeros(items, np.int32)  # ids not yet counted (no positive event) have 0
    counts[: min(items, len(popularity))] = popularity[:items]
    arrays["item.popularity"] = counts
    return arrays
