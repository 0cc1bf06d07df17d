"""Multi-scenario CTR evaluation: SAML vs one shared DeepFM vs separate per-scenario DeepFMs.

All three sit on the same kind of tables (CEL with GPCA splits from ``GradientSplitter``, or
full), train with the same optimiser, batch size and epochs, and keep the epoch with the best
AUC on a validation part of the training data (the small scenario's separate model would
otherwise overfit, which would flatter SAML). AUC is reported per scenario and overall.

CEL tables: GPCA splits every ``split_every`` steps while a table grows; loss-based
reassignment of the entities in a window of the training part after each epoch and, with
``reassign_every``, every that many steps (k-means-like alternation needs many rounds: on
the planted-group data, once per epoch never recovered the groups).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from cel.build import full_bytes, make_recommender
from cel.clusters import reassign_by_trial
from cel.grad_split import GradientSplitter
from cel.interactions import Interactions
from cel.metrics import auc, logloss, logloss_per_example, proven_lead
from cel.offline import OfflineCEL
from cel.recommender import Recommender
from cel.saml import SAML, SAMLConfig
from cel.scenario_cells import CellDeviation, coarse_groups, fit_cells
from cel.tables import ClusteredEmbedding, restore, snapshot
from celrec.presets import Preset
from cli.evaluation.runner import RunSpec, _result, earlier_counts, recommender_for

MS_METHODS = ("saml", "shared", "separate")


@dataclass
class MSData:
    """Samples of a multi-scenario CTR set; ``context`` are extra categorical fields."""

    users: torch.Tensor
    items: torch.Tensor
    scenarios: torch.Tensor
    labels: torch.Tensor
    context: torch.Tensor | None = None  # (n, F)
    history: torch.Tensor | None = None  # (n, L) item ids
    history_mask: torch.Tensor | None = None  # (n, L) True at real steps
    base: torch.Tensor | None = None  # (n,) a trained shared model's logits (SAML's base)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, index: torch.Tensor | slice) -> MSData:
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return MSData(self.users[index], self.items[index], self.scenarios[index],
                      self.labels[index], pick(self.context), pick(self.history),
                      pick(self.history_mask), pick(self.base))


@dataclass
class MSTask:
    train: MSData
    test: MSData
    num_users: int
    num_items: int
    num_scenarios: int
    context_cardinalities: tuple[int, ...] = ()


@dataclass
class MSSpec:
    table: str = "cel"  # "cel" or "full"
    dim: int = 16
    clusters: int = 64
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 8
    batch_size: int = 512
    lr: float = 0.003
    weight_decay: float = 0.0  # Adam L2, on every parameter
    split_every: int = 5
    reassign_window: int = 8192  # samples scored per side after each epoch (0: no reassign)
    # also reassign every this many optimiser steps while a table still grows (0: only
    # after each epoch)
    reassign_every: int = 0
    reassign_epochs: int = 1_000  # the in-epoch reassignments stop after this many epochs
    saml_reassign_by: str = "full"  # SAML: score reassignment by "full" loss or "aux" alone
    valid_fraction: float = 0.1
    # offline: each scenario holds out at least this many events (at most half of its own),
    # so the held-out check can see a small scenario's lead
    min_holdout_events: int = 500
    seed: int = 0
    max_branches: int = 8
    scenario_rows: bool | None = None  # SAML's per-branch rows; None: only on CEL tables
    # scenario cells (cel.scenario_cells): the coarse group counts and ridges tried, the
    # pair with the lowest held-out log loss kept per scenario
    cell_groups: tuple[int, ...] = (2, 4, 8, 16)
    cell_ridges: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    extra: dict = field(default_factory=dict)


class _Fitted:
    """A model behind one interface: ``loss(batch)``, ``predict(batch)``, its tables."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def loss(self, b: MSData) -> torch.Tensor:
        raise NotImplementedError

    def sample_losses(self, b: MSData) -> torch.Tensor:
        raise NotImplementedError

    def tables(self) -> dict[str, ClusteredEmbedding]:
        raise NotImplementedError

    def predict(self, b: MSData) -> torch.Tensor:
        raise NotImplementedError

    def splitters(self, optimizer: torch.optim.Optimizer, every: int) -> list[GradientSplitter]:
        raise NotImplementedError


