"""One preset declares the offline defaults; the eval, the benchmarks and the trainer read it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from celrec.presets import Preset, PresetError, load_preset
from celrec.settings import Settings
from cli.evaluation.cli import build_parser, inapplicable, main, spec_from_args
from cli.evaluation.runner import RunSpec, evaluate
from cli.evaluation.served import CelrecStream
from tests.unit.random_ratings import random_prepared
from trainer.learners import make_learner

ROOT = Path(__file__).resolve().parents[2]


def _bench_module(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_eval_and_the_accuracy_bench_read_the_same_preset() -> None:
    preset = Preset()
    eval_spec = spec_from_args(build_parser().parse_args([]), ("cel",), load_preset())
    bench = _bench_module("accuracy_ml100k")
    bench_spec = bench.run_spec("cel", bench.build_parser().parse_args([]))
    assert eval_spec.preset == bench_spec.preset == preset
    assert eval_spec.train == bench_spec.train == preset.train_config(seed=0)
    personal = bench.run_spec("cel+personal", bench.build_parser().parse_args([]))
    assert personal.train.personal_epochs == 10  # the variant's one change
    assert personal.preset.model_copy(update={"personal_epochs": 0}) == preset


def test_the_stream_eval_runs_the_trainers_settings() -> None:
    """``celrec eval --protocol stream`` and bench/prequential.py (both CelrecStream) build
    the streaming trainer's learner from the trainer's own settings object."""
    served = CelrecStream("binary", seed=0, device="cpu")
    trainer = make_learner(Settings(_env_file=None, seed=0, device="cpu"))
    assert served.learner.model.config == trainer.model.config


def test_the_preset_holds_the_validated_choices() -> None:
    preset = Preset()
    assert preset.prior_max_count == 10 and preset.prior_exclusive  # a row of rare items
    assert 0 < preset.reassign_min_count <= preset.prior_max_count  # rare items may leave
    assert preset.cel_reg < preset.reg  # shared rows overfit less than full tables
    assert preset.entity_bias and preset.entity_bias_prior > 0
    assert preset.entity_scale and preset.entity_scale_prior > 0
    assert preset.extra_rows_for("random") == 5 and preset.extra_rows_for("stream") == 0
    # the biases-only floor: a held-out share picks the epochs and the start
    assert 0 < preset.holdout < 0.5 and preset.bias_start_prior >= 0
    assert preset.train_config().holdout == preset.holdout


def test_a_preset_file_changes_fields_and_rejects_unknown_ones(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"epochs": 3, "entity_scale": False}))
    preset = load_preset(good)
    assert preset.epochs == 3 and not preset.entity_scale and preset.lr == Preset().lr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epocs": 3}))
    with pytest.raises(PresetError, match="epocs"):
        load_preset(bad)
    bad.write_text(json.dumps({"lr": -1}))
    with pytest.raises(PresetError, match="lr"):
        load_preset(bad)
    with pytest.raises(PresetError, match="missing.json"):
        load_preset(tmp_path / "missing.json")


def test_eval_help_is_short_and_shows_and_reads_the_preset(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = [a for a in build_parser()._actions if a.option_strings]
    assert len(options) <= 20
    assert main(["--show-preset"]) == 0
    assert json.loads(capsys.readouterr().out) == Preset().model_dump()
    (tmp_path / "p.json").write_text('{"nope": 1}')
    assert main(["--preset", str(tmp_path / "p.json"), "--data", "x"]) == 2
    assert "nope" in capsys.readouterr().err


def test_eval_warns_about_options_the_choice_ignores() -> None:
    def notes(*argv: str) -> list[str]:
        args = build_parser().parse_args(list(argv))
        return inapplicable(args, tuple((args.methods or "full,hash,cel").split(",")))

    assert notes() == []
    assert any("--side" in n for n in notes("--model", "saml", "--side", "both"))
    assert any("--clusters" in n for n in notes("--methods", "full", "--clusters", "9"))
    assert any("--train" in n for n in notes("--train", "u1.base"))
    assert any("--preset" in n for n in notes("--protocol", "stream", "--methods", "celrec",
                                              "--preset", "p.json"))


def test_eval_reports_the_own_scalars_in_memory_but_not_in_the_table() -> None:
    prep = random_prepared()
    spec = RunSpec(methods=("full", "cel"), dim=4, clusters=3, device="cpu",
                   preset=load_preset(epochs=1, extra_rows=0))
    full, cel = evaluate(prep, spec)
    assert full["memory_bytes"] == full["table_bytes"] == 30 * 5 * 4
    assert cel["table_bytes"] == 3 * 5 * 4
    # assignment + own bias + own scale per item
    assert cel["memory_bytes"] == cel["table_bytes"] + 30 * (1 + 4 + 4)
    assert cel["table_compression_ratio"] > cel["compression_ratio"]
