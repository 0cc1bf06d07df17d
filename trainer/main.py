"""``celrec train``: the streaming trainer as its own process."""

from __future__ import annotations

import logging
import signal
import threading

from celrec.backends import EventLog, StateStore, make_event_log, make_state_store
from celrec.logs import configure_logging
from celrec.metrics import MetricsServer
from celrec.settings import Settings
from trainer.learners import make_learner
from trainer.metrics import TrainerMetrics
from trainer.publisher import Publisher
from trainer.stream import StreamTrainer

log = logging.getLogger(__name__)


def configure_torch(settings: Settings) -> None:
    """Process-wide torch set-up for a trainer process (not for library use or tests)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def build_trainer(settings: Settings, event_log: EventLog, store: StateStore) -> StreamTrainer:
    """The trainer the settings describe: model, checkpoints and publishing for serving."""
    return StreamTrainer(settings, event_log, store, make_learner(settings),
                         Publisher(settings, store), metrics=TrainerMetrics(settings))


def start_metrics_server(trainer: StreamTrainer) -> MetricsServer | None:
    """The trainer's own ``/metrics`` on CELREC_TRAINER_METRICS_HOST:PORT (0: none)."""
    settings = trainer.settings
    if trainer.metrics is None or not settings.trainer_metrics_port:
        return None
    server = MetricsServer(trainer.metrics.registry, settings.trainer_metrics_host,
                           settings.trainer_metrics_port)
    log.info("trainer metrics on http://%s:%d/metrics", settings.trainer_metrics_host,
             server.port)
    return server


def start_trainer_thread(trainer: StreamTrainer, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=trainer.run, args=(stop,), name="celrec-trainer",
                              daemon=True)
    thread.start()
    return thread


def train(settings: Settings, max_seconds: float | None = None) -> int:
    configure_logging(settings.log_level)
    configure_torch(settings)
    event_log, store = make_event_log(settings), make_state_store(settings)
    trainer = build_trainer(settings, event_log, store)
    metrics_server = start_metrics_server(trainer)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = start_trainer_thread(trainer, stop)
    thread.join(timeout=max_seconds)
    stop.set()
    thread.join()
    trainer.close()
    if metrics_server is not None:
        metrics_server.close()
    log.info("trainer stopped after %d events", trainer.progress.events_applied)
    return 0