class _SAMLFit(_Fitted):
    """``reassign_by="aux"``: reassignment scores the auxiliary network's loss alone (the
    global representation the assignment belongs to; a fraction of the cost of running every
    branch once per candidate cluster); ``"full"``: the training loss."""

    def __init__(self, module: torch.nn.Module, reassign_by: str = "full",
                 on_base: bool = False) -> None:
        super().__init__(module)
        if reassign_by not in ("full", "aux"):
            raise ValueError(f"reassign_by must be 'full' or 'aux', got {reassign_by!r}")
        self.reassign_by = reassign_by
        # built on a trained shared model (``build_saml(base=...)``): its tables are frozen
        self.on_base = on_base

    def _out(self, b: MSData, branches: bool = True):
        return self.module(b.users, b.items, b.scenarios, b.context, b.history, b.history_mask,
                           branches=branches, base=b.base)

    def loss(self, b: MSData) -> torch.Tensor:
        return self.module.loss(self._out(b), b.labels)

    def sample_losses(self, b: MSData) -> torch.Tensor:
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        if self.reassign_by == "aux":
            return bce(self._out(b, branches=False).aux_logit, b.labels, reduction="none")
        out = self._out(b)
        return (bce(out.logit, b.labels, reduction="none")
                + self.module.config.aux_weight * bce(out.aux_logit, b.labels, reduction="none"))

    def tables(self) -> dict[str, ClusteredEmbedding]:
        if self.on_base:  # the shared model's clusters, already optimised: kept as they are
            return {}
        return self.module.clustered_tables()

    @torch.no_grad()
    def predict(self, b: MSData) -> torch.Tensor:
        return torch.sigmoid(self._out(b).logit)

    def splitters(self, optimizer: torch.optim.Optimizer, every: int) -> list[GradientSplitter]:
        model: SAML = self.module
        if self.on_base:
            return []
        return [GradientSplitter(t, every, optimizer,
                                 lambda p, c, s=side: model.on_split(s, p, c))
                for side, t in model.clustered_tables().items()]


class _DeepFMFit(_Fitted):
    """``cel.models.DeepFM`` on a Recommender; ``scenario_field`` adds the scenario as a field."""

    def __init__(self, module: Recommender, scenario_field: bool) -> None:
        super().__init__(module)
        self.scenario_field = scenario_field

    def _interactions(self, b: MSData) -> Interactions:
        fields = [b.scenarios.unsqueeze(1)] if self.scenario_field else []
        if b.context is not None:
            fields.append(b.context)
        ctx = torch.cat(fields, dim=1) if fields else None
        return Interactions(b.users, b.items, b.labels, ctx)

    def loss(self, b: MSData) -> torch.Tensor:
        return self.sample_losses(b).mean()

    def sample_losses(self, b: MSData) -> torch.Tensor:
        x = self._interactions(b)
        return self.module.loss(self.module.score(x), x.labels)

    def tables(self) -> dict[str, ClusteredEmbedding]:
        return {s: self.module.table(s) for s in self.module.clustered_sides()}

    @torch.no_grad()
    def predict(self, b: MSData) -> torch.Tensor:
        return torch.sigmoid(self.module.score(self._interactions(b)))

    def splitters(self, optimizer: torch.optim.Optimizer, every: int) -> list[GradientSplitter]:
        return [GradientSplitter(self.module.table(s), every, optimizer)
                for s in self.module.clustered_sides()]


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def build_saml(task: MSTask, spec: MSSpec, base: Recommender | None = None,
               freeze_base: bool = True) -> _SAMLFit:
    """``base``: a shared model whose tables SAML builds on (with their clusters) and whose
    logit it starts from (``task``'s data must carry it in ``base``); frozen unless
    ``freeze_base`` is False (a stream, where the shared model keeps learning beside it)."""
    torch.manual_seed(spec.seed)
    cfg = SAMLConfig(num_users=task.num_users, num_items=task.num_items, dim=spec.dim,
                     user_clusters=spec.clusters, item_clusters=spec.clusters, table=spec.table,
                     num_scenarios=min(task.num_scenarios, spec.max_branches),
                     max_branches=max(spec.max_branches, 1), hidden=spec.hidden,
                     context_cardinalities=task.context_cardinalities,
                     use_history=task.train.history is not None,
                     scenario_rows=(spec.table == "cel" if spec.scenario_rows is None
                                    else spec.scenario_rows))
    if base is not None:
        for p in base.parameters():
            p.requires_grad_(not freeze_base)
        model = SAML(cfg, tables=(base.user_table, base.item_table))
        model.start_from_base()
        return _SAMLFit(model, spec.saml_reassign_by, on_base=True)
    model = SAML(cfg)
    # The stream protocol has no training part: start from one half, as the stream learns.
    start = _logit(float(task.train.labels.mean())) if len(task.train.labels) else 0.0
    with torch.no_grad():  # branches output deviations from the auxiliary logit
        model.aux_head.bias.fill_(start)
    return _SAMLFit(model, spec.saml_reassign_by)


