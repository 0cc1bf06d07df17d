"""Diagnostics behind the SAML figures (bench/results/saml_dupn_history.md), on the
tuning data (generator seed 1).

- the auxiliary (shared) network alone vs the full SAML output (are the branches learning?);
- SAML without the mutual unit's mix (own branch state only);
- the DeepFM baseline with and without the scenario as a field (validation AUC per epoch).
Full tables, the hyperparameters chosen by bench/saml_dupn_tune.py; prints JSON lines.
"""

from __future__ import annotations

import json

import torch

from cel.metrics import auc
from cel.saml import SAML
from cel.synthetic_scenarios import make_scenario_data
from cli.evaluation.multiscenario import (
    MSData,
    MSSpec,
    MSTask,
    build_deepfm,
    build_saml,
    fit,
    predict_all,
)


def _own_branch_only(self, states, slot, aux_state, deltas):  # noqa: ANN001, ANN202
    stacked = torch.stack(states, dim=1)
    out = stacked.new_zeros(len(slot))
    for j in range(stacked.shape[1]):
        rows = (slot == j).nonzero().flatten()
        if len(rows):
            own = stacked[rows][:, j]
            head = self.branches[j].head
            out[rows] = head(torch.cat([own, aux_state[rows]], dim=1)).squeeze(1) + deltas[rows, j]
    return out


def _per_scenario(logit: torch.Tensor, data: MSData) -> dict:
    return {str(k): round(auc(logit[data.scenarios == k], data.labels[data.scenarios == k]), 4)
            for k in range(3)}


def main() -> None:
    torch.set_num_threads(1)
    d = make_scenario_data(per_scenario=40_000, seed=1)

    def conv(s) -> MSData:
        return MSData(s.users, s.items, s.scenarios, s.labels)

    task = MSTask(conv(d.train), conv(d.test), d.num_users, d.num_items, d.num_scenarios)
    te = task.test
    spec = MSSpec(table="full", epochs=8, lr=0.003, weight_decay=1e-4)
    for variant in ("saml", "saml_without_mutual_mix"):
        mutual = SAML._mutual
        if variant != "saml":
            SAML._mutual = _own_branch_only
        try:
            fitted = build_saml(task, spec)
            curve = fit(fitted, task.train, spec)["valid_auc"]
            with torch.no_grad():
                out = fitted.module(te.users, te.items, te.scenarios)
        finally:
            SAML._mutual = mutual
        print(json.dumps({"variant": variant, "saml_output": _per_scenario(out.logit, te),
                          "auxiliary_alone": _per_scenario(out.aux_logit, te),
                          "valid_auc": [round(v, 4) for v in curve]}), flush=True)
    base = MSSpec(table="full", epochs=8, lr=0.003)
    for field in (False, True):
        fitted = build_deepfm(task, base, field, task.train.labels)
        curve = fit(fitted, task.train, base)["valid_auc"]
        pred = predict_all(fitted, te)
        print(json.dumps({"variant": f"deepfm_scenario_field={field}",
                          "test": _per_scenario(pred, te),
                          "valid_auc": [round(v, 4) for v in curve]}), flush=True)


if __name__ == "__main__":
    main()
