"""DUPN: the property-gated LSTM by hand, attention masking, empty sequences, disassembly."""

from __future__ import annotations

import math

import torch

from cel.dupn import DUPN, DUPNConfig, PropertyGatedLSTM, Sequence, empty_sequence, gap_buckets


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_gated_lstm_matches_a_hand_computation() -> None:
    """One hidden unit, input size 1, property size 1, two steps, the second one padding."""
    torch.manual_seed(0)
    cell = PropertyGatedLSTM(input_size=1, property_size=1, hidden=1)
    wx = cell.input_proj.weight.detach().flatten().tolist()  # [i, f, o, g]
    bx = cell.input_proj.bias.detach().tolist()
    wp = cell.property_proj.weight.detach().flatten().tolist()  # [i, f, o] only
    wh = cell.recurrent.weight.detach().flatten().tolist()
    x = torch.tensor([[[0.5], [-1.0], [2.0]]])
    p = torch.tensor([[[1.5], [0.3], [-0.7]]])
    mask = torch.tensor([[True, True, False]])
    out, last = cell(x, p, mask)

    h = c = 0.0
    expected = []
    for xt, pt in ((0.5, 1.5), (-1.0, 0.3)):
        i = _sig(wx[0] * xt + wp[0] * pt + wh[0] * h + bx[0])
        f = _sig(wx[1] * xt + wp[1] * pt + wh[1] * h + bx[1])
        o = _sig(wx[2] * xt + wp[2] * pt + wh[2] * h + bx[2])
        g = math.tanh(wx[3] * xt + wh[3] * h + bx[3])  # no property term in the candidate
        c = f * c + i * g
        h = o * math.tanh(c)
        expected.append(h)
    assert torch.allclose(out[0, :2, 0], torch.tensor(expected), atol=1e-6)
    assert out[0, 2, 0] == 0.0  # padding step: no output
    assert math.isclose(float(last[0, 0].detach()), expected[-1], abs_tol=1e-6)  # kept


def test_property_does_not_reach_the_candidate() -> None:
    torch.manual_seed(1)
    cell = PropertyGatedLSTM(input_size=2, property_size=3, hidden=4)
    assert cell.property_proj.weight.shape == (12, 3)  # 3 gates x 4 units, no candidate block


def _model(**overrides) -> DUPN:
    torch.manual_seed(0)
    cfg = dict(num_items=40, num_users=10, item_dim=6, item_clusters=5, user_clusters=3,
               behaviour_types=4, scenarios=2, time_buckets=8, property_dim=3, hidden=8,
               attention_hidden=(8, 4), context_cardinalities=(3,), item_encoding=5,
               head_hidden=(8,), price_levels=7)
    cfg.update(overrides)
    return DUPN(DUPNConfig(**cfg))


def _seq(b: int, t: int, lengths: list[int]) -> Sequence:
    gen = torch.Generator().manual_seed(0)
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    ids = [torch.randint(n, (b, t), generator=gen) for n in (40, 4, 2, 8)]
    return Sequence(*ids, mask)


def test_attention_sums_to_one_over_real_steps_and_is_zero_on_padding() -> None:
    model = _model()
    seq = _seq(3, 6, [6, 2, 0])
    rep, weights = model.user_representation(seq, torch.tensor([0, 1, 2]),
                                             torch.tensor([[0], [1], [2]]),
                                             return_attention=True)
    assert torch.allclose(weights[:2].sum(dim=1), torch.ones(2), atol=1e-6)
    assert bool((weights[1, 2:] == 0).all()) and bool((weights[2] == 0).all())
    assert bool((weights[0] > 0).all())
    assert torch.isfinite(rep).all() and rep.shape == (3, model.rep_dim)


def test_empty_sequence_gives_a_finite_representation_and_scores() -> None:
    model = _model()
    seq = empty_sequence(4)
    rep = model.user_representation(seq, torch.arange(4), torch.zeros(4, 1, dtype=torch.long))
    assert torch.isfinite(rep).all()
    out = model.score_candidates(rep, torch.randint(40, (4, 3)))
    assert torch.isfinite(out.ctr).all() and out.ctr.shape == (4, 3)
    nouser = _model(num_users=0)
    rep0 = nouser.user_representation(empty_sequence(2), None, torch.zeros(2, 1,
                                                                          dtype=torch.long))
    assert torch.isfinite(rep0).all() and rep0.shape == (2, 8)