def build_deepfm(task: MSTask, spec: MSSpec, scenario_field: bool,
                 labels: torch.Tensor) -> _DeepFMFit:
    cards = ((task.num_scenarios,) if scenario_field else ()) + task.context_cardinalities
    rec = make_recommender(spec.table, task.num_users, task.num_items, "deepfm", spec.dim,
                           "both", spec.clusters, "binary", "cpu", cards, seed=spec.seed)
    with torch.no_grad():
        rec.model.global_bias.fill_(_logit(float(labels.mean())) if len(labels) else 0.0)
    return _DeepFMFit(rec, scenario_field)


def predict_all(fitted: _Fitted, data: MSData, chunk: int = 8192) -> torch.Tensor:
    if len(data) == 0:
        return torch.empty(0)
    return torch.cat([fitted.predict(data.subset(slice(s, s + chunk)))
                      for s in range(0, len(data), chunk)])


def fit(fitted: _Fitted, train: MSData, spec: MSSpec,
        on_epoch: Callable[[int, _Fitted], None] | None = None,
        valid: MSData | None = None) -> dict:
    """Train ``spec.epochs`` epochs, keep the epoch with the best validation AUC (on
    ``valid``, else on ``spec.valid_fraction`` of ``train``); ``on_epoch(epoch, fitted)`` is
    called after each epoch's reassignment (diagnostics)."""
    gen = torch.Generator().manual_seed(spec.seed)
    if valid is None:
        perm = torch.randperm(len(train), generator=gen)
        n_valid = int(len(train) * spec.valid_fraction) if len(train) >= 20 else 0
        valid, learn = train.subset(perm[:n_valid]), train.subset(perm[n_valid:])
    else:
        n_valid, learn = len(valid), train
    optimizer = torch.optim.Adam(fitted.module.parameters(), lr=spec.lr,
                                 weight_decay=spec.weight_decay)
    splitters = fitted.splitters(optimizer, spec.split_every)
    best, best_auc, curve, steps, best_epoch = None, -1.0, [], 0, None
    if n_valid and isinstance(fitted, _SAMLFit) and fitted.on_base:
        # the start is exactly the shared model: a candidate like every epoch, so SAML
        # keeps it where its branches do not beat it on held-out data
        fitted.module.eval()
        best_auc = auc(predict_all(fitted, valid), valid.labels) or -1.0
        best, best_epoch = snapshot(fitted.module), 0
    try:
        for epoch in range(spec.epochs):
            fitted.module.train()
            order = torch.randperm(len(learn), generator=gen)
            for start in range(0, len(learn), spec.batch_size):
                batch = learn.subset(order[start:start + spec.batch_size])
                optimizer.zero_grad(set_to_none=True)
                fitted.loss(batch).backward()
                optimizer.step()
                for s in splitters:
                    s.step()
                steps += 1
                if (spec.reassign_every and steps % spec.reassign_every == 0
                        and epoch < spec.reassign_epochs):
                    fitted.module.eval()
                    reassign(fitted, learn, spec, gen)
                    fitted.module.train()
            fitted.module.eval()
            reassign(fitted, learn, spec, gen)
            if on_epoch is not None:
                on_epoch(epoch, fitted)
            if n_valid:
                value = auc(predict_all(fitted, valid), valid.labels)
                value = -1.0 if value is None else value
                curve.append(value)
                if value > best_auc:
                    best_auc, best, best_epoch = value, snapshot(fitted.module), epoch + 1
    finally:
        for s in splitters:
            s.close()
    if best is not None:
        restore(fitted.module, best)
    return {"valid_auc": curve, "best_epoch": best_epoch}


