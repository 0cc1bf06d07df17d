"""The tuned evaluation defaults reach the trainers they configure."""

from __future__ import annotations

import dataclasses

from cel.offline import TrainConfig
from cel.online import OnlineCELConfig
from cli.evaluation.cli import build_parser
from cli.evaluation.runner import ONLINE_RATING, RunSpec, evaluate
from tests.unit.random_ratings import random_prepared


def test_cli_defaults_turn_on_the_prior_row_and_cel_l2() -> None:
    args = build_parser().parse_args([])
    assert args.prior_max_count == 10 and args.prior_exclusive  # a row of rare items only
    assert 0 < args.reassign_min_count <= args.prior_max_count  # rare items may still leave
    assert args.cel_reg < args.reg  # shared rows overfit less than full tables


def test_online_rating_overrides_are_valid_config_fields_and_lower_the_click_lr() -> None:
    names = {f.name for f in dataclasses.fields(OnlineCELConfig)}
    assert set(ONLINE_RATING) <= names
    tuned = OnlineCELConfig(loss="mse", **ONLINE_RATING)
    assert tuned.lr < OnlineCELConfig().lr  # the click defaults stay untouched


def test_cli_defaults_give_cel_own_item_biases_and_scales_with_shrinkage_priors() -> None:
    args = build_parser().parse_args([])
    assert args.entity_bias and args.entity_bias_prior > 0
    assert args.entity_scale and args.entity_scale_prior > 0
    off = build_parser().parse_args(["--no-entity-bias", "--no-entity-scale"])
    assert not off.entity_bias and not off.entity_scale


def test_eval_reports_the_own_scalars_in_memory_but_not_in_the_table() -> None:
    prep = random_prepared()
    spec = RunSpec(methods=("full", "cel"), dim=4, clusters=3, device="cpu",
                   train=TrainConfig(epochs=1, entity_bias_prior=10.0), entity_bias=True,
                   entity_scale=True)
    full, cel = evaluate(prep, spec)
    assert full["memory_bytes"] == full["table_bytes"] == 30 * 5 * 4
    assert cel["table_bytes"] == 3 * 5 * 4
    # assignment + own bias + own scale per item
    assert cel["memory_bytes"] == cel["table_bytes"] + 30 * (1 + 4 + 4)
    assert cel["table_compression_ratio"] > cel["compression_ratio"]
