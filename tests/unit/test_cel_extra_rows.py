"""Extra weighted cluster rows per entity (a sparse code) and the ridge finishing pass."""

from __future__ import annotations

import torch

from cel import cluster_ops
from cel.build import cel_bytes, make_recommender
from cel.interactions import Interactions
from cel.offline import OfflineCEL, TrainConfig


def _rec(extra_rows: int = 1):
    return make_recommender("cel", 30, 4, "mf", 3, "item", clusters=4, device="cpu",
                            entity_bias=True, entity_scale=True, extra_rows=extra_rows)


def test_extra_rows_are_counted_and_hashing_gets_the_same_memory() -> None:
    kw = dict(model="mf", dim=8, side="item", clusters=5, device="cpu", entity_bias=True,
              entity_scale=True, extra_rows=2)
    cel = make_recommender("cel", 10, 300, **kw)
    assert cel.item_table.memory_bytes() == cel_bytes(300, 9, 5, True, True, extra_rows=2)
    assert cel.item_table.memory_bytes() == 5 * 9 * 4 + 300 * (3 * 1 + 4 * 4)
    hashed = make_recommender("dhash", 10, 300, **kw)
    assert abs(hashed.item_table.memory_bytes() - cel.item_table.memory_bytes()) < 2 * 9 * 4


def test_matching_pursuit_finds_the_missing_row_and_its_weight() -> None:
    rec = _rec()
    table = rec.item_table
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        rec.user_table.weight.copy_(torch.randn(30, 4, generator=gen))
        rec.user_table.weight[:, -1] = 0
        table.weight.copy_(torch.eye(4))  # rows 0..2: the three factor axes; row 3: bias
        table.num_active = 4
        table.assign(torch.tensor([0, 1, 2, 3]))
    users = torch.arange(30)
    item = torch.zeros(30, dtype=torch.long)  # item 0 uses row 0 (+ 0.5 * row 2 in truth)
    u = rec.user_table.weight.detach()  # row 0's bias column is 0: labels are the factors
    labels = u[:, 0] + 0.5 * u[:, 2]
    data = Interactions(users, item, labels.detach())
    before = rec.loss(rec.score(data), data.labels).sum().detach()
    out = cluster_ops.assign_extra(rec, "item", data, prior=0.0, min_count=1)
    assert out["changed"] == 1 and int(table.assignment2[0, 0]) == 2
    assert abs(float(table.scale2[0, 0].detach()) - 0.5) < 1e-4
    assert float(rec.loss(rec.score(data), data.labels).sum().detach()) < 1e-6 < float(before)
    # too few interactions: no extra row at all
    cluster_ops.assign_extra(rec, "item", data, prior=0.0, min_count=31)
    assert float(table.scale2[0, 0].detach()) == 0.0


def test_more_slots_than_free_rows_leave_the_rest_off() -> None:
    rec = _rec(extra_rows=5)  # 4 rows: the first row + at most 3 distinct extra rows
    table = rec.item_table
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        rec.user_table.weight.copy_(torch.randn(30, 4, generator=gen))
        table.weight.copy_(torch.randn(4, 4, generator=gen))
        table.num_active = 4
        table.assign(torch.tensor([0, 1, 2, 3]))
    data = Interactions(torch.arange(30), torch.zeros(30, dtype=torch.long),
                        torch.randn(30, generator=gen))
    cluster_ops.assign_extra(rec, "item", data, prior=0.0, min_count=1)
    on = table.scale2[0].detach() != 0
    rows = [0] + table.assignment2[0][on].tolist()
    assert 1 <= int(on.sum()) <= 3 and len(set(rows)) == len(rows)


def test_extra_weights_are_shrunk_by_their_prior_in_training() -> None:
    rec = _rec()
    trainer = OfflineCEL(rec, TrainConfig(extra_rows_prior=6.0))
    items = torch.tensor([0, 0, 1])  # counts 2, 1
    train = Interactions(torch.zeros(3).long(), items, torch.ones(3))
    trainer._start_own_priors(train)
    with torch.no_grad():
        rec.item_table.scale2.copy_(torch.tensor([[2.0], [1.0], [0.0], [0.0]]))
    batch = Interactions(torch.zeros(2).long(), torch.tensor([0, 1]), torch.ones(2))
    # item 0: 6/2 * 4 = 12; item 1: 6/1 * 1 = 6; batch mean 9
    assert abs(float(trainer._own_penalty(batch).detach()) - 9.0) < 1e-5


def _objective(rec, data: Interactions, reg: float) -> float:
    u, i = rec.user_table(data.users), rec.item_table(data.items)
    err = (rec.model(u, i) - data.labels).pow(2)
    return float((err + reg * u.pow(2).sum(1) + reg * i.pow(2).sum(1)).mean().detach())


def test_cli_default_gives_cel_five_extra_rows_and_they_reach_the_table() -> None:
    from celrec.presets import load_preset
    from cli.evaluation.cli import build_parser, spec_from_args
    from cli.evaluation.runner import evaluate
    from tests.unit.random_ratings import random_prepared

    args = build_parser().parse_args(["--dim", "4", "--clusters", "3", "--device", "cpu"])
    preset = load_preset(epochs=1)
    assert spec_from_args(args, ("cel",), preset).extra_rows == 5
    assert preset.extra_rows_prior > 0
    stream = build_parser().parse_args(["--protocol", "stream"])
    assert spec_from_args(stream, ("cel",), preset).extra_rows == 0  # not chosen there
    off = load_preset(extra_rows=0)
    assert spec_from_args(args, ("cel",), off).extra_rows == 0
    prep = random_prepared()
    cel, dhash = evaluate(prep, spec_from_args(args, ("cel", "dhash"), preset))
    assert cel["memory_bytes"] == cel_bytes(30, 5, 3, True, True, extra_rows=5)
    assert abs(dhash["memory_bytes"] - cel["memory_bytes"]) < 2 * 5 * 4


def test_the_stream_protocol_chooses_extra_rows_at_its_reassignments() -> None:
    from cli.evaluation.runner import stream_cluster_step

    rec = _rec(extra_rows=2)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        rec.user_table.weight.copy_(torch.randn(30, 4, generator=gen))
        rec.item_table.weight.copy_(torch.randn(4, 4, generator=gen))
        rec.item_table.num_active = 4
    window = Interactions(torch.arange(30).repeat(2), torch.arange(4).repeat(15),
                          torch.randn(60, generator=gen))
    cfg = TrainConfig(split_every=1000, reassign_every=5, extra_rows_min_count=10)
    optimizer = torch.optim.Adam(rec.parameters())
    stream_cluster_step(rec, window, cfg, 4, optimizer, gen)  # no reassignment due
    assert not bool(rec.item_table.scale2.detach().any())
    stream_cluster_step(rec, window, cfg, 5, optimizer, gen)
    assert bool(rec.item_table.scale2.detach().any())  # 15 ratings per item >= 10