def reassign(fitted: _Fitted, data: MSData, spec: MSSpec, gen: torch.Generator) -> int:
    """Loss-based reassignment of the entities in a random window of the training data."""
    if spec.reassign_window <= 0 or len(data) == 0:
        return 0
    window = data.subset(torch.randperm(len(data), generator=gen)[:spec.reassign_window])
    moved = 0
    with torch.no_grad():
        for side, table in fitted.tables().items():
            ids = window.users if side == "user" else window.items
            moved += len(reassign_by_trial(table, ids, lambda: fitted.sample_losses(window),
                                           gen))
    return moved


def per_scenario(pred: torch.Tensor, data: MSData, num_scenarios: int) -> dict:
    out = {"all": {"n": len(data), "auc": auc(pred, data.labels)}}
    for k in range(num_scenarios):
        mask = data.scenarios == k
        out[str(k)] = {"n": int(mask.sum()), "auc": auc(pred[mask], data.labels[mask])}
    return out


def run_method(method: str, task: MSTask, spec: MSSpec) -> dict:
    if method == "saml":
        fitted = build_saml(task, spec)
        info = fit(fitted, task.train, spec)
        pred = predict_all(fitted, task.test)
        memory = fitted.module.memory_bytes()
    elif method == "shared":
        fitted = build_deepfm(task, spec, True, task.train.labels)
        info = fit(fitted, task.train, spec)
        pred = predict_all(fitted, task.test)
        memory = fitted.module.memory_bytes()
    elif method == "separate":
        pred = torch.zeros(len(task.test))
        info, memory = {}, 0
        for k in range(task.num_scenarios):
            tr = task.train.subset(task.train.scenarios == k)
            te_mask = task.test.scenarios == k
            spec_k = replace(spec, seed=spec.seed + k)
            fitted = build_deepfm(task, spec_k, False, tr.labels)
            info[str(k)] = fit(fitted, tr, spec_k)
            pred[te_mask] = predict_all(fitted, task.test.subset(te_mask))
            memory += fitted.module.memory_bytes()
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(MS_METHODS)}")
    return {"method": method, "scenarios": per_scenario(pred, task.test, task.num_scenarios),
            "memory_bytes": int(memory), "training": info}


def evaluate_multiscenario(task: MSTask, spec: MSSpec,
                           methods: tuple[str, ...] = MS_METHODS) -> list[dict]:
    return [run_method(m, task, spec) for m in methods]


# One check per scenario offline: the same margin as the CEL floor's (``Preset.holdout_z``).
HOLDOUT_Z = 2.0


def higher_auc(labels: torch.Tensor, saml: torch.Tensor, shared: torch.Tensor) -> bool:
    own, plain = auc(saml, labels), auc(shared, labels)
    return own is not None and plain is not None and own > plain


def beats_shared(labels: torch.Tensor, saml: torch.Tensor, shared: torch.Tensor,
                 z: float) -> bool:
    """SAML's predictions beat the shared model's on these events: a higher AUC, and a log
    loss lower by ``z`` standard errors of the summed per-event difference."""
    diff = (logloss_per_example(shared, labels).double()
            - logloss_per_example(saml, labels).double())
    return (bool(proven_lead(diff.sum(), diff.square().sum(), z))
            and higher_auc(labels, saml, shared))


