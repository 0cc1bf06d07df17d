"""Multi-scenario and sequence evaluation: generator, histories, runners, `celrec eval` paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cel.synthetic_scenarios import make_scenario_data
from cli.evaluation.cli import main
from cli.evaluation.multiscenario import (
    MSData,
    MSSpec,
    MSTask,
    ScenarioGate,
    beats_shared,
    pooled_drops,
    run_method,
)
from cli.evaluation.sequences import EventLog, SeqSpec, build_histories, run_stream


def test_generator_is_seeded_and_starves_the_last_scenario() -> None:
    a = make_scenario_data(num_users=50, num_items=40, per_scenario=1000, seed=3)
    b = make_scenario_data(num_users=50, num_items=40, per_scenario=1000, seed=3)
    assert torch.equal(a.train.labels, b.train.labels)
    sizes = torch.bincount(torch.cat([a.train.scenarios, a.test.scenarios]))
    assert sizes.tolist() == [1000, 1000, 100] and a.small == 2
    assert 0.05 < float(a.train.labels.mean()) < 0.95


def _task() -> MSTask:
    d = make_scenario_data(num_users=60, num_items=40, per_scenario=1500, groups=3, seed=1)

    def conv(s) -> MSData:
        return MSData(s.users, s.items, s.scenarios, s.labels)

    return MSTask(conv(d.train), conv(d.test), d.num_users, d.num_items, d.num_scenarios)


@pytest.mark.parametrize("method", ["saml", "shared", "separate"])
def test_methods_report_auc_per_scenario(method: str) -> None:
    spec = MSSpec(dim=4, clusters=4, hidden=(8, 4), epochs=2, reassign_window=256)
    result = run_method(method, _task(), spec)
    assert set(result["scenarios"]) == {"all", "0", "1", "2"}
    assert result["scenarios"]["2"]["n"] < result["scenarios"]["0"]["n"]
    assert all(0.0 <= r["auc"] <= 1.0 for r in result["scenarios"].values())
    assert result["memory_bytes"] > 0


def test_histories_hold_only_earlier_events_right_aligned() -> None:
    # user 0: items 5, 6, 7 at t=1, 3, 10; user 1: item 9 at t=2
    log = EventLog(users=np.array([0, 1, 0, 0]), items=np.array([5, 9, 6, 7]),
                   behaviours=np.array([0, 0, 3, 0]), scenarios=np.zeros(4, dtype=np.int64),
                   times=np.array([1, 2, 3, 10]), order=np.array([0, 1, 2, 3]),
                   num_users=2, num_items=10, num_scenarios=1, has_behaviours=True)
    hist = build_histories(log, max_len=3, time_buckets=8)
    assert hist.mask.tolist() == [[False] * 3, [False] * 3, [False, False, True],
                                  [False, True, True]]
    assert hist.items[3, 1:].tolist() == [5, 6] and hist.behaviours[3, 2] == 3
    assert hist.gaps[3, 1:].tolist() == [3, 3]  # floor(log2(1 + 9)), floor(log2(1 + 7))


def _behaviour_csv(path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    rows = ["user,item,value,timestamp,event_type"]
    for t in range(600):
        u = int(torch.randint(20, (1,), generator=gen))
        i = (u % 4) * 10 + int(torch.randint(10, (1,), generator=gen))  # users stay in a block
        kind = "purchase" if t % 7 == 0 else "click"
        rows.append(f"u{u},i{i},1,{t},{kind}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_dupn_and_deepfm_stream_on_identical_batches(tmp_path: Path) -> None:
    from cli.evaluation.sequences import load_events

    log = load_events(_behaviour_csv(tmp_path / "e.csv"), "csv")
    spec = SeqSpec(dim=4, clusters=4, max_len=5, batch_events=64, hidden=8, reassign_every=3,
                   reassign_window=256)
    dupn, deepfm = run_stream(log, spec)
    assert dupn["samples"] == deepfm["samples"] == 1200
    assert 0 <= dupn["auc"] <= 1 and 0 <= deepfm["auc"] <= 1
    assert dupn["purchase_auc"] is not None and deepfm["purchase_auc"] is None


def _scenario_csv(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    rows = ["user,item,value,scenario"]
    for _ in range(500):
        u, i = (int(torch.randint(n, (1,), generator=gen)) for n in (20, 30))
        s = "app" if u % 3 else "web"
        rows.append(f"u{u},i{i},{float((u + i) % 2 == (s == 'web'))},{s}")
    data = tmp_path / "s.csv"
    data.write_text("\n".join(rows) + "\n")
    return data


def _preset(tmp: Path, **fields: object) -> str:
    path = tmp / "preset.json"
    path.write_text(json.dumps(fields))
    return str(path)


def test_cli_saml_reads_the_scenario_column(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = _scenario_csv(tmp_path)
    code = main(["--data", str(data), "--format", "csv", "--model", "saml", "--dim", "4",
                 "--clusters", "4", "--methods", "cel,full", "--json", "--quiet",
                 "--preset", _preset(tmp_path, epochs=2)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "saml" and [r["method"] for r in report["results"]] == [
        "cel", "full"]
    assert set(report["results"][0]["scenarios"]) == {"all", "0", "1"}
    # offline SAML builds on the shared DeepFM and reports it beside its own AUC
    for result in report["results"]:
        assert set(result["shared"]) == {"all", "0", "1"}
        assert 0 <= result["shared"]["all"]["auc"] <= 1


def test_cli_saml_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--protocol stream (no training part: it crashed on the empty scenario column and
    started from a NaN logit); cold buckets count earlier events of the stream."""
    code = main(["--data", str(_scenario_csv(tmp_path)), "--format", "csv", "--model", "saml",
                 "--dim", "4", "--clusters", "4", "--protocol", "stream", "--methods", "cel,full",
                 "--json", "--quiet", "--device", "cpu"])
    assert code == 0
    for result in json.loads(capsys.readouterr().out)["results"]:
        assert 0 < result["logloss"] < 5 and 0 <= result["auc"] <= 1
        buckets = result["buckets"]["item"]
        assert buckets["0"]["n"] == 30 and sum(b["n"] for b in buckets.values()) == 500
        # SAML streams beside the shared DeepFM it builds on; with 500 events no scenario
        # has the 1,000 the gate needs, so what is served is the shared model's
        assert result["shared"]["all"]["n"] == 500
        assert result["scenarios"]["all"]["auc"] == pytest.approx(
            result["shared"]["all"]["auc"], abs=1e-6)


