"""Serving SAML and DUPN: :class:`service.serving_model.ServingModel` with a network forward pass.

Ids, assignments, deltas, cold-start rows and cluster retrieval are the base class's; only
the scores and the user vector come from the published network (``cel.deep_serving``).
Every item of one CEL cluster has the same embedding, so scoring a cluster row scores all
its members: retrieval ranks the live item rows with the network, exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cel.deep_serving import DeepNet, SequenceRows, empty_rows, scenario_code
from service.serving_model import ModelDataError, RequestContext, ServingModel

_NET_ERRORS = (ValueError, KeyError, TypeError, RuntimeError, IndexError)


def _strip(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[len("model."):]: v for k, v in weights.items()}


class DeepServingModel(ServingModel):
    needs_sequence = True
    cold_item_by_scenario = True

    def _build_scorer(self, weights: Mapping[str, np.ndarray]) -> None:  # type: ignore[override]
        try:
            net: DeepNet | None = getattr(self, "_net", None)
            if net is None:
                self._net = DeepNet(self.network, _strip(weights))
            else:
                net.load(_strip(weights))
        except _NET_ERRORS as exc:
            raise ModelDataError(f"{self.kind} network: {exc}") from None

    def _check_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        try:
            self._net.check(_strip(weights))
        except _NET_ERRORS as exc:
            raise ModelDataError(f"{self.kind} network: {exc}") from None

    def _code(self, scenario: str | None) -> int:
        index = self.scenarios.index(scenario) if scenario in self.scenarios else None
        return scenario_code(self.kind, index, self._net.max_scenarios)

    def _sequence(self, request: RequestContext | None) -> tuple[SequenceRows, float]:
        if request is None or not request.steps:
            return empty_rows(), 0.0 if request is None else request.now
        items, behaviours, scenarios, times = zip(*request.steps, strict=True)
        rows = self._item.rows_of(list(items))
        unknown = rows < 0
        if unknown.any():  # an item the served state does not know yet: its cold row
            rows[unknown] = [self._cold_item_row(s) for s, u in zip(scenarios, unknown,
                                                                    strict=True) if u]
        codes = self._net.behaviours
        return SequenceRows(
            rows.astype(np.int64), np.array([codes.get(b, 0) for b in behaviours], np.int64),
            np.array([self._code(s) for s in scenarios], np.int64),
            np.asarray(times, np.float64)), request.now

    def _raw_scores(self, user_row: int, item_rows: np.ndarray, scenario: str | None,
                    request: RequestContext | None) -> np.ndarray:
        seq, now = self._sequence(request)
        return self._net.logits(user_row, np.asarray(item_rows, np.int64),
                                self._code(scenario), seq, now)

    def _user_vector(self, user_row: int, scenario: str | None,
                     request: RequestContext | None) -> np.ndarray:
        if self.kind != "dupn":
            return super()._user_vector(user_row, scenario, request)
        seq, now = self._sequence(request)
        return self._net.representation(user_row, self._code(scenario), seq, now)
