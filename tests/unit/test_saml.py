"""SAML on CEL tables: stop-gradient, shared assignment, add_scenario, attention masking."""

from __future__ import annotations

import torch

from cel.grad_split import GradientSplitter
from cel.saml import SAML, SAMLConfig, _masked_softmax


def _model(**overrides) -> SAML:
    torch.manual_seed(0)
    cfg = dict(num_users=20, num_items=30, dim=4, user_clusters=4, item_clusters=5,
               num_scenarios=2, max_branches=3, hidden=(8, 6), context_cardinalities=(3,))
    cfg.update(overrides)
    return SAML(SAMLConfig(**cfg))


def _batch(n: int, scenario: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(scenario)
    return {"users": torch.randint(20, (n,), generator=gen),
            "items": torch.randint(30, (n,), generator=gen),
            "scenarios": torch.full((n,), scenario),
            "context": torch.randint(3, (n, 1), generator=gen),
            "history": torch.randint(30, (n, 5), generator=gen),
            "history_mask": torch.rand(n, 5, generator=gen) > 0.3}


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_scenario_batch_trains_only_its_own_branch() -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for scenario in (0, 1):  # both branches have optimiser state (momentum) from a mixed past
        batch = _batch(16, scenario)
        opt.zero_grad(set_to_none=True)
        model.loss(model(**batch), torch.rand(16).round()).backward()
        opt.step()
    a_before, b_before = _snapshot(model.branches[0]), _snapshot(model.branches[1])
    tables_b = [model.user_scenario.weights[1].detach().clone(),
                model.item_scenario.weights[1].detach().clone()]
    tables_a = model.item_scenario.weights[0].detach().clone()
    aux_before = _snapshot(model.aux_layers)
    batch = _batch(16, 0)
    opt.zero_grad(set_to_none=True)
    model.loss(model(**batch), torch.rand(16).round()).backward()
    opt.step()
    assert _changed(a_before, model.branches[0]) and _changed(aux_before, model.aux_layers)
    assert not _changed(b_before, model.branches[1])
    assert torch.equal(tables_b[0], model.user_scenario.weights[1])
    assert torch.equal(tables_b[1], model.item_scenario.weights[1])
    assert not torch.equal(tables_a, model.item_scenario.weights[0])


def test_other_branches_still_shape_the_output_through_the_mutual_unit() -> None:
    model = _model()
    batch = _batch(8, 0)
    before = model.predict(**batch)
    with torch.no_grad():
        for p in model.branches[1].parameters():
            p.add_(0.5)
    assert not torch.allclose(before, model.predict(**batch))


def test_scenario_tables_share_the_global_assignment() -> None:
    model = _model()
    table = model.item_table
    table.assign(torch.arange(30) % 5)
    assert model.item_scenario.weights[0].shape == (5, 5)  # M x (d + bias), not N x d
    ids = torch.tensor([3, 8, 13])  # all in cluster 3
    rows = model.item_scenario.lookup(1, ids)
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[1], rows[2])
    assert torch.equal(rows[0], model.item_scenario.weights[1][3])
    full = model.memory_bytes()
    assert full < 2 * 30 * 4 * 4  # far below per-entity scenario tables


def test_split_copies_parent_rows_into_every_scenario_table() -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    splitter = GradientSplitter(model.item_table, split_every=1, optimizer=opt,
                                on_split=lambda p, c: model.on_split("item", p, c))
    for scenario in (0, 1, 0):
        batch = _batch(64, scenario)
        opt.zero_grad(set_to_none=True)
        labels = (batch["items"] % 2).float()
        model.loss(model(**batch), labels).backward()
        opt.step()
        splitter.step()
    splitter.close()
    assert model.item_table.num_active > 1 and splitter.splits >= 1
    counts = model.item_table.counts[:model.item_table.num_active]
    assert int(counts.sum()) == 30 and bool((counts > 0).all())


