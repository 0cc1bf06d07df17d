"""The prequential protocol in-process, through what the product serves.

:class:`CelrecStream` is the trainer's own learner (``trainer.learners.make_learner`` with the
trainer's settings and defaults) publishing through the trainer's ``Publisher`` into an
embedded state store, and the service's ``ModelFollower`` reading it back: every score and
recommendation comes from the same :class:`~service.serving_model.ServingModel` that ``/scores`` and
``/recommendations`` use. Only HTTP and the event log are left out, so a chunk is learnt the
moment it is handed over (the API protocol waits for ``GET /model`` instead).
"""

from __future__ import annotations

import numpy as np

from cel.covisit import WINDOW
from celrec.backends.embedded import EmbeddedStateStore
from celrec.settings import Settings
from schemas.api import TrainerProgress
from schemas.events import Event, EventType
from schemas.state import StateKeys
from service.follower import ModelFollower
from trainer.learners import make_learner
from trainer.publisher import Publisher


class CelrecStream:
    """Score a chunk with the served model, then learn it (the trainer's micro-batch)."""

    name = "celrec"

    def __init__(self, task: str = "binary", seed: int = 0, **overrides: object):
        if task not in ("binary", "rating"):
            raise ValueError(f"task must be binary or rating, got {task!r}")
        self.task = task
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None, seed=seed, objective="rating" if task == "rating" else "click",
            **overrides)
        self.learner = make_learner(self.settings)
        self.store = EmbeddedStateStore()
        self.keys = keys = StateKeys(self.settings.state_prefix)
        self.publisher = Publisher(self.settings, self.store)
        self.follower = ModelFollower(self.store, keys, freeze_gc=False)
        self.progress = TrainerProgress()
        self._seen: dict[str, set[str]] = {}
        self._counter = 0

    def _events(self, users: list[str], items: list[str], values: np.ndarray,
                timestamps: np.ndarray) -> list[Event]:
        kind = EventType.rating if self.task == "rating" else EventType.click
        out = []
        # The stream's timestamps order the events; the learner does not read them.
        for u, i, v in zip(users, items, values.tolist(), strict=True):
            self._counter += 1
            out.append(Event(event_id=f"e{self._counter}", user_id=u, item_id=i,
                             event_type=kind, value=float(v)))
        return out

    def process(self, users: list[str], items: list[str], values: np.ndarray,
                timestamps: np.ndarray) -> np.ndarray:
        model = self.follower.model
        preds = np.full(len(users), np.nan)
        if model is None:
            preds[:] = 0.5 if self.task == "binary" else 0.0  # no model yet: as the peers
        else:
            by_user: dict[str, list[int]] = {}
            for k, u in enumerate(users):
                by_user.setdefault(u, []).append(k)
            for u, idx in by_user.items():
                scores, _, _ = model.score(u, [items[k] for k in idx])
                preds[idx] = scores
        events = self._events(users, items, np.asarray(values), np.asarray(timestamps))
        self.learner.learn(events)
        self.progress.events_applied += len(events)
        self.publisher.note_events(events, [0.0] * len(events))
        self.publisher.publish_delta(self.learner, self.progress) \
            if not self.publisher.need_snapshot \
            else self.publisher.publish_snapshot(self.learner, self.progress)
        self.follower.sync()
        return preds

    def recommend(self, user: str, n: int, exclude: set[str]) -> list[str] | None:
        model = self.follower.model
        if model is None:
            return []
        # the user's latest positives, as the service reads them for GET /recommendations
        liked = [b.decode() for b in self.store.list_range(self.keys.user_liked(user), WINDOW)]
        return [i for i, _ in model.retrieve(user, n, None, exclude, anchors=liked).items]

    def learnt_table_bytes(self) -> int:
        """What the learner learns per side: its live rows and the own biases (the memory
        compared with one full-embedding row per entity)."""
        total = 0
        for side in ("user", "item"):
            total += self.learner.model.cluster_table(side).numel() * 4
            total += 4 * len(self.learner.ids[side]) * int(self.learner.model.config.entity_bias)
        return total

    def memory_bytes(self) -> int | None:
        model = self.follower.model
        return None if model is None else model.memory_bytes()