def test_disassembly_matches_the_one_candidate_forward() -> None:
    model = _model()
    seq = _seq(2, 5, [5, 3])
    users, ctx = torch.tensor([1, 2]), torch.tensor([[0], [2]])
    cands = torch.tensor([[3, 7, 9], [1, 2, 3]])
    rep = model.user_representation(seq, users, ctx)
    many = model.score_candidates(rep, cands)
    for c in range(3):
        one, _ = model(seq, cands[:, c], users, ctx)
        assert torch.allclose(one.ctr, many.ctr[:, c], atol=1e-6)
        assert torch.allclose(one.cvr, many.cvr[:, c], atol=1e-6)


def test_loss_trains_all_heads_and_the_shared_item_table() -> None:
    model = _model()
    seq = _seq(8, 4, [4, 4, 3, 2, 1, 0, 4, 2])
    items = torch.arange(8)
    out, price = model(seq, items, torch.arange(8) % 10, torch.zeros(8, 1, dtype=torch.long))
    click = torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 0])
    purchase = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0])
    level = torch.tensor([2, -1, 3, -1, 0, -1, 6, -1])
    model.loss(out, price, click, purchase, level).backward()
    for head in (model.ctr_head, model.cvr_head, model.price_head, model.lstm):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert model.item_table.weight.grad.abs().sum() > 0


def test_gap_buckets_are_log2() -> None:
    got = gap_buckets(torch.tensor([0, 1, 3, 100, 10**9]), 16).tolist()
    assert got == [0, 1, 2, 6, 15]


def test_padding_steps_are_not_item_table_lookups() -> None:
    model = _model()
    seq = _seq(3, 6, [6, 2, 0])
    seen: list[torch.Tensor] = []
    handle = model.item_table.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    model.user_representation(seq, torch.tensor([0, 1, 2]), torch.zeros(3, 1, dtype=torch.long))
    handle.remove()
    looked_up = torch.cat([s.reshape(-1) for s in seen])
    assert len(looked_up) == 8  # 6 + 2 real steps: padding adds no CEL split statistics
    assert torch.equal(looked_up.sort().values, seq.items[seq.mask].sort().values)


def test_shallow_terms_start_at_zero_and_learn_item_popularity() -> None:
    torch.manual_seed(1)
    model, plain = _model(), _model(wide=False)
    plain.load_state_dict(model.state_dict(), strict=False)
    seq = _seq(2, 4, [4, 1])
    rep = model.user_representation(seq, torch.tensor([0, 1]), torch.zeros(2, 1,
                                                                          dtype=torch.long))
    cands = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.allclose(model.score_candidates(rep, cands).ctr,
                          plain.score_candidates(rep, cands).ctr)  # zero-initialised
    out = model.score_candidates(rep, cands)
    out.ctr.sum().backward()
    assert model.wide["item"].weight.grad.abs().sum() > 0
    assert model.wide["user"].weight.grad.abs().sum() > 0


def test_item_bias_is_a_first_order_ctr_term_of_the_candidate_only() -> None:
    """``item_bias``: an item's own float moves its CTR logit by exactly that much as a
    candidate, and does not change any user representation (not a sequence input)."""
    model = _model(item_bias=True)
    table = model.item_table
    assert table.weight.shape[1] == 6 + 1 and table.bias is not None
    plain = _model()
    assert model.memory_bytes() == plain.memory_bytes() + 40 * 4 + 5 * 4  # own floats, column
    seq = _seq(2, 5, [5, 3])
    users, ctx = torch.tensor([1, 2]), torch.tensor([[0], [2]])
    item = int(seq.items[0, 0])  # in the first user's sequence and a candidate below
    cands = torch.tensor([[item, (item + 1) % 40], [item, (item + 2) % 40]])
    with torch.no_grad():
        rep = model.user_representation(seq, users, ctx)
        before = model.score_candidates(rep, cands)
        table.bias[item] += 0.7
        rep_after = model.user_representation(seq, users, ctx)
        after = model.score_candidates(rep_after, cands)
    assert torch.equal(rep, rep_after)
    assert torch.allclose(after.ctr[:, 0] - before.ctr[:, 0], torch.full((2,), 0.7), atol=1e-5)
    assert torch.equal(after.ctr[:, 1], before.ctr[:, 1])
    assert torch.equal(after.cvr, before.cvr)
    full = _model(item_bias=True, table="full")
    assert full.item_table.weight.shape == (40, 7)


def test_forward_pooled_matches_forward() -> None:
    model = _model()
    seq = _seq(3, 5, [5, 2, 0])
    users, ctx, items = torch.tensor([1, 2, 3]), torch.tensor([[0], [1], [2]]), torch.arange(3)
    out, price = model(seq, items, users, ctx)
    pooled, _ = model.pool_sequence(seq, ctx)
    out2, price2 = model.forward_pooled(pooled, items, users)
    assert torch.allclose(out.ctr, out2.ctr) and torch.allclose(out.cvr, out2.cvr)
    assert torch.allclose(price, price2)