def _gate_batch(n: int, scenario: int, gen: torch.Generator, saml_edge: float):
    """A batch of one scenario: the shared model predicts 0.5; SAML moves towards the label
    by ``saml_edge`` (negative: away from it)."""
    labels = (torch.rand(n, generator=gen) < 0.5).float()
    shared = torch.full((n,), 0.5)
    saml = 0.5 + saml_edge * (2 * labels - 1)
    return torch.full((n,), scenario), labels, saml, shared


def test_scenario_gate_serves_saml_only_where_it_has_proved_better() -> None:
    gen = torch.Generator().manual_seed(0)
    gate = ScenarioGate(2, min_events=400)
    for _ in range(5):
        for batch in (_gate_batch(100, 0, gen, 0.2), _gate_batch(100, 1, gen, -0.2)):
            scen, labels, saml, shared = batch
            served = gate.choose(scen, saml, shared)
            gate.observe(scen, labels, saml, shared)
    assert gate.served.tolist() == [True, False]  # scenario 0: SAML; 1: the shared model
    assert torch.equal(served, shared)  # the last batch was scenario 1's
    scen, labels, saml, shared = _gate_batch(10, 0, gen, 0.2)
    assert torch.equal(gate.choose(scen, saml, shared), saml)


def test_scenario_gate_waits_for_evidence() -> None:
    """Before ``min_events``, and on a lead as likely as not (noise), the shared model stays."""
    gen = torch.Generator().manual_seed(1)
    gate = ScenarioGate(1, min_events=400)
    scen, labels, saml, shared = _gate_batch(300, 0, gen, 0.2)
    gate.observe(scen, labels, saml, shared)
    assert not bool(gate.served[0])  # clearly better, but on 300 events
    noisy = ScenarioGate(1, min_events=10)
    for _ in range(20):
        labels = (torch.rand(100, generator=gen) < 0.5).float()
        saml = 0.5 + 0.05 * torch.randn(100, generator=gen)  # no signal, just jitter
        noisy.observe(torch.zeros(100, dtype=torch.long), labels, saml, torch.full((100,), 0.5))
        assert not bool(noisy.served[0])