class ScenarioGate:
    """Per scenario, serve SAML's prediction only while, on that scenario's earlier events
    (each scored before it was learnt), it beats the shared model on both counts of the
    offline check: a higher AUC over the latest ``window`` events, and a progressive log
    loss lower by ``z`` standard errors of the summed per-event difference, over at least
    ``min_events``. Judged on the past alone; a lead that noise could explain (checked after
    every batch, so a lenient test would switch on early luck) does not switch."""

    def __init__(self, scenarios: int, z: float = 3.0, min_events: int = 1000,
                 window: int = 10_000) -> None:
        self.z, self.min_events, self.window = z, min_events, window
        k = max(scenarios, 1)
        self.events = torch.zeros(k, dtype=torch.long)
        self.gain = torch.zeros(k, dtype=torch.float64)  # sum of shared - saml log loss
        self.gain2 = torch.zeros(k, dtype=torch.float64)  # its sum of squares
        # per scenario, the latest ``window`` events' (label, saml, shared)
        self.past = [torch.zeros(0, 3) for _ in range(k)]
        self.served = torch.zeros(k, dtype=torch.bool)

    def choose(self, scenarios: torch.Tensor, saml: torch.Tensor,
               shared: torch.Tensor) -> torch.Tensor:
        return torch.where(self.served[scenarios], saml, shared)

    def observe(self, scenarios: torch.Tensor, labels: torch.Tensor, saml: torch.Tensor,
                shared: torch.Tensor) -> None:
        diff = logloss_per_example(shared, labels) - logloss_per_example(saml, labels)
        self.gain.index_add_(0, scenarios, diff)
        self.gain2.index_add_(0, scenarios, diff.square())
        self.events.index_add_(0, scenarios, torch.ones_like(scenarios))
        for k in torch.unique(scenarios).tolist():
            mine = scenarios == k
            rows = torch.stack([labels[mine].float(), saml[mine].float(),
                                shared[mine].float()], 1)
            self.past[k] = past = torch.cat([self.past[k], rows])[-self.window:]
            lead = (self.events[k] >= self.min_events
                    and bool(proven_lead(self.gain[k], self.gain2[k], self.z)))
            self.served[k] = lead and higher_auc(past[:, 0], past[:, 1], past[:, 2])


def saml_stream_on_shared(prep, table: str, args, preset: Preset, spec: MSSpec
                          ) -> tuple[torch.Tensor, torch.Tensor, int, MSData]:
    """SAML in the stream protocol, on the shared DeepFM learning the same stream beside it
    (``celrec eval --model deepfm --side both --protocol stream``, its batches and cluster
    steps): per batch both predict, then SAML learns its deviations from the shared logit
    and the shared model learns the batch. :class:`ScenarioGate` picks, per scenario, which
    of the two is served. Returns the served predictions, the shared model's, memory and
    the stream."""
    from cli.evaluation.runner import ProgressiveRun

    run_spec = RunSpec(methods=(table,), model="deepfm", dim=args.dim, clusters=args.clusters,
                       side="both", protocol="stream", device="cpu", seed=args.seed,
                       preset=preset)
    shared = ProgressiveRun(table, prep, run_spec)
    scenarios = prep.context_cardinalities[0] if prep.context_cardinalities else 1
    data = scenario_data(prep.test)
    task = MSTask(data.subset(slice(0, 0)), data, prep.num_users, prep.num_items, scenarios)
    fitted = build_saml(task, spec, shared.rec, freeze_base=False)
    base_params = {id(p) for p in shared.rec.parameters()}
    optimizer = torch.optim.Adam([p for p in fitted.module.parameters()
                                  if id(p) not in base_params], lr=spec.lr)
    gate = ScenarioGate(scenarios)
    served, shared_preds = [], []
    for _start, batch in shared.batches():
        shared_p = shared.predict(batch)
        logits = torch.logit(shared_p.double(), eps=1e-7).float()
        ms = scenario_data(batch)
        ms.base = logits
        fitted.module.eval()
        saml_p = fitted.predict(ms)
        served.append(gate.choose(ms.scenarios, saml_p, shared_p))
        shared_preds.append(shared_p)
        gate.observe(ms.scenarios, ms.labels, saml_p, shared_p)
        fitted.module.train()
        optimizer.zero_grad(set_to_none=True)
        fitted.loss(ms).backward()
        optimizer.step()
        shared.learn(batch)  # zeroes the gradients SAML's loss left on the shared tables
    memory = fitted.module.memory_bytes()
    empty = torch.empty(0)
    return (torch.cat(served) if served else empty,
            torch.cat(shared_preds) if shared_preds else empty,
            memory, data)


