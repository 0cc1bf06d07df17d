"""Bounded per-entity evidence: the recent interactions reassignment and votes judge on."""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np


class EntityEvidence:
    """The last ``per_entity`` interactions of at most ``capacity`` entities of one side.

    Each interaction is ``(counterpart id, label, scenario index, time)``. The entity touched
    least recently is evicted past ``capacity``, so memory is O(capacity x per_entity) and a
    lookup O(per_entity), whatever the number of entities. Reassignment judges an entity on
    all its recent interactions instead of the one or two of the current window.
    """

    def __init__(self, capacity: int, per_entity: int) -> None:
        self.capacity, self.per_entity = capacity, per_entity
        self._rows: OrderedDict[int, deque[tuple[int, float, int, float]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, entity: int, other: int, label: float, scenario: int, time: float) -> None:
        rows = self._rows.get(entity)
        if rows is None:
            rows = self._rows[entity] = deque(maxlen=self.per_entity)
            if len(self._rows) > self.capacity:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(entity)
        rows.append((other, label, scenario, time))

    def of(self, entity: int) -> list[tuple[int, float, int, float]]:
        return list(self._rows.get(entity, ()))

    def export(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays of the whole buffer, least recently touched entity first."""
        entities = np.array(list(self._rows), np.int64)
        sizes = np.array([len(r) for r in self._rows.values()], np.int64)
        flat = [row for rows in self._rows.values() for row in rows]
        return {f"{prefix}.entities": entities, f"{prefix}.sizes": sizes,
                f"{prefix}.other": np.array([r[0] for r in flat], np.int64),
                f"{prefix}.label": np.array([r[1] for r in flat], np.float64),
                f"{prefix}.scenario": np.array([r[2] for r in flat], np.int64),
                f"{prefix}.time": np.array([r[3] for r in flat], np.float64)}

    def load(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        self._rows.clear()
        if f"{prefix}.entities" not in arrays:
            return
        other, label = arrays[f"{prefix}.other"], arrays[f"{prefix}.label"]
        scen, time = arrays[f"{prefix}.scenario"], arrays[f"{prefix}.time"]
        k = 0
        for entity, size in zip(arrays[f"{prefix}.entities"].tolist(),
                                arrays[f"{prefix}.sizes"].tolist(), strict=True):
            self._rows[int(entity)] = deque(
                ((int(other[j]), float(label[j]), int(scen[j]), float(time[j]))
                 for j in range(k, k + size)), maxlen=self.per_entity)
            k += size
