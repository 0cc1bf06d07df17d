"""CEL tables inside the multi-scenario training recover planted groups (shared DeepFM).

The generator plants 4 user groups x 4 item groups; with the reassignment run over the whole
training part every few steps the learned assignments match them (ARI >= 0.7 on both
sides), while the once-per-epoch reassignment on a window stays far from them: the gap the
synthetic SAML benchmark hinged on. Seeded and small (a few seconds).
"""

from __future__ import annotations

import torch

from cel.metrics import adjusted_rand_index
from cel.saml import SAML, SAMLConfig
from cel.synthetic_scenarios import make_scenario_data
from cli.evaluation.multiscenario import MSData, MSSpec, MSTask, build_deepfm, build_saml, fit


def _data():
    d = make_scenario_data(num_users=200, num_items=100, per_scenario=8000, groups=4, seed=0)

    def conv(s) -> MSData:
        return MSData(s.users, s.items, s.scenarios, s.labels)

    return d, MSTask(conv(d.train), conv(d.test), d.num_users, d.num_items, d.num_scenarios)


def _aris(d, fitted) -> tuple[float, float]:
    tables = fitted.tables()
    return (adjusted_rand_index(tables["user"].assignment.long(), d.user_group),
            adjusted_rand_index(tables["item"].assignment.long(), d.item_group))


def test_generator_exposes_planted_groups_without_changing_samples() -> None:
    d, _ = _data()
    assert d.user_group.shape == (200,) and d.item_group.shape == (100,)
    assert int(d.user_group.max()) == 3 and int(d.item_group.max()) == 3
    again = make_scenario_data(num_users=200, num_items=100, per_scenario=8000, groups=4,
                               seed=0)
    assert torch.equal(d.train.labels, again.train.labels)


def test_frequent_whole_data_reassignment_recovers_planted_groups() -> None:
    torch.set_num_threads(1)
    d, task = _data()
    base = MSSpec(dim=8, clusters=4, hidden=(16, 8), epochs=5, split_every=5, lr=0.01)
    frequent = MSSpec(**{**base.__dict__, "reassign_every": 10, "reassign_window": 10**9})
    fitted = build_deepfm(task, frequent, True, task.train.labels)
    fit(fitted, task.train, frequent)
    user_ari, item_ari = _aris(d, fitted)
    assert user_ari >= 0.7 and item_ari >= 0.7, (user_ari, item_ari)
    sparse = build_deepfm(task, base, True, task.train.labels)  # window once per epoch
    fit(sparse, task.train, base)
    assert max(_aris(d, sparse)) < 0.65, _aris(d, sparse)


def test_saml_aux_only_forward_and_aux_reassignment() -> None:
    torch.manual_seed(0)
    model = SAML(SAMLConfig(num_users=20, num_items=10, dim=4, user_clusters=4,
                            item_clusters=4, num_scenarios=2, hidden=(8, 4),
                            use_history=False, head_init_std=1.0))
    users, items = torch.arange(8), torch.arange(8) % 10
    scen = torch.tensor([0, 1] * 4)
    full, aux = model(users, items, scen), model(users, items, scen, branches=False)
    assert torch.allclose(aux.logit, full.aux_logit) and torch.equal(aux.logit, aux.aux_logit)
    assert not torch.allclose(full.logit, full.aux_logit)  # the branches do add something
    assert not bool(aux.has_branch.any())
    _, task = _data()
    spec = MSSpec(dim=4, clusters=4, hidden=(8, 4), epochs=1, saml_reassign_by="aux")
    fitted = build_saml(task, spec)
    batch = task.train.subset(slice(0, 64))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.no_grad():
        expected = bce(fitted.module(batch.users, batch.items, batch.scenarios).aux_logit,
                       batch.labels, reduction="none")
        assert torch.allclose(fitted.sample_losses(batch), expected)