def scenario_data(x: Interactions, base: Recommender | None = None) -> MSData:
    """``celrec eval``'s interactions as multi-scenario samples (the scenario is the first
    context field); ``base``: a trained shared model whose logits they carry."""
    # The stream protocol's empty training part carries a 1-d empty context.
    has = x.context is not None and x.context.ndim == 2 and x.context.shape[1] > 0
    scen = x.context[:, 0] if has else torch.zeros_like(x.users)
    logits = None
    if base is not None:
        with torch.no_grad():
            logits = base.score(x)
    return MSData(x.users, x.items, scen, x.labels, base=logits)


def shared_deepfm(prep, table: str, args, preset: Preset,
                  train: Interactions | None = None) -> Recommender:
    """The shared DeepFM of ``celrec eval --model deepfm --side both --methods TABLE`` on
    the same data (the scenario is its first context field), trained by the offline
    trainer with the preset on ``train`` (default: the training part)."""
    spec = RunSpec(methods=(table,), model="deepfm", dim=args.dim, clusters=args.clusters,
                   side="both", protocol=args.protocol, device="cpu", seed=args.seed,
                   preset=preset)
    rec = recommender_for(table, prep, spec)
    OfflineCEL(rec, spec.train).fit(prep.train if train is None else train)
    rec.eval()
    return rec


def saml_on_shared(prep, table: str, args, preset: Preset, spec: MSSpec
                   ) -> tuple[torch.Tensor, int, MSTask, dict[int, str]]:
    """SAML offline, on the shared DeepFM (``shared_deepfm``): its test predictions, memory,
    the task (test part) they are for, and the deviation served per scenario.

    Deviations are learnt where they can be checked: on a shared model trained on all but a
    holdout of the training data (``holdout_mask``). Two per scenario: SAML's branches
    (epochs chosen on the holdout, the start included) and the scenario's cells
    (``scenario_cells``, refitted on all its events once checked). The prediction is the
    shared model trained on all the training data plus the deviation chosen per scenario.
    (On the shared model's own training data the deviations would chase that model's
    training fit instead.)"""
    scenarios = prep.context_cardinalities[0] if prep.context_cardinalities else 1
    is_held = holdout_mask(scenario_data(prep.train).scenarios, spec)
    part, held = prep.train.subset(~is_held), prep.train.subset(is_held)
    probe_base = shared_deepfm(prep, table, args, preset, part)
    task = MSTask(scenario_data(part, probe_base), scenario_data(held, probe_base),
                  prep.num_users, prep.num_items, scenarios)
    fitted = build_saml(task, spec, probe_base)
    fit(fitted, task.train, spec, valid=task.test)
    test = scenario_data(prep.test, probe_base)
    branches = torch.logit(predict_all(fitted, test).double(), eps=1e-7) - test.base.double()
    checked = task.test
    saml_held = torch.logit(predict_all(fitted, checked).double(), eps=1e-7)
    cells = scenario_cells(probe_base, task, spec)
    # per scenario, of SAML's branch deviation and its scenario cells, the one with the lower
    # held-out log loss among those that beat the shared model on the scenario's holdout
    # (log loss as well as AUC); none of them: the shared model
    deviation = torch.zeros(len(test), dtype=torch.float64)
    chosen: dict[int, str] = {}
    gains: dict[int, float] = {}  # held-out log loss gained per scenario
    shared_held = torch.sigmoid(checked.base)
    held_served = checked.base.double().clone()  # logits served on the holdout
    for k in range(scenarios):
        mine, serve = checked.scenarios == k, test.scenarios == k
        labels = checked.labels[mine]
        held_logits = {"branches": saml_held[mine]}
        if k in cells:
            held_logits["cells"] = (checked.base[mine].double()
                                    + cells[k].deviation(checked.users[mine], checked.items[mine]))
        passed = {name: logloss(torch.sigmoid(held), labels)
                  for name, held in held_logits.items()
                  if beats_shared(labels, torch.sigmoid(held).float(), shared_held[mine],
                                  HOLDOUT_Z)}
        if not passed:
            continue
        chosen[k] = name = min(passed, key=passed.get)
        held_served[mine] = held_logits[name]
        gains[k] = float(logloss(shared_held[mine], labels) - passed[name])
        if name == "cells":  # checked as fitted on the part, served refitted on all events
            deviation[serve] = refit_cells(cells[k], task, k)(test.users[serve],
                                                              test.items[serve]).double()
        else:
            deviation[serve] = branches[serve]
    for k in pooled_drops(checked.labels, checked.scenarios, checked.base, held_served, gains):
        chosen.pop(k)
        deviation[test.scenarios == k] = 0.0
    base = shared_deepfm(prep, table, args, preset)
    with torch.no_grad():
        shared = base.score(prep.test).double()
    pred = torch.sigmoid(shared + deviation).float()
    report = replace(test, base=shared.float())  # the shared model's own logits
    memory = fitted.module.memory_bytes() + base.user_table.memory_bytes() \
        + base.item_table.memory_bytes() \
        + sum(cells[k].deviation.memory_bytes() for k, name in chosen.items() if name == "cells")
    return (pred, memory, MSTask(task.train, report, prep.num_users, prep.num_items, scenarios),
            chosen)