def test_holdout_check_needs_a_lead_beyond_noise() -> None:
    """The offline check keeps a deviation for a clear lead on both counts, not for a lead
    within noise, nor for a log-loss lead that ranks worse."""
    gen = torch.Generator().manual_seed(2)
    _, labels, saml, shared = _gate_batch(2000, 0, gen, 0.1)
    assert beats_shared(labels, saml, shared, z=2.0)
    labels = (torch.rand(2000, generator=gen) < 0.5).float()
    jitter = 0.5 + 0.02 * torch.randn(2000, generator=gen)  # no signal: AUC near 0.5 by luck
    shared = torch.full((2000,), 0.5)
    assert not beats_shared(labels, jitter, shared, z=2.0)
    # a lower log loss (the shared model is overconfident) but a worse ranking
    flipped = torch.rand(2000, generator=gen) < 0.2
    overconfident = torch.where(flipped ^ (labels > 0), 0.99, 0.01)  # AUC about 0.8
    flat = 0.5 + 0.001 * torch.randn(2000, generator=gen)  # AUC about 0.5
    assert not beats_shared(labels, flat, overconfident, z=0.0)
    assert beats_shared(labels, overconfident, flat, z=0.0) is False  # ranks, loses log loss


def test_pooled_check_drops_a_deviation_that_shifts_its_scenario() -> None:
    """Each scenario ranks better with its deviation, but scenario 1's also lifts its
    scores above scenario 0's positives: it goes (the weaker one first), scenario 0's stays."""
    gen = torch.Generator().manual_seed(3)
    scenarios = torch.arange(4000) % 2
    truth = torch.randn(4000, generator=gen) + torch.where(scenarios == 0, 1.0, -1.0)
    labels = (torch.rand(4000, generator=gen) < torch.sigmoid(truth)).float()
    shared = truth + torch.randn(4000, generator=gen)  # noisy, but levelled right
    better = truth + 0.3 * torch.randn(4000, generator=gen)
    lifted = torch.where(scenarios == 1, better + 4.0, better)
    assert pooled_drops(labels, scenarios, shared, lifted, {0: 0.05, 1: 0.01}) == [1]
    assert pooled_drops(labels, scenarios, shared, better, {0: 0.05, 1: 0.01}) == []


def test_cli_dupn_needs_the_stream_protocol(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = _behaviour_csv(tmp_path / "e.csv")
    assert main(["--data", str(data), "--format", "csv", "--model", "dupn", "--json",
                 "--quiet"]) == 2
    code = main(["--data", str(data), "--format", "csv", "--model", "dupn", "--protocol",
                 "stream", "--dim", "4", "--clusters", "4", "--methods", "cel", "--json",
                 "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert 0 <= result["auc"] <= 1 and result["purchase_auc"] is not None
    # CEL tables keep an own bias per item by default: one float per item, plus the bias
    # column of each of the 4 cluster rows
    assert main(["--data", str(data), "--format", "csv", "--model", "dupn", "--protocol",
                 "stream", "--dim", "4", "--clusters", "4", "--methods", "cel", "--json",
                 "--quiet", "--preset", _preset(tmp_path, entity_bias=False,
                                                table_lr=0.01)]) == 0
    plain = json.loads(capsys.readouterr().out)["results"][0]
    items = len({line.split(",")[1] for line in data.read_text().splitlines()[1:]})
    assert result["memory_bytes"] - plain["memory_bytes"] == 4 * items + 4 * 4


def test_stream_warm_up_learns_without_scoring(tmp_path: Path) -> None:
    from cli.evaluation.sequences import load_events

    log = load_events(_behaviour_csv(tmp_path / "e.csv"), "csv")
    base = dict(dim=4, clusters=4, max_len=5, batch_events=64, hidden=8, reassign_every=0)
    cold = run_stream(log, SeqSpec(start=200, limit=300, **base), ("deepfm",))[0]
    warm = run_stream(log, SeqSpec(start=200, warmup=200, limit=300, **base), ("deepfm",))[0]
    assert cold["events"] == warm["events"] == 300
    assert cold["samples"] == warm["samples"] == 600  # only events 200..499 are scored
    assert cold["auc"] != warm["auc"]  # the warm-up events were learnt from


def test_user_parts_are_disjoint_whole_sequences_in_replay_order(tmp_path: Path) -> None:
    from cli.evaluation.sequences import load_events, user_part

    log = load_events(_behaviour_csv(tmp_path / "e.csv"), "csv")
    parts = [user_part(log, 3, k, seed=0) for k in range(3)]
    users = [set(p.users.tolist()) for p in parts]
    assert not (users[0] & users[1]) and not (users[1] & users[2])
    assert sum(len(p) for p in parts) == len(log)
    for p in parts:
        assert sorted(p.order.tolist()) == list(range(len(p)))
        assert (np.diff(p.times[p.order]) >= 0).all()  # still replayed in time order
        whole = log.users == p.users[0]  # a user keeps every one of their events
        assert int((p.users == p.users[0]).sum()) == int(whole.sum())
