"""What the trainer asks of a model: learn from a micro-batch, and say what to store."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from schemas.events import Event
from schemas.snapshot import SideMeta
from schemas.state import StateKeys


@dataclass
class LearnStats:
    events: int = 0
    loss: float | None = None
    skipped: bool = False  # the model refused the batch (non-finite loss or gradients)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchReport:
    """What one micro-batch of the stream trainer did (for its metrics)."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # events of a batch the model refused as non-finite
    seconds: float = 0.0
    checkpointed: bool = False


class Learner(Protocol):
    """The learner contract: everything the stream trainer, the publisher and the trainer's
    metrics use of a model (nothing is looked up by name elsewhere). An explicit ``Protocol``;
    the implementations subclass it, so a missing method fails at construction. They hold
    their state in memory: ``trainer.cel_learner.CELLearner`` (mf, deepfm),
    ``trainer.deep_learner.DeepLearner`` (saml, dupn)."""

    #: names of the blobs :meth:`state` returns (known before any state exists)
    blob_names: tuple[str, ...] = ()
    #: the training loss, and what the served scores are: "logloss" (probabilities) or
    #: "mse" (predicted values)
    loss: str = "logloss"
    #: ``SnapshotMeta.model`` of what is published: mf, deepfm, saml or dupn
    model_kind: str = ""
    #: published table width minus the bias column
    dim: int = 0
    #: scenario names in index order
    scenarios: list[str]

    # -- the trainer -----------------------------------------------------------------
    @abstractmethod
    def learn(self, events: list[Event]) -> LearnStats: ...

    @abstractmethod
    def state(self) -> dict[str, bytes]:
        """Named blobs persisted atomically with the trainer's progress after each batch."""

    @abstractmethod
    def restore(self, blobs: dict[str, bytes]) -> None:
        """Load what :meth:`state` produced (blobs may be missing on a first start)."""

    # -- the publisher (layout in schemas.snapshot) ------------------------------------
    @property
    @abstractmethod
    def has_changes(self) -> bool:
        """Whether anything changed since the last snapshot or delta."""

    @abstractmethod
    def side_meta(self) -> dict[str, SideMeta]: ...

    @abstractmethod
    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """Every array a reader needs to serve; resets the changes."""

    @abstractmethod
    def delta_arrays(self) -> tuple[dict[str, int], list[tuple[str, int, int, int]],
                                    dict[str, np.ndarray]]:
        """(first new internal id per side, split events, arrays); resets the changes."""

    def network_spec(self) -> dict[str, Any]:
        """What rebuilds the network for serving (``SnapshotMeta.network``); none for mf."""
        return {}

    @property
    def retrieval_weight(self) -> float | None:
        """The recommendation weight of the model's score (``cel.retrieval``) the learner
        has chosen; None: the serving default."""
        return None

    @property
    def coliked_weight(self) -> float | None:
        """The weight of co-liked items in recommendations the learner has chosen
        (``cel.covisit``); None: the serving default."""
        return None

    def take_liked(self) -> dict[str, list[bytes]]:
        """New positive item ids per user since the last call, oldest first (the anchors of
        co-liked recommendations, ``cel.covisit``); none by default."""
        return {}

    def sequence_values(self, keys: StateKeys) -> dict[str, bytes]:
        """Behaviour sequences changed since the last publish, by state-store key."""
        return {}

    def sequences_published(self) -> None:  # noqa: B027 (optional hook, no-op by default)
        """The sequences of :meth:`sequence_values` are stored."""

    # -- the metrics -----------------------------------------------------------------
    @abstractmethod
    def predict_before_learn(self, events: list[Event]
                             ) -> tuple[np.ndarray, np.ndarray] | None:
        """Click probabilities for the batch before it is learnt, with the labels the
        learner will use (the progressive AUC); None when scores are not probabilities."""

    @abstractmethod
    def device_name(self) -> str:
        """Where the model lives: cpu, cuda:0, ..."""

    @abstractmethod
    def memory_bytes(self) -> int: ...

    @abstractmethod
    def cluster_sizes(self, side: str) -> np.ndarray:
        """Members per live row of ``side``."""

    @abstractmethod
    def entities(self, side: str) -> int:
        """Known ids of ``side``."""