def test_add_scenario_respects_the_maximum() -> None:
    model = _model()
    assert model.add_scenario(0) is False  # already has a branch
    assert model.add_scenario(7) is True and model.num_branches == 3
    assert model.add_scenario(8) is False and model.num_branches == 3  # budget of 3 spent
    slots = model.slots(torch.tensor([0, 1, 7, 8, 99]))
    assert slots.tolist() == [0, 1, 2, -1, -1]
    batch = _batch(6, 8)
    out = model(**batch)
    assert not bool(out.has_branch.any())
    assert torch.equal(out.logit, out.aux_logit)  # no branch: the auxiliary network scores
    out7 = model(**_batch(6, 7))
    assert bool(out7.has_branch.all()) and torch.isfinite(out7.logit).all()


def test_attention_masks_padding_and_empty_histories() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = _masked_softmax(scores, mask)
    assert torch.allclose(weights[0].sum(), torch.tensor(1.0))
    assert weights[0, 1] == 0 and torch.equal(weights[1], torch.zeros(3))
    model = _model()
    batch = _batch(4, 1)
    batch["history_mask"][:] = False
    assert torch.isfinite(model(**batch).logit).all()


def test_a_branch_starts_as_the_auxiliary_network() -> None:
    model = _model(head_init_std=0.0)
    out = model(**_batch(8, 1))
    assert bool(out.has_branch.all())
    # zero head and zero embedding maps: the branch's deviation is exactly 0 at the start
    assert torch.allclose(out.logit, out.aux_logit)
    out.logit.sum().backward()
    assert model.branches[1].head.weight.grad.abs().sum() > 0  # and it can still learn


def test_full_tables_without_scenario_rows_keep_them_frozen_and_out_of_memory() -> None:
    model = _model(table="full", scenario_rows=False)
    with_rows = _model(table="full")
    assert model.memory_bytes() < with_rows.memory_bytes()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.loss(model(**_batch(16, 0)), torch.rand(16).round()).backward()
    opt.step()
    assert all(bool((w == 0).all()) for w in model.user_scenario.weights)


def test_one_shared_history_scores_as_the_same_history_per_sample() -> None:
    """Serving passes one (1, L) history for all of a user's candidates: the logits must
    equal those of the history repeated per candidate (the training layout)."""
    net = _model().eval()
    with torch.no_grad():  # distinct scenario rows, so the branch attention matters
        for w in net.item_scenario.weights:
            w.normal_()
    b = _batch(12, 1)
    users = b["users"][:1].expand(12)
    history, mask = b["history"][:1], b["history_mask"][:1]
    mask[0, 0] = True  # at least one real step
    with torch.no_grad():
        shared = net(users, b["items"], b["scenarios"], b["context"], history, mask)
        repeated = net(users, b["items"], b["scenarios"], b["context"],
                       history.expand(12, -1), mask.expand(12, -1))
        empty = net(users, b["items"], b["scenarios"], b["context"], history,
                    torch.zeros_like(mask))
    assert torch.allclose(shared.logit, repeated.logit, atol=1e-5)
    assert not torch.allclose(shared.logit, empty.logit, atol=1e-4)  # the history counts


def test_on_a_shared_model_saml_starts_exactly_as_that_model() -> None:
    from cel.build import make_recommender

    base = make_recommender("cel", 30, 40, "deepfm", 8, "both", clusters=4, task="binary",
                            device="cpu", context_cardinalities=(2,))
    cfg = SAMLConfig(num_users=30, num_items=40, dim=8, user_clusters=4, item_clusters=4,
                     num_scenarios=2, max_branches=2, hidden=(16, 8))
    model = SAML(cfg, tables=(base.user_table, base.item_table))
    model.start_from_base()
    assert model.user_table is base.user_table  # its tables and clusters, not new ones
    b = _batch(16, 1)
    logits = torch.randn(16)
    out = model(b["users"], b["items"], b["scenarios"], base=logits)
    assert torch.allclose(out.logit, logits) and torch.allclose(out.aux_logit, logits)
    out.logit.sum().backward()  # the heads learn from there
    assert model.aux_head.weight.grad is not None
    assert model.aux_head.weight.grad.abs().sum() > 0
