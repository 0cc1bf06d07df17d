"""Stream evaluation: DUPN reassignment with the window's sequences encoded once."""

from __future__ import annotations

import numpy as np
import torch

from cli.evaluation.sequences import (
    EventLog,
    SeqSpec,
    _DeepFMRun,
    _DUPNRun,
    _expand,
    _optimizer,
    _reassign,
    build_histories,
)


def _log(n: int = 120, users: int = 6, items: int = 15) -> EventLog:
    rng = np.random.default_rng(0)
    u = rng.integers(users, size=n)
    i = rng.integers(items, size=n)
    zeros = np.zeros(n, dtype=np.int64)
    return EventLog(u, i, zeros, zeros, np.arange(n), np.arange(n), users, items, 1, False)


def _setup(spec: SeqSpec):
    log = _log()
    hist = build_histories(log, spec.max_len, spec.time_buckets)
    run = _DUPNRun(log, spec, 0.0)
    for table in run.tables().values():  # a few clusters to choose from
        table.assign(torch.arange(table.num_entities) % 4)
        table.num_active = 4
    gen = torch.Generator().manual_seed(0)
    batches = [_expand(log, hist, np.arange(a, a + 40), 1, gen) for a in (0, 40, 80)]
    return run, batches


def _lstm_calls(fixed: bool) -> tuple[int, torch.Tensor]:
    spec = SeqSpec(dim=4, clusters=8, max_len=5, hidden=4, reassign_fixed_sequence=fixed)
    run, batches = _setup(spec)
    calls = [0]
    handle = run.model.lstm.register_forward_hook(
        lambda *_: calls.__setitem__(0, calls[0] + 1))
    _reassign(run, batches, torch.Generator().manual_seed(1), fixed)
    handle.remove()
    return calls[0], run.model.item_table.assignment.clone()


def test_fixed_sequence_reassignment_encodes_the_window_once_per_side() -> None:
    fixed_calls, _ = _lstm_calls(True)
    moving_calls, _ = _lstm_calls(False)
    assert fixed_calls == 2  # user side, item side: one encoding each
    assert moving_calls == 2 * 4  # every cluster tried re-encodes the sequences


def test_fixed_sequence_trial_keeps_the_sequence_rows() -> None:
    """A trial that moves every candidate to cluster c scores the candidates with c but
    the sequences with the rows they had; without the fixed encoding they move too."""
    spec = SeqSpec(dim=4, clusters=8, max_len=5, hidden=4)
    run, batches = _setup(spec)
    b = batches[1]
    table = run.model.item_table
    with torch.no_grad():
        pooled = run.pooled(b)
        current = run.losses(b, pooled)
        assert torch.allclose(current, run.losses(b))  # same assignment: same losses
        table.assignment[torch.unique(b.items)] = 3
        fixed = run.losses(b, pooled)
        moved = run.losses(b)
        repooled = run.pooled(b)
    assert not torch.allclose(repooled, pooled)  # the sequences share items with candidates
    assert torch.allclose(moved, run.losses(b, repooled))
    assert not torch.allclose(fixed, current)  # the candidates did move
    assert not torch.allclose(fixed, moved)


def test_table_lr_applies_to_the_tables_only() -> None:
    log = _log()
    for kind in (_DUPNRun, _DeepFMRun):
        spec = SeqSpec(dim=4, clusters=8, max_len=5, hidden=4, lr=0.01, table_lr=0.1,
                       entity_bias=True)
        run = kind(log, spec, 0.0)
        net, tables = _optimizer(run, spec).param_groups
        table_params = {id(p) for t in (run.model.user_table, run.model.item_table)
                        for p in t.parameters()}
        assert {id(p) for p in tables["params"]} == table_params and tables["lr"] == 0.1
        assert net["lr"] == 0.01 and not table_params & {id(p) for p in net["params"]}
        assert len(net["params"]) + len(tables["params"]) == len(list(run.model.parameters()))
        assert run.model.item_table.bias is not None  # the own biases learn at table_lr
        assert id(run.model.item_table.bias) in table_params
        same = _optimizer(run, SeqSpec(lr=0.01)).param_groups
        assert same[1]["lr"] == 0.01
