"""A bounded window of recently applied event ids, so redelivered events apply once."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class DedupWindow:
    """Remembers the last ``capacity`` event ids (insertion order; oldest forgotten first)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        if self.capacity <= 0:
            return
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def export(self) -> list[str]:
        return list(self._ids)

    def restore(self, event_ids: Iterable[str]) -> None:
        self._ids.clear()
        for event_id in event_ids:
            self.add(event_id)