def pooled_drops(labels: torch.Tensor, scenarios: torch.Tensor, shared: torch.Tensor,
                 served: torch.Tensor, gains: dict[int, float]) -> list[int]:
    """Scenarios whose deviation to drop, weakest first (``gains``: each deviating
    scenario's held-out log-loss gain), until the logits ``served`` rank the pooled holdout
    better than the ``shared`` logits and lose less on it. Each deviation was checked within
    its scenario; this checks how they move the scenarios' scores against each other's."""
    served, dropped = served.double().clone(), []
    for k in sorted(gains, key=gains.get):
        if beats_shared(labels, torch.sigmoid(served).float(), torch.sigmoid(shared).float(),
                        0.0):
            break
        dropped.append(k)
        served[scenarios == k] = shared[scenarios == k].double()
    return dropped


def holdout_mask(scenarios: torch.Tensor, spec: MSSpec) -> torch.Tensor:
    """The offline holdout (True): a seeded ``spec.valid_fraction`` of each scenario's
    training events, but at least ``spec.min_holdout_events`` of them, and at most half."""
    counts = torch.bincount(scenarios).double()[scenarios]
    share = torch.clamp(torch.clamp(spec.min_holdout_events / counts, min=spec.valid_fraction),
                        max=0.5)
    return torch.rand(len(scenarios), generator=torch.Generator().manual_seed(spec.seed),
                      dtype=torch.float64) < share


@dataclass
class ScenarioCells:
    deviation: CellDeviation  # fitted on the training part, for the held-out check
    ridge: float


