"""The serving model of a snapshot's kind: numpy for mf/deepfm, the torch network for
saml/dupn (imported only when such a snapshot arrives). One home for the choice, so that
``service.serving_model`` and ``service.deep_serving_model`` need not import each other."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from schemas.snapshot import SnapshotMeta
from service.serving_model import DEEP_MODEL_KINDS, ServingModel


def serving_model(meta: SnapshotMeta, arrays: Mapping[str, np.ndarray]) -> ServingModel:
    """A :class:`ServingModel` (or its saml/dupn subclass) for snapshot ``meta``."""
    if meta.model in DEEP_MODEL_KINDS:
        from service.deep_serving_model import DeepServingModel  # torch only when needed

        return DeepServingModel(meta, arrays)
    return ServingModel(meta, arrays)
