"""How recommendations weigh the model against popularity, and how that weight is chosen online.

Recommendations rank items by ``log(1 + positives) + weight x the model's score`` (what
users choose, plus what this user likes). No single weight suits every stream: on MovieLens
likes popularity carries most of the signal, on planted-group streams the model does
(bench/results/prequential_tuning.md). :class:`WeightChooser` picks it from evidence while
the stream runs: for a sample of positive events, before they are learnt, whether each
candidate weight would have put the event's item in the user's top ``TOP_N``. It leaves
``DEFAULT_WEIGHT`` only for a candidate whose paired wins over it (events it hits and the
default misses, minus the reverse) exceed ``z`` standard errors: the sign test of McNemar,
so a lead that chance could explain does not switch.
"""

from __future__ import annotations

import numpy as np

from cel.metrics import proven_lead

CANDIDATE_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0)
DEFAULT_WEIGHT = 0.25  # the best fixed weight on the tuning cuts
TOP_N = 10


def retrieval_scores(positives: np.ndarray, model_scores: np.ndarray,
                     weight: float | np.ndarray) -> np.ndarray:
    """The ranking key of items: ``log(1 + positives) + weight x model score`` (broadcast:
    a column of weights gives one row of keys per weight)."""
    return np.log1p(positives.astype(np.float64)) + weight * model_scores


class WeightChooser:
    """Paired evidence per candidate weight against the default, decayed by ``decay`` per
    evaluation (a window of about 1 / (1 - decay) evaluations, so the choice can follow a
    stream that changes)."""

    def __init__(self, z: float = 2.0, decay: float = 0.9995,
                 candidates: tuple[float, ...] = CANDIDATE_WEIGHTS,
                 default: float = DEFAULT_WEIGHT) -> None:
        self.weights = np.asarray(candidates, dtype=np.float64)
        self.default = candidates.index(default)
        self.z, self.decay = z, decay
        # per candidate: [hit where the default missed, missed where the default hit]
        self.discordant = np.zeros((len(self.weights), 2))

    @property
    def weight(self) -> float:
        wins, losses = self.discordant[:, 0], self.discordant[:, 1]
        gain = wins - losses
        proven = proven_lead(gain, wins + losses, self.z)
        if not proven.any():
            return float(self.weights[self.default])
        return float(self.weights[int(np.argmax(np.where(proven, gain, -np.inf)))])

    def observe(self, hits: np.ndarray) -> None:
        """``hits``: (events, candidates) booleans, one row per evaluated event."""
        hits = np.asarray(hits, dtype=bool).reshape(-1, len(self.weights))
        for row in hits:
            self.discordant *= self.decay
            base = row[self.default]
            self.discordant[:, 0] += row & ~base
            self.discordant[:, 1] += ~row & base

    def hits(self, target_key: np.ndarray, candidate_keys: np.ndarray,
             excluded: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Whether the target would be in the top ``TOP_N`` under each weight.

        ``target_key``: (W,) the target's ranking key per weight; ``candidate_keys``:
        (W, C) the keys of C candidate items (a uniform sample of the catalogue when
        ``scale`` > 1: each counts for ``scale`` items); ``excluded``: (C,) candidates that
        are not ranked (the target itself, the user's recent items)."""
        ranked = ~excluded[None, :]
        # ties count half: the target's expected place when they are broken at random
        # (items of one row share its score, so ties are common)
        above = ((candidate_keys > target_key[:, None]) & ranked).sum(axis=1) \
            + 0.5 * ((candidate_keys == target_key[:, None]) & ranked).sum(axis=1)
        return above * scale < TOP_N

    def state(self) -> np.ndarray:
        return self.discordant.copy()

    def load(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != self.discordant.shape:
            raise ValueError(f"weight chooser state {state.shape}, expected "
                             f"{self.discordant.shape}")
        self.discordant = state.copy()