def scenario_cells(base: Recommender, task: MSTask, spec: MSSpec) -> dict[int, ScenarioCells]:
    """Per scenario with events in both parts, its cell deviation from ``base`` (whose logits
    ``task`` carries): groups from k-means of base's entity rows, cells fitted on
    ``task.train``; the group count and ridge of ``spec`` with the lowest log loss on
    ``task.test`` (the holdout)."""
    with torch.no_grad():
        rows = {side: table(torch.arange(n))[:, :-1] for side, table, n in (
            ("user", base.user_table, task.num_users), ("item", base.item_table, task.num_items))}
    groups = [(coarse_groups(rows["user"], g, spec.seed), coarse_groups(rows["item"], g, spec.seed))
              for g in spec.cell_groups]
    train, held = task.train, task.test
    out: dict[int, ScenarioCells] = {}
    for k in range(task.num_scenarios):
        mine, check = train.scenarios == k, held.scenarios == k
        if not bool(mine.any()) or not bool(check.any()):
            continue
        best = None
        for user_group, item_group in groups:
            for ridge in spec.cell_ridges:
                cell = fit_cells(train.base[mine], train.users[mine], train.items[mine],
                                 train.labels[mine], user_group, item_group, ridge)
                loss = logloss(torch.sigmoid(held.base[check] + cell(held.users[check],
                                                                       held.items[check])),
                               held.labels[check])
                if best is None or loss < best[0]:
                    best = (loss, ScenarioCells(cell, ridge))
        out[k] = best[1]
    return out


def refit_cells(cells: ScenarioCells, task: MSTask, scenario: int) -> CellDeviation:
    """The same groups and ridge, fitted on the scenario's events of both parts."""
    both = [(part, part.scenarios == scenario) for part in (task.train, task.test)]
    users, items, labels, base = (torch.cat([getattr(part, name)[mine] for part, mine in both])
                                  for name in ("users", "items", "labels", "base"))
    dev = cells.deviation
    return fit_cells(base, users, items, labels, dev.user_group, dev.item_group, cells.ridge)


def cli_report(args, preset: Preset) -> dict:
    """``celrec eval --model saml``: the scenario is the CSV's ``scenario`` column (else one)."""
    from cli.evaluation.protocols import prepare

    prep = prepare(args.data, args.format, args.protocol, args.seed, args.train, args.test,
                   preset.negatives)
    if prep.task != "binary":
        raise ValueError("--model saml needs binary labels (clicks)")

    scenarios = prep.context_cardinalities[0] if prep.context_cardinalities else 1
    task = MSTask(scenario_data(prep.train), scenario_data(prep.test), prep.num_users,
                  prep.num_items, scenarios)
    results = []
    for table in args.methods.split(","):
        if table not in ("full", "cel"):
            raise ValueError(f"--model saml supports --methods full,cel, not {table!r}")
        spec = MSSpec(table=table, dim=args.dim, clusters=args.clusters,
                      epochs=preset.epochs, batch_size=preset.batch_size, lr=preset.lr,
                      seed=args.seed,
                      max_branches=max(scenarios, 1))
        clock = time.perf_counter()
        if args.protocol == "stream":
            pred, shared_pred, memory, data = saml_stream_on_shared(prep, table, args, preset,
                                                                    spec)
            chosen: dict[int, str] = {}  # the stream gate's choice changes over the stream
            events = len(data)
        else:
            pred, memory, run, chosen = saml_on_shared(prep, table, args, preset, spec)
            data, events = run.test, len(prep.train) * spec.epochs
            shared_pred = torch.sigmoid(data.base)
        seconds = time.perf_counter() - clock
        if args.protocol == "stream":  # cold buckets: earlier events of the stream
            u_counts, i_counts = earlier_counts(data.users), earlier_counts(data.items)
        else:
            u_counts = torch.bincount(task.train.users, minlength=prep.num_users)[data.users]
            i_counts = torch.bincount(task.train.items, minlength=prep.num_items)[data.items]
        full = full_bytes(prep.num_users, prep.num_items, spec.dim, "both")
        result = _result(table, pred, Interactions(data.users, data.items, data.labels),
                         "binary", u_counts, i_counts, memory, full,
                         events, seconds, [], [])
        result["scenarios"] = per_scenario(pred, data, scenarios)
        # the shared model alone, for comparison
        result["shared"] = per_scenario(shared_pred, data, scenarios)
        # offline: the deviation served per scenario (branches, cells; absent: none)
        result["deviation"] = {str(k): name for k, name in chosen.items()}
        results.append(result)
    return {"dataset": args.data or f"{args.train} | {args.test}", "protocol": args.protocol,
            "task": "binary", "model": "saml", "side": "both", "clusters": args.clusters,
            "dim": args.dim, "results": results}
