"""A running celrec stack for tests: service app + trainer thread over given backends."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient

from celrec.backends import EventLog, StateStore
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.messages import DeadLetter
from service.app import build_state, create_app
from trainer.main import build_trainer
from trainer.stream import StreamTrainer, progress_of


@dataclass
class Stack:
    settings: Settings
    event_log: EventLog
    store: StateStore
    client: TestClient
    trainer: StreamTrainer

    def progress(self) -> TrainerProgress | None:
        return progress_of(self.store, self.settings.state_prefix)

    def wait_for(self, condition: Callable[[TrainerProgress], bool],
                 timeout_s: float = 30.0) -> TrainerProgress:
        """Poll the stored progress until ``condition`` holds (bounded in time)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.progress()
            if last is not None and condition(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout_s}s; last progress: {last}")


@contextmanager
def running_stack(settings: Settings, event_log: EventLog, store: StateStore) -> Iterator[Stack]:
    trainer = build_trainer(settings, event_log, store)
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with TestClient(create_app(build_state(settings, event_log, store))) as client:
            yield Stack(settings, event_log, store, client, trainer)
    finally:
        stop.set()
        thread.join(timeout=30)
        trainer.close()


def read_dead_letters(event_log: EventLog, topic: str, expected: int,
                      timeout_s: float = 30) -> list[DeadLetter]:
    """Dead-letter records of ``topic`` from the start, until ``expected`` or the timeout."""
    consumer = event_log.consumer([topic], f"inspect-{uuid.uuid4().hex[:6]}")
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    while len(letters) < expected and time.monotonic() < deadline:
        letters += [DeadLetter.decode(r.value) for r in consumer.poll(500, 0.5)]
    consumer.close()
    return letters
