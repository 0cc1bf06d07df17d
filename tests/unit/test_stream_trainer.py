import json
import time
from datetime import UTC, datetime, timedelta

from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from schemas.events import Event
from schemas.messages import DeadLetter, decode_event, encode_event
from trainer.cel_learner import CELLearner
from trainer.stream import StreamTrainer, progress_of

SETTINGS = Settings(batch_max_events=50, batch_max_wait_ms=20, checkpoint_interval_s=0,
                    entity_state_capacity=1000)


def produce(log, events):
    now = time.time()
    log.producer().send("events", [encode_event(e.completed(), now) for e in events], 1.0)


def event(k: int, item: str = "i", value: float = 1.0) -> Event:
    return Event(event_id=f"e{k}", user_id=f"u{k % 7}", item_id=item, value=value)


def drain(trainer: StreamTrainer, rounds: int = 50) -> None:
    for _ in range(rounds):
        if trainer.run_once().records == 0:
            return


def test_applies_each_event_once_and_stores_progress_with_offsets():
    log, store = EmbeddedEventLog(partitions=3), EmbeddedStateStore()
    produce(log, [event(k, item=f"i{k % 4}") for k in range(120)])
    trainer = StreamTrainer(SETTINGS, log, store, CELLearner(SETTINGS))
    drain(trainer)
    progress = progress_of(store, "celrec")
    assert progress.events_applied == 120 and progress.dead_lettered == 0
    assert sum(progress.offsets.values()) == 120
    assert trainer.learner.positives() == 120
    assert trainer.consumer.committed() == {("events", p): o for p, o in enumerate(
        [progress.offsets[f"events:{p}"] for p in range(3)])}
    assert all(v == 0 for v in trainer.lag().values())


class RecordingLearner(CELLearner):
    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.order: list[str] = []

    def learn(self, events):
        self.order += [e.event_id for e in events]
        return super().learn(events)


def test_a_batch_is_learnt_in_event_time_order_across_partitions():
    log, store = EmbeddedEventLog(partitions=4), EmbeddedStateStore()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events = [Event(event_id=f"e{k}", user_id=f"u{k % 9}", item_id=f"i{k % 5}",
                    timestamp=start + timedelta(seconds=k)) for k in range(40)]
    produce(log, events)
    polled = [decode_event(r.value).event.event_id
              for r in log.consumer(["events"], "peek").poll(100, 0.01)]
    assert polled != [e.event_id for e in events]  # a poll groups them by partition
    learner = RecordingLearner(SETTINGS)
    drain(StreamTrainer(SETTINGS, log, store, learner))
    assert learner.order == [e.event_id for e in events]


def test_duplicate_event_ids_apply_once_within_and_across_batches():
    log, store = EmbeddedEventLog(partitions=2), EmbeddedStateStore()
    produce(log, [event(k) for k in range(30)] + [event(k) for k in range(10)])
    trainer = StreamTrainer(SETTINGS, log, store, CELLearner(SETTINGS))
    drain(trainer)
    produce(log, [event(k) for k in range(25, 35)])  # 5 old, 5 new
    drain(trainer)
    progress = progress_of(store, "celrec")
    assert progress.events_applied == 35
    assert progress.duplicates_skipped == 15


def test_bad_messages_are_dead_lettered_with_reason_and_nothing_else_is_lost():
    log, store = EmbeddedEventLog(partitions=1), EmbeddedStateStore()
    produce(log, [event(k) for k in range(5)])
    garbage = [b"\x00\x01garbage", b'{"schema": 1, "event": {"user_id": "u"}}',
               b'{"totally": "different"}', b"[", b"x" * 70_000]
    log.producer().send("events", [(b"k", g) for g in garbage], 1.0)
    produce(log, [event(k) for k in range(5, 10)])
    trainer = StreamTrainer(SETTINGS, log, store, CELLearner(SETTINGS))
    drain(trainer)
    progress = progress_of(store, "celrec")
    assert progress.events_applied == 10 and progress.dead_lettered == len(garbage)
    letters = [DeadLetter.decode(r.value)
               for r in log.consumer(["events.dlq"], "inspect").poll(100, 0.01)]
    assert [letter.offset for letter in letters] == [5, 6, 7, 8, 9]
    assert all(letter.reason for letter in letters)
    assert letters[0].payload == garbage[0]
    assert "exceeds" in letters[4].reason


def test_restart_resumes_from_checkpoint_without_double_applying():
    log, store = EmbeddedEventLog(partitions=2), EmbeddedStateStore()
    produce(log, [event(k, item=f"i{k % 3}") for k in range(100)])
    settings = Settings(batch_max_events=10, batch_max_wait_ms=10, checkpoint_interval_s=3600,
                        entity_state_capacity=1000)
    first = StreamTrainer(settings, log, store, CELLearner(SETTINGS))
    first.run_once()
    first.checkpoint()  # 10 events stored...
    for _ in range(3):
        first.run_once()  # ...30 more applied in memory only, then the process "dies"
    assert first.progress.events_applied == 40
    assert progress_of(store, "celrec").events_applied == 10

    second = StreamTrainer(settings, log, store, CELLearner(SETTINGS))
    assert second.learner.positives() == 10  # model restored with the offsets
    while second.run_once().records:
        pass
    second.checkpoint()
    assert progress_of(store, "celrec").events_applied == 100
    assert second.learner.positives() == 100
    # duplicates of already-applied events are still recognised after the restart
    produce(log, [event(k) for k in range(5)])
    second.run_once()
    second.checkpoint()
    assert progress_of(store, "celrec").events_applied == 100
    assert json.loads(store.get("celrec:trainer:progress"))["duplicates_skipped"] == 5
