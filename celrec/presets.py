"""The one preset of defaults for offline training and evaluation.

``celrec eval`` (random, folds and the offline stream methods), ``bench/accuracy_ml100k.py``
and the other offline benchmarks read every training default from ``Preset``; nothing else
declares them. The streaming trainer's defaults are its settings (``celrec.settings``), which
``celrec eval --protocol stream`` and ``bench/prequential.py`` read the same way.

A preset file (JSON, any subset of the fields) changes fields: ``celrec eval --preset
my.json``; ``celrec eval --show-preset`` prints the preset in effect. Values were chosen on
cuts of training data only (``bench/results/accuracy_history.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cel.clusters import KEEP_PROB
from cel.offline import TrainConfig


class PresetError(ValueError):
    """A preset file that cannot be read or names an unknown field."""


class Preset(BaseModel):
    """Every default of offline training (``cel.offline.TrainConfig``) and of the tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1, description="passes over the training data")
    batch_size: int = Field(1024, ge=1, description="examples per gradient step")
    lr: float = Field(0.005, gt=0, description="Adam learning rate (tables and model)")
    reg: float = Field(0.12, ge=0, description="per-example L2 of full, hash and dhash tables")
    cel_reg: float = Field(0.1, ge=0, description="per-example L2 when a side is clustered")
    reassign_epochs: int = Field(
        15, ge=0, description="reassign after each epoch up to this one; the last epochs "
                              "train on fixed clusters")
    keep_prob: float = Field(KEEP_PROB, ge=0, le=1,
                             description="damping: the chance an entity keeps its cluster")
    prior_max_count: int = Field(
        10, ge=-1, description="entities with at most this many training interactions share "
                               "a dedicated prior row (-1: off)")
    prior_exclusive: bool = Field(
        True, description="only entities with at most prior_max_count interactions may move "
                          "into the prior row")
    reassign_min_count: int = Field(
        5, ge=0, description="entities with fewer interactions are never reassigned")
    entity_bias: bool = Field(
        True, description="cel: each entity of a clustered side keeps an own bias (counted "
                          "in its memory)")
    entity_bias_prior: float = Field(
        10.0, ge=0, description="shrinkage of the own biases towards the cluster's, as a count")
    entity_scale: bool = Field(
        True, description="cel: each entity scales its cluster's vector by an own factor")
    entity_scale_prior: float = Field(10.0, ge=0,
                                      description="shrinkage of the own scales towards 1")
    extra_rows: int = Field(
        5, ge=0, description="cel, offline protocols: more weighted cluster rows per entity "
                             "(a sparse code; a small integer and a float each)")
    stream_extra_rows: int = Field(
        0, ge=0, description="the same for the offline stream methods (cel in --protocol "
                             "stream: 5 rows cost 2.5x the memory for no gain)")
    extra_rows_prior: float = Field(10.0, ge=0,
                                    description="shrinkage of the extra weights towards 0")
    extra_rows_min_count: int = Field(20, ge=0,
                                      description="entities with fewer interactions get none")
    bias_start_prior: float = Field(
        5.0, ge=-1, description="ratings: the biases-only model (this count as its prior) is "
                                "a candidate start for every bias, taken when the holdout "
                                "prefers it (-1: never)")
    holdout: float = Field(
        0.1, ge=0, lt=1, description="share of the training data held out to choose the "
                                     "epochs (0: the start alone) and the start; the model "
                                     "then trains on all of it (0: off, all epochs)")
    holdout_z: float = Field(
        2.0, ge=0, description="ratings: the held-out epochs are kept only when they beat the "
                               "biases-only model on the holdout by this many standard errors "
                               "(paired); else the biases alone (0: off)")
    personal_epochs: int = Field(
        0, ge=0, description="cel: epochs of own vectors on fixed clusters after training "
                             "(the cel+personal variant; 0: off)")
    personal_l2: float = Field(0.1, ge=0,
                               description="pull of the own vectors towards the cluster row")
    negatives: int = Field(1, ge=1,
                           description="sampled negatives per positive for implicit data")
    table_lr: float | None = Field(
        None, gt=0, description="--model dupn: Adam learning rate of the tables (None: lr)")

    def train_config(self, seed: int = 0) -> TrainConfig:
        """The offline trainer's configuration under this preset."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, reg=self.reg,
            cel_reg=self.cel_reg, reassign_epochs=self.reassign_epochs,
            keep_prob=self.keep_prob, prior_max_count=self.prior_max_count,
            prior_exclusive=self.prior_exclusive, reassign_min_count=self.reassign_min_count,
            entity_bias_prior=self.entity_bias_prior,
            entity_scale_prior=self.entity_scale_prior,
            extra_rows_prior=self.extra_rows_prior,
            extra_rows_min_count=self.extra_rows_min_count,
            bias_start_prior=self.bias_start_prior, holdout=self.holdout,
            holdout_z=self.holdout_z, personal_epochs=self.personal_epochs,
            personal_l2=self.personal_l2, seed=seed)

    def extra_rows_for(self, protocol: str) -> int:
        return self.stream_extra_rows if protocol == "stream" else self.extra_rows


def load_preset(path: str | Path | None = None, **changes: object) -> Preset:
    """The default preset, with the fields of the JSON file ``path`` and ``changes``."""
    fields: dict[str, object] = {}
    if path is not None:
        try:
            fields = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PresetError(f"preset {path}: {exc}") from exc
        if not isinstance(fields, dict):
            raise PresetError(f"preset {path}: expected a JSON object of fields")
    try:
        return Preset(**{**fields, **changes})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise PresetError(f"preset {path or '(defaults)'}: {problems}") from exc
