"""A synthetic event stream with planted cluster structure, so learning is visible."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from schemas.events import Event, EventType


@dataclass(frozen=True)
class DemoWorkload:
    users: int = 2000
    items: int = 1000
    groups: int = 8
    p_match: float = 0.6  # click probability when user and item groups match
    p_other: float = 0.05
    seed: int = 0

    def group_of(self, index: int) -> int:
        return index % self.groups

    def events(self) -> Iterator[Event]:
        rng = random.Random(self.seed)
        while True:
            user = rng.randrange(self.users)
            if rng.random() < 0.5:  # half the impressions come from the user's own group
                item = rng.randrange(self.items // self.groups) * self.groups
                item += self.group_of(user)
            else:
                item = rng.randrange(self.items)
            match = self.group_of(user) == self.group_of(item)
            clicked = rng.random() < (self.p_match if match else self.p_other)
            yield Event(user_id=f"user-{user}", item_id=f"item-{item}",
                        event_type=EventType.click, value=1.0 if clicked else 0.0,
                        scenario="demo")


def stream_demo(send, stop: threading.Event, rate_per_s: float = 200.0,
                batch: int = 20, workload: DemoWorkload | None = None) -> None:
    """Call ``send(list[Event])`` with batches at about ``rate_per_s`` until ``stop``."""
    events = (workload or DemoWorkload()).events()
    interval = batch / rate_per_s
    while not stop.is_set():
        started = time.monotonic()
        try:
            send([next(events) for _ in range(batch)])
        except Exception:  # the demo must never take the service down; retry next tick
            pass
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
