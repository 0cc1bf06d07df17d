"""What the trainer asks of a model: learn from a micro-batch, and say what to store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from celrec.settings import Settings, SettingsError
from schemas.events import Event


@dataclass
class LearnStats:
    events: int = 0
    loss: float | None = None
    skipped: bool = False  # the model refused the batch (non-finite loss or gradients)
    extra: dict[str, float] = field(default_factory=dict)


class Learner(ABC):
    """A model the stream trainer feeds. Implementations hold their state in memory."""

    #: names of the blobs :meth:`state` returns (known before any state exists)
    blob_names: tuple[str, ...] = ()
    #: the training loss, and what the served scores are: "logloss" (probabilities) or
    #: "mse" (predicted values)
    loss: str = "logloss"

    @abstractmethod
    def learn(self, events: list[Event]) -> LearnStats: ...

    @abstractmethod
    def state(self) -> dict[str, bytes]:
        """Named blobs persisted atomically with the trainer's progress after each batch."""

    @abstractmethod
    def restore(self, blobs: dict[str, bytes]) -> None:
        """Load what :meth:`state` produced (blobs may be missing on a first start)."""


class UnsupportedModel(SettingsError):
    """CELREC_MODEL names a model the streaming trainer does not learn."""


def make_learner(settings: Settings) -> Learner:
    """The learner ``CELREC_MODEL`` asks for: online CEL with MF or DeepFM, SAML or DUPN;
    any other value is refused rather than silently training another model."""
    if settings.model in ("mf", "deepfm"):
        from trainer.cel_learner import CELLearner

        return CELLearner(settings)
    if settings.model in ("saml", "dupn"):
        if settings.objective != "click":
            raise UnsupportedModel(f"CELREC_OBJECTIVE={settings.objective} is supported by "
                                   "mf and deepfm only (saml and dupn predict clicks)")
        from trainer.deep_models import DUPNLearner, SAMLLearner

        return SAMLLearner(settings) if settings.model == "saml" else DUPNLearner(settings)
    raise UnsupportedModel(
        f"CELREC_MODEL={settings.model} is not supported by the streaming trainer "
        "(supported: mf, deepfm, saml, dupn)")
