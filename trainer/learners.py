"""The learner ``CELREC_MODEL`` asks for (kept apart from the ``Learner`` contract, which
every learner imports, so that no import runs in a circle)."""

from __future__ import annotations

from celrec.settings import Settings, SettingsError
from trainer.cel_learner import CELLearner
from trainer.deep_models import DUPNLearner, SAMLLearner
from trainer.learner import Learner


class UnsupportedModel(SettingsError):
    """CELREC_MODEL names a model the streaming trainer does not learn."""


def make_learner(settings: Settings) -> Learner:
    """The learner ``CELREC_MODEL`` asks for: online CEL with MF or DeepFM, SAML or DUPN;
    any other value is refused rather than silently training another model."""
    if settings.model in ("mf", "deepfm"):
        return CELLearner(settings)
    if settings.model in ("saml", "dupn"):
        if settings.objective != "click":
            raise UnsupportedModel(f"CELREC_OBJECTIVE={settings.objective} is supported by "
                                   "mf and deepfm only (saml and dupn predict clicks)")
        return SAMLLearner(settings) if settings.model == "saml" else DUPNLearner(settings)
    raise UnsupportedModel(
        f"CELREC_MODEL={settings.model} is not supported by the streaming trainer "
        "(supported: mf, deepfm, saml, dupn)")
