"""The tuned evaluation defaults reach the trainers they configure."""

from __future__ import annotations

import dataclasses

from cel.online import OnlineCELConfig
from celrec.evaluation.cli import build_parser
from celrec.evaluation.runner import ONLINE_RATING


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
