"""``celrec run``: API and trainer in one process (embedded backends unless configured)."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from celrec.backends import make_event_log, make_state_store
from celrec.demo import stream_demo
from celrec.logs import configure_logging
from celrec.settings import Settings
from schemas.events import Event
from schemas.messages import encode_event
from service.app import build_state, create_app
from trainer.main import (
    build_trainer,
    configure_torch,
    start_metrics_server,
    start_trainer_thread,
)

log = logging.getLogger(__name__)


def run_all_in_one(settings: Settings, demo: bool = False) -> int:
    configure_logging(settings.log_level)
    configure_torch(settings)
    event_log, store = make_event_log(settings), make_state_store(settings)
    trainer = build_trainer(settings, event_log, store)
    stop = threading.Event()
    threads = [start_trainer_thread(trainer, stop)]
    try:
        metrics_server = start_metrics_server(trainer)
    except OSError as exc:  # a busy port must not stop the all-in-one run
        log.warning("trainer metrics port unavailable: %s", exc)
        metrics_server = None
    if demo:
        producer = event_log.producer()

        def send(events: list[Event]) -> None:
            now = time.time()
            messages = [encode_event(e, now) for e in Event.completed_in_order(events)]
            producer.send(settings.kafka_events_topic, messages, settings.produce_timeout_s)

        demo_thread = threading.Thread(target=stream_demo, args=(send, stop), daemon=True,
                                       name="celrec-demo")
        demo_thread.start()
        threads.append(demo_thread)
        log.info("demo workload streaming into %s", settings.kafka_events_topic)
    app = create_app(build_state(settings, event_log, store))
    log.info("celrec on http://%s:%d (docs at /docs)", settings.host, settings.port)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                    access_log=False)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        if metrics_server is not None:
            metrics_server.close()
        trainer.close()
    return 0
