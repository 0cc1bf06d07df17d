"""Streaming learner for the deep models on CEL tables (SAML, DUPN): the shared mechanics.

String ids map to internal ids (``cel.idmap``); the model's CEL tables grow with new ids.
Each table starts with ``CELREC_INITIAL_CLUSTERS`` clusters and a new id joins one of the live
clusters by its internal id: starting from one cluster, where every user (item) has the same
gradient on the one shared row, nothing could tell the planted groups apart. Each entity's
last ``CELREC_REASSIGN_EVIDENCE`` interactions are kept (bounded, least recently touched
evicted). Per micro-batch: one Adam step; a ``GradientSplitter`` per table splits a cluster
along the first principal component of its members' accumulated gradients every
``CELREC_SPLIT_EVERY`` steps; the batch's entities move by co-click votes (``_vote``); then
the entities of the newest ``CELREC_REASSIGN_WINDOW`` samples (only those) are reassigned to
the cluster with the lowest loss on their remembered interactions. The cost of a batch does
not grow with the number of entities. Subclasses (``trainer.deep_models``) say how events
become model inputs.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections import Counter
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from cel.clusters import KEEP_PROB, move, reassign_by_trial, vote_moves
from cel.deep_serving import SequenceRows, build_network, published_weights
from cel.grad_split import GradientSplitter
from cel.idmap import IdMap
from cel.tables import ClusteredEmbedding, resolve_device
from celrec.settings import Settings
from schemas.events import Event, EventType
from schemas.sequence import Step, encode_sequence
from schemas.snapshot import SIDES, SideMeta, decode_bundle, encode_bundle
from schemas.state import StateKeys
from trainer.evidence import EntityEvidence
from trainer.learner import Learner, LearnStats
from trainer.published_ids import delta_id_arrays, snapshot_id_arrays
from trainer.sequences import InternalStep, UserSequences

log = logging.getLogger(__name__)

BEHAVIOURS = [e.value for e in EventType]
STATE_BLOB = "deep.state"
STATE_FORMAT = 1
VOTE_RATIO = 1.5  # a co-click vote moves an entity when another cluster is this much denser


class _Header(BaseModel):
    model_config = ConfigDict(extra="allow")


class DeepLearner(Learner):
    kind: str = ""
    blob_names = (STATE_BLOB,)

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.max_scenarios = settings.max_scenarios
        self.model_kind = self.kind
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            self.spec = self.build_spec()
            self.net: nn.Module = build_network(self.spec, self.device)
        self.tables: dict[str, ClusteredEmbedding] = self.net.clustered_tables()
        self.dim = self.tables["user"].dim  # published table width minus the bias column
        for table in self.tables.values():  # start empty: ids arrive with the stream
            table.assignment = table.assignment[:0].clone()
            table.num_entities = 0
            table.num_active = min(settings.initial_clusters, table.max_clusters)
            table.recount()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings.deep_learning_rate)
        self.splitters = {side: GradientSplitter(t, settings.split_every, self.opt,
                                                 self._split_hook(side))
                          for side, t in self.tables.items()}
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.ids = {side: IdMap() for side in SIDES}
        self.scenarios: list[str] = []
        self._scenario_index: dict[str, int] = {}
        self.sequences = UserSequences(settings.sequence_length)
        self.item_popularity = np.zeros(0, np.int64)
        self.scenario_prior = np.zeros((0, self.tables["item"].max_clusters), np.float32)
        self.totals = {"events": 0, "skipped": 0, "splits": 0, "reassigned": 0}
        self._newest = {side: 0 for side in SIDES}  # newest split child: a candidate
        self.evidence = {side: EntityEvidence(settings.entity_state_capacity,
                                              settings.reassign_evidence) for side in SIDES}
        self._reset_changes()

    # -- what subclasses provide ---------------------------------------------------------
    @abstractmethod
    def build_spec(self) -> dict[str, Any]: ...

    @abstractmethod
    def _forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch loss, per-sample click logits) of prepared inputs."""

    @abstractmethod
    def _window_losses(self, batch: dict[str, Any], side: str, window: int) -> Any:
        """A closure giving per-sample losses of the last ``window`` samples of ``batch``
        under the current assignment of ``side`` (for ``reassign_by_trial``)."""

    @abstractmethod
    def _tensors(self, users: np.ndarray, items: np.ndarray, scen: np.ndarray,
                 seqs: list[SequenceRows], now: np.ndarray) -> dict[str, Any]: ...

    def _on_new_scenario(self, index: int, name: str) -> None:
        """Called once per scenario, in order of first sight."""

    # -- ids, scenarios, labels ----------------------------------------------------------
    def _label(self, event: Event) -> float:
        if event.event_type is EventType.rating:
            return float(event.value >= self.settings.rating_positive_threshold)
        return float(event.value > 0)

    def scenario_of(self, name: str | None) -> int | None:
        return None if name is None else self._scenario_index.get(name)

    def _register_scenario(self, name: str) -> int:
        index = self._scenario_index.get(name)
        if index is None:
            index = self._scenario_index[name] = len(self.scenarios)
            self.scenarios.append(name)
            self.scenario_prior = np.vstack([self.scenario_prior, np.zeros(
                (1, self.scenario_prior.shape[1]), np.float32)])
            self._on_new_scenario(index, name)
        return index

    def _admit(self, side: str) -> None:
        """Give ids first seen since the last call a cluster: a live one by internal id (so
        the clusters do not start as one symmetric block that no gradient can tell apart)."""
        table = self.tables[side]
        known, placed = len(self.ids[side]), len(table.assignment)
        if known <= placed:
            return
        fresh = (torch.arange(placed, known, device=table.assignment.device)
                 % table.num_active).to(table.assignment.dtype)
        table.assignment = torch.cat([table.assignment, fresh])
        table.num_entities = known
        table.counts.index_add_(0, fresh.long(), torch.ones_like(fresh, dtype=torch.long))

    def _prepare(self, events: list[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        users, _ = self.ids["user"].lookup_or_add(e.user_id for e in events)
        items, _ = self.ids["item"].lookup_or_add(e.item_id for e in events)
        for side in SIDES:
            self._admit(side)
        scen = np.array([self._register_scenario(e.scenario) for e in events], np.int64)
        return users, items, scen

    @staticmethod
    def _time(event: Event) -> float:
        return event.timestamp.timestamp() if event.timestamp is not None else 0.0

    def _inputs(self, events: list[Event]) -> tuple[dict[str, Any], list[tuple[int, InternalStep]]]:
        """Model inputs of the batch, each event with its user's sequence *before* it (in
        event order); returns the steps to append once the batch is accepted."""
        users, items, scen = self._prepare(events)
        pending: dict[int, list[InternalStep]] = {}
        appends: list[tuple[int, InternalStep]] = []
        seqs, now = [], np.array([self._time(e) for e in events])
        cap = self.settings.sequence_length
        for k, event in enumerate(events):
            user = int(users[k])
            steps = self.sequences.steps(user) + pending.get(user, [])
            seqs.append(UserSequences.rows(steps[-cap:], self.scenario_codes()))
            if self._label(event) > 0:
                step = InternalStep(int(items[k]), BEHAVIOURS.index(event.event_type.value),
                                    int(scen[k]), float(now[k]))
                pending.setdefault(user, []).append(step)
                appends.append((user, step))
        batch = self._tensors(users, items, scen, seqs, now)
        batch["time"] = now
        labels = [self._label(e) for e in events]
        batch["labels"] = torch.tensor(labels, dtype=torch.float32, device=self.device)
        batch["purchase"] = torch.tensor(
            [float(y > 0 and e.event_type is EventType.purchase)
             for y, e in zip(labels, events, strict=True)], device=self.device)
        batch["price"] = torch.tensor(
            [e.price_level if y > 0 and e.price_level is not None else -1
             for y, e in zip(labels, events, strict=True)], device=self.device)
        return batch, appends

    def scenario_codes(self) -> np.ndarray:
        """Network scenario id of each scenario index (identity unless overridden)."""
        return np.arange(len(self.scenarios), dtype=np.int64)

    # -- learning ------------------------------------------------------------------------
    def learn(self, events: list[Event]) -> LearnStats:
        self.net.train()
        batch, appends = self._inputs(events)
        self.opt.zero_grad(set_to_none=True)
        loss, _ = self._forward(batch)
        if not torch.isfinite(loss):
            self.opt.zero_grad(set_to_none=True)
            self.totals["skipped"] += len(events)
            return LearnStats(events=len(events), skipped=True)
        loss.backward()
        grads_ok = all(torch.isfinite(p.grad).all() for p in self.net.parameters()
                       if p.grad is not None)
        if not grads_ok:
            self.opt.zero_grad(set_to_none=True)
            self.totals["skipped"] += len(events)
            return LearnStats(events=len(events), skipped=True)
        self.opt.step()
        self._remember(batch)
        extra = {f"splits_{side}": float(sp.step()) for side, sp in self.splitters.items()}
        voted = self._vote(batch)
        extra.update({f"reassigned_{side}": float(n + voted[side])
                      for side, n in self._reassign(batch).items()})
        for user, step in appends:
            self.sequences.append(user, step)
        self._note(batch, events)
        self.totals["events"] += len(events)
        return LearnStats(events=len(events), loss=float(loss.detach()), extra=extra)

    @torch.no_grad()
    def _vote(self, batch: dict[str, Any]) -> dict[str, int]:
        """Co-click votes, per side, for the batch's entities; moves per side.

        An item votes for the clusters of the items its recent clickers clicked (their
        sequences); a user for the clusters of the users who recently clicked what it
        recently clicked. Each cluster's votes are divided by its size, and an entity moves
        to the densest cluster when that beats its own by ``VOTE_RATIO``. Unlike the loss,
        this needs no trained rows: it finds groups from a random start, where every
        member's gradient still looks alike. Cost: O(batch x evidence x sequence length).
        """
        moved = {side: 0 for side in SIDES}
        if not (self.settings.cluster_votes and self.settings.reassign_evidence):
            return moved
        for side in SIDES:
            table = self.tables[side]
            if table.num_active < 2:
                continue
            entities = torch.unique(batch[f"{side}_ids"]).cpu()
            votes = self._vote_matrix(side, entities.tolist(), table)
            entities = entities.to(self.device)
            wanted = vote_moves(votes.to(self.device), table.counts,
                                table.assignment[entities].long(), VOTE_RATIO)
            free = (torch.rand(len(entities), generator=self.gen) >= KEEP_PROB).to(self.device)
            changed, _ = move(table, entities, torch.where(free, wanted, -1))
            moved[side] = len(changed)
            if len(changed):
                self._changed[side].append(changed.cpu().numpy())
        self.totals["reassigned"] += sum(moved.values())
        return moved

    def _vote_matrix(self, side: str, entities: list[int], table: ClusteredEmbedding
                     ) -> torch.Tensor:
        """Votes (entities x live clusters): for each entity, the clusters of its
        same-side neighbours (``_neighbours``), counted with multiplicity.

        Computed per partner instead of per entity: each clicker's (item side) or clicked
        item's (user side) neighbour histogram is built once, the entities sum the
        histograms of their partners, and the entity's own occurrences are taken back out.
        Same counts as walking every entity's neighbours, without revisiting a partner
        once per entity that shares it.
        """
        m = table.num_active
        partners_of = [[other for other, label, _, _ in self.evidence[side].of(e) if label > 0]
                       for e in entities]
        index: dict[int, int] = {}
        for partners in partners_of:
            for p in partners:
                index.setdefault(p, len(index))
        votes = torch.zeros(len(entities), m)
        if not index:
            return votes
        if side == "item":  # a clicker's neighbours: the items of its sequence
            lists = [[step.item for step in self.sequences.steps(p)] for p in index]
        else:  # a clicked item's neighbours: the users who clicked it
            lists = [[u for u, label, _, _ in self.evidence["item"].of(p) if label > 0]
                     for p in index]
        flat = [x for members in lists for x in members]
        hist = torch.zeros(len(index), m)
        if flat:
            owner = torch.repeat_interleave(torch.arange(len(index)),
                                            torch.tensor([len(x) for x in lists]))
            rows = table.clusters_of(torch.tensor(flat, device=self.device)).cpu().long()
            hist.index_put_((owner, rows), torch.ones(len(flat)), accumulate=True)
        counts = [Counter(members) for members in lists]
        at, of = [], []  # (entity, partner) pairs, with multiplicity
        own = [0.0] * len(entities)  # how often each entity is its own neighbour
        for k, (entity, partners) in enumerate(zip(entities, partners_of, strict=True)):
            for p in partners:
                at.append(k)
                of.append(index[p])
                own[k] += counts[index[p]].get(entity, 0)
        uses = torch.zeros(len(entities), len(index))
        uses.index_put_((torch.tensor(at), torch.tensor(of)), torch.ones(len(at)),
                        accumulate=True)
        votes = uses @ hist
        mine = table.clusters_of(torch.tensor(entities, device=self.device)).cpu().long()
        votes[torch.arange(len(entities)), mine] -= torch.tensor(own)
        return votes

    def _neighbours(self, side: str, entity: int) -> list[int]:
        """Same-side entities co-clicked with ``entity`` in the remembered interactions."""
        clickers = [other for other, label, _, _ in self.evidence[side].of(entity) if label > 0]
        if side == "item":
            return [s.item for u in clickers for s in self.sequences.steps(u) if s.item != entity]
        return [u for item in clickers for u, label, _, _ in self.evidence["item"].of(item)
                if label > 0 and u != entity]

    def _remember(self, batch: dict[str, Any]) -> None:
        """Add the batch's samples to each side's per-entity evidence."""
        if not self.settings.reassign_evidence:
            return
        users = batch["user_ids"].cpu().tolist()
        items = batch["item_ids"].cpu().tolist()
        labels = batch["labels"].cpu().tolist()
        scen = batch["scenario_index"].tolist()
        now = batch["time"].tolist()
        for u, i, y, s, t in zip(users, items, labels, scen, now, strict=True):
            self.evidence["user"].add(u, i, y, s, t)
            self.evidence["item"].add(i, u, y, s, t)

    def _evidence_batch(self, side: str, entities: list[int]) -> dict[str, Any]:
        """Model inputs of the remembered interactions of ``entities`` (of ``side``), each
        with its user's current sequence."""
        users, items, labels, scen, now = [], [], [], [], []
        for entity in entities:
            for other, label, s, t in self.evidence[side].of(entity):
                users.append(entity if side == "user" else other)
                items.append(other if side == "user" else entity)
                labels.append(label)
                scen.append(s)
                now.append(t)
        codes = self.scenario_codes()
        cache: dict[int, SequenceRows] = {}
        cap = self.settings.sequence_length
        seqs = []
        for u in users:
            if u not in cache:
                cache[u] = UserSequences.rows(self.sequences.steps(u)[-cap:], codes)
            seqs.append(cache[u])
        batch = self._tensors(np.array(users, np.int64), np.array(items, np.int64),
                              np.array(scen, np.int64), seqs, np.array(now))
        batch["labels"] = torch.tensor(labels, dtype=torch.float32, device=self.device)
        return batch

    def _reassign(self, batch: dict[str, Any]) -> dict[str, int]:
        """Reassign the entities of the newest samples by loss (on their remembered
        interactions when ``reassign_evidence`` is on); moves per side."""
        window = self.settings.reassign_window
        moved = {side: 0 for side in self.tables}
        if not window:
            return moved
        self.net.eval()
        for side, table in self.tables.items():
            if table.num_active < 2:
                continue
            ids = batch[f"{side}_ids"][-window:]
            judged, n = batch, window
            if self.settings.reassign_evidence:
                judged = self._evidence_batch(side, torch.unique(ids).cpu().tolist())
                ids, n = judged[f"{side}_ids"], len(judged["labels"])
            changed = reassign_by_trial(table, ids, self._window_losses(judged, side, n),
                                        self.gen, KEEP_PROB,
                                        self.settings.reassign_candidates,
                                        [self._newest[side]])
            moved[side] = len(changed)
            if len(changed):
                self._changed[side].append(changed.cpu().numpy())
        self.totals["reassigned"] += sum(moved.values())
        return moved

    def _split_hook(self, side: str):
        def on_split(parent: int, child: int) -> None:
            if hasattr(self.net, "on_split"):
                self.net.on_split(side, parent, child)
            members = (self.tables[side].assignment == child).nonzero().flatten()
            self._changed[side].append(members.cpu().numpy())
            self._splits.append((side, parent, child, int(len(members))))
            self._newest[side] = child
            self.totals["splits"] += 1
        return on_split

    def _note(self, batch: dict[str, Any], events: list[Event]) -> None:
        for side in SIDES:
            self._changed[side].append(batch[f"{side}_ids"].cpu().numpy())
        positive = batch["labels"].cpu().numpy() > 0
        if not positive.any():
            return
        items = batch["item_ids"].cpu().numpy()[positive]
        n = len(self.ids["item"])
        if len(self.item_popularity) < n:
            grown = np.zeros(max(n, 2 * len(self.item_popularity)), np.int64)
            grown[: len(self.item_popularity)] = self.item_popularity
            self.item_popularity = grown
        np.add.at(self.item_popularity, items, 1)
        self._popular.append(items)
        rows = self.tables["item"].clusters_of(torch.from_numpy(items).to(self.device))
        scen = batch["scenario_index"][positive]
        np.add.at(self.scenario_prior, (scen, rows.cpu().numpy()), 1.0)

    # -- predictions ---------------------------------------------------------------------
    @torch.no_grad()
    def predict_events(self, events: list[Event]) -> np.ndarray:
        """Click probabilities of the events as learn() would see them (before learning)."""
        self.net.eval()
        batch, _ = self._inputs(events)
        _, logits = self._forward(batch)
        return torch.sigmoid(logits).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def predict(self, user_id: str, item_ids: list[str], scenario: str | None, now: float
                ) -> np.ndarray:
        """Click probabilities of known items for a known user at time ``now`` (the
        trainer's own forward pass, one example per item)."""
        self.net.eval()
        user = int(self.ids["user"].lookup([user_id])[0])
        items = self.ids["item"].lookup(item_ids)
        if user < 0 or (items < 0).any():
            raise KeyError("predict() takes known ids only")
        index = self.scenario_of(scenario)
        seq = UserSequences.rows(self.sequences.steps(user), self.scenario_codes())
        n = len(items)
        batch = self._tensors(np.full(n, user), items,
                              np.full(n, -1 if index is None else index), [seq] * n,
                              np.full(n, float(now)))
        batch["labels"] = batch["purchase"] = torch.zeros(n, device=self.device)
        batch["price"] = torch.full((n,), -1, device=self.device)
        _, logits = self._forward(batch)
        return torch.sigmoid(logits).cpu().numpy().astype(np.float64)

    # -- publishing ----------------------------------------------------------------------
    def _reset_changes(self) -> None:
        self._changed: dict[str, list[np.ndarray]] = {s: [] for s in SIDES}
        self._popular: list[np.ndarray] = []
        self._splits: list[tuple[str, int, int, int]] = []
        self._published_entities = {s: len(self.ids[s]) for s in SIDES}

    @property
    def has_changes(self) -> bool:
        return any(self._changed[s] for s in SIDES) or bool(self.sequences.dirty) or any(
            len(self.ids[s]) != self._published_entities[s] for s in SIDES)

    def side_meta(self) -> dict[str, SideMeta]:
        return {s: SideMeta(entities=len(self.ids[s]), rows=self.tables[s].num_active,
                            clustered=True) for s in SIDES}

    def _rows(self, side: str, internal: np.ndarray) -> np.ndarray:
        return self.tables[side].clusters_of(torch.from_numpy(internal).to(self.device)
                                             ).cpu().numpy()

    def _common_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for side, table in self.tables.items():
            rows = table.weight[: table.num_active].detach().cpu().numpy().astype(np.float32)
            arrays[f"{side}.table"] = np.hstack([rows, np.zeros((len(rows), 1), np.float32)])
        for name, value in published_weights(self.net).items():
            arrays[f"model.{name}"] = value
        m = self.tables["item"].num_active
        arrays["scenario.item_cluster_popularity"] = self.scenario_prior[:, :m].copy()
        return arrays

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        arrays = self._common_arrays()
        arrays.update(snapshot_id_arrays(
            self.ids, self._rows, {side: t.num_active for side, t in self.tables.items()},
            self.item_popularity))
        self._reset_changes()
        return arrays

    def delta_arrays(self) -> tuple[dict[str, int], list[tuple[str, int, int, int]],
                                    dict[str, np.ndarray]]:
        arrays = self._common_arrays()
        first_new = dict(self._published_entities)
        arrays.update(delta_id_arrays(self.ids, first_new, self._changed, self._rows,
                                      self._popular, self.item_popularity))
        splits = self._splits
        self._reset_changes()
        return first_new, splits, arrays

    def sequence_values(self, keys: StateKeys) -> dict[str, bytes]:
        """State-store values of the sequences changed since the last publish."""
        out = {}
        for user in self.sequences.dirty:
            steps = self.sequences.steps(user)
            items = self.ids["item"].external(s.item for s in steps)
            out[keys.user_sequence(self.ids["user"].external([user])[0])] = encode_sequence(
                [Step(i, BEHAVIOURS[s.behaviour], self.scenarios[s.scenario], s.time)
                 for i, s in zip(items, steps, strict=True)])
        return out

    def sequences_published(self) -> None:
        self.sequences.dirty.clear()

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, bytes]:
        arrays: dict[str, np.ndarray] = {
            f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        for k, value in self.opt.state_dict()["state"].items():
            for name, tensor in value.items():
                arrays[f"opt.{k}.{name}"] = torch.as_tensor(tensor).detach().cpu().numpy()
        for side in SIDES:
            arrays[f"ids.{side}.blob"], arrays[f"ids.{side}.offsets"] = \
                self.ids[side].export_arrays()
        arrays.update(self.sequences.export())
        arrays["item_popularity"] = self.item_popularity
        arrays["scenario_prior"] = self.scenario_prior
        arrays["gen"] = self.gen.get_state().numpy()
        for side in SIDES:
            arrays.update(self.evidence[side].export(f"evidence.{side}"))
        for side, sp in self.splitters.items():  # the split window in progress, too
            arrays[f"split.{side}.hits"] = sp._hits.cpu().numpy()
            parts = sp._parts
            arrays[f"split.{side}.ids"] = (torch.cat([p[0] for p in parts]).cpu().numpy()
                                           if parts else np.zeros(0, np.int64))
            arrays[f"split.{side}.grads"] = (
                torch.cat([p[1] for p in parts]).cpu().numpy() if parts
                else np.zeros((0, self.tables[side].dim), np.float32))
        header = _Header(
            kind=self.kind, format=STATE_FORMAT, scenarios=self.scenarios,
            totals=self.totals, num_branches=getattr(self.net, "num_branches", None),
            tables={s: t.num_active for s, t in self.tables.items()},
            splitters={s: [sp.target, sp.steps, sp.splits] for s, sp in self.splitters.items()},
        )
        return {STATE_BLOB: encode_bundle(header, arrays)}

    def restore(self, blobs: dict[str, bytes]) -> None:
        blob = blobs.get(STATE_BLOB)
        if not blob:
            return  # first start (or a checkpoint of the mf learner): start fresh
        header, arrays = decode_bundle(blob)
        if header.get("kind") != self.kind or header.get("format") != STATE_FORMAT:
            log.warning("checkpoint of model %r ignored: this trainer learns %r",
                        header.get("kind"), self.kind)
            return
        state = {k[4:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("net.")}
        for side, table in self.tables.items():  # entity-sized buffers take the saved size
            prefix = "user_table" if side == "user" else "item_table"
            table.assignment = state[f"{prefix}.assignment"].clone().to(self.device)
            table.num_entities = len(table.assignment)
            table.num_active = int(header["tables"][side])
        if "slot_of" in state:
            self.net.slot_of = state["slot_of"].clone().to(self.device)
            self.net.num_branches = int(header["num_branches"])
        self.net.load_state_dict(state)
        opt_state = self.opt.state_dict()
        params: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            if key.startswith("opt."):
                _, index, name = key.split(".", 2)
                params.setdefault(int(index), {})[name] = torch.from_numpy(value)
        opt_state["state"] = params
        self.opt.load_state_dict(opt_state)
        for side in SIDES:
            self.ids[side] = IdMap.from_arrays(arrays[f"ids.{side}.blob"],
                                               arrays[f"ids.{side}.offsets"])
            target, steps, splits = header["splitters"][side]
            sp = self.splitters[side]
            sp.target, sp.steps, sp.splits = int(target), int(steps), int(splits)
            sp._hits = torch.from_numpy(arrays[f"split.{side}.hits"]).to(self.device)
            ids = torch.from_numpy(arrays[f"split.{side}.ids"]).to(self.device)
            sp._parts = [(ids, torch.from_numpy(arrays[f"split.{side}.grads"]).to(
                self.device))] if len(ids) else []
        self.sequences.load(arrays)
        self.item_popularity = arrays["item_popularity"].astype(np.int64)
        self.scenario_prior = arrays["scenario_prior"].astype(np.float32)
        self.scenarios = list(header["scenarios"])
        self._scenario_index = {s: k for k, s in enumerate(self.scenarios)}
        self.totals = {k: int(v) for k, v in header["totals"].items()}
        self.gen.set_state(torch.from_numpy(arrays["gen"].copy()))
        for side in SIDES:
            self.evidence[side].load(arrays, f"evidence.{side}")
        self._reset_changes()
        self._published_entities = {s: 0 for s in SIDES}  # the next publish is a snapshot

    # -- the metrics -------------------------------------------------------------------
    def predict_before_learn(self, events: list[Event]
                             ) -> tuple[np.ndarray, np.ndarray] | None:
        return (self.predict_events(events),
                np.array([self._label(e) for e in events], dtype=np.float64))

    def device_name(self) -> str:
        return str(self.device)

    def memory_bytes(self) -> int:
        return int(self.net.memory_bytes())

    def cluster_sizes(self, side: str) -> np.ndarray:
        table = self.tables[side]
        return table.counts[: table.num_active].detach().cpu().numpy()

    def entities(self, side: str) -> int:
        return len(self.ids[side])

    @property
    def events_applied(self) -> int:
        return self.totals["events"]

    def positives(self) -> int:
        return int(self.item_popularity.sum())

    def network_spec(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.spec))
