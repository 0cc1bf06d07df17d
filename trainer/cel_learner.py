"""The trainer's model: online CEL (cel.online) over string ids, plus what serving needs.

The interaction is MF, or ``cel.models.DeepFM`` with ``CELREC_MODEL=deepfm`` (same tables,
same online update; the published ``model.*`` weights are then DeepFM's).

Besides the model this keeps the id maps, per-item positive counts and a per-scenario
popularity prior over item rows, and remembers what changed since the last publish so a
delta carries only that (tables are small by design and always travel whole).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from cel.covisit import WEIGHT, WEIGHTS, Covisitation, co_at
from cel.idmap import IdMap
from cel.models import DeepFM
from cel.online import SIDES, OnlineCEL, OnlineCELConfig
from cel.retrieval import CANDIDATE_WEIGHTS, WeightChooser, retrieval_scores
from celrec.settings import Settings
from schemas.events import Event, EventType
from schemas.snapshot import SideMeta
from schemas.state import decode_array, encode_array
from trainer.learner import Learner, LearnStats
from trainer.published_ids import delta_id_arrays, snapshot_id_arrays

MODEL_KIND = "mf"
# The recommendation weight's evidence (cel.retrieval): every EVAL_EVERY-th positive whose
# item is already known, at most EVALS_PER_BATCH per batch (one vectorised predict), ranked
# against at most EVAL_ITEMS known items (a uniform sample when there are more, each then
# counting for several), the user's ring-buffer items left out as the service leaves out
# the user's seen items. Bounded cost per batch, whatever the catalogue.
EVAL_EVERY = 5
EVALS_PER_BATCH = 8
EVAL_ITEMS = 4096
# (user, item) pairs the checks remember, to skip positives on items a user has seen (the
# service never recommends those): a direct-mapped table of 64-bit fingerprints, 2 MB; a pair
# overwritten by a later one counts as unseen again, as a pair beyond the service's seen list.
SEEN_PAIRS_BITS = 18


def _pair_fingerprints(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot in the seen-pairs table and 64-bit fingerprint of each (user, item) pair."""
    with np.errstate(over="ignore"):
        mixed = (users.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                 ^ items.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) | np.uint64(1)
    return (mixed >> np.uint64(64 - SEEN_PAIRS_BITS)).astype(np.int64), mixed


class CELLearner(Learner):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.loss = "mse" if settings.objective == "rating" else "logloss"
        config = OnlineCELConfig(
            dim=settings.embedding_dim, user_clusters=settings.user_clusters,
            item_clusters=settings.item_clusters, loss=self.loss, lr=settings.row_learning_rate,
            state_capacity=settings.entity_state_capacity, seed=settings.seed,
        )
        self.model_kind = settings.model if settings.model == "deepfm" else MODEL_KIND
        self.dim = settings.embedding_dim
        interaction = DeepFM(settings.embedding_dim) if self.model_kind == "deepfm" else None
        self.model = OnlineCEL(config, device=settings.device, interaction=interaction)
        self.ids = {side: IdMap() for side in SIDES}
        self.item_popularity = np.zeros(1024, dtype=np.int32)
        self.scenarios: list[str] = []
        self.scenario_prior = np.zeros((0, settings.item_clusters), dtype=np.float32)
        self.chooser = WeightChooser()
        self.coliked = Covisitation() if settings.coliked else None
        self._liked: dict[str, list[bytes]] = {}  # new positives per user, to publish
        self.co_chooser = WeightChooser(candidates=WEIGHTS, default=WEIGHT)
        self._positives_counted = 0
        self._seen_pairs = np.zeros(1 << SEEN_PAIRS_BITS, np.uint64)
        self._eval_rng = np.random.default_rng(settings.seed)
        self.blob_names = tuple(sorted(
            [f"cel.{k}" for k in self.model.state_dict()]
            + [f"ids.{s}.{part}" for s in SIDES for part in ("blob", "offsets")]
            + ["item_popularity", "scenario_prior", "scenarios", "retrieval_chooser"]
            + ([f"coliked.{k}" for k in Covisitation().state()] + ["coliked_chooser"]
               if self.coliked else [])
        ))
        self._reset_changes()

    # -- learning ----------------------------------------------------------------------
    def _label(self, event: Event) -> float:
        if self.loss == "mse":
            return float(event.value)
        if event.event_type is EventType.rating:
            return float(event.value >= self.settings.rating_positive_threshold)
        return float(event.value > 0)

    def _scenario_index(self, scenario: str) -> int:
        if scenario not in self.scenarios:
            self.scenarios.append(scenario)
            self.scenario_prior = np.vstack(
                [self.scenario_prior, np.zeros((1, self.scenario_prior.shape[1]), np.float32)]
            )
        return self.scenarios.index(scenario)

    def learn(self, events: list[Event]) -> LearnStats:
        known_items = len(self.ids["item"])
        users, _ = self.ids["user"].lookup_or_add(e.user_id for e in events)
        items, _ = self.ids["item"].lookup_or_add(e.item_id for e in events)
        labels = np.array([self._label(e) for e in events], dtype=np.float32)
        self._judge_retrieval(users, items, labels, known_items)
        slot, print_ = _pair_fingerprints(users, items)
        self._seen_pairs[slot] = print_
        out = self.model.step(torch.from_numpy(users), torch.from_numpy(items),
                              torch.from_numpy(labels), return_changes=True)
        if out.skipped or out.changes is None:
            return LearnStats(events=len(events), skipped=True)
        for side, (ids, _rows) in out.changes.items():
            self._changed[side].append(ids.cpu().numpy())
        if self.model.config.entity_bias:
            self._touched["user"].append(np.unique(users))
            self._touched["item"].append(np.unique(items))
        self._splits += [(side, int(p), int(c), int(m.numel()))
                         for side, p, c, m in out.split_events]
        positive = labels > 0
        if positive.any() and self.coliked is not None:
            self.coliked.learn(users[positive], items[positive], self._item_rows)
            for e, p in zip(events, positive, strict=True):
                if p:
                    self._liked.setdefault(e.user_id, []).append(e.item_id.encode())
        if positive.any():
            self._count_positives(items[positive], [e.scenario for e, p in
                                                    zip(events, positive, strict=True) if p])
        return LearnStats(events=len(events), loss=out.loss, extra=out.counters())

    @property
    def retrieval_weight(self) -> float | None:
        return self.chooser.weight

    def _judge_retrieval(self, users: np.ndarray, items: np.ndarray, labels: np.ndarray,
                         known_items: int) -> None:
        """Before the batch is learnt: would each candidate weight have recommended its
        sampled positives' items (cel.retrieval)?"""
        positive = np.flatnonzero(labels > 0)
        picked = positive[(self._positives_counted + 1 + np.arange(len(positive)))
                          % EVAL_EVERY == 0]
        self._positives_counted += len(positive)
        picked = picked[items[picked] < known_items]
        if not len(picked) or known_items < 2:
            return
        # The service never recommends an item the user has seen, so a positive on one (a
        # repeat) says nothing about a weight: only first interactions are evidence.
        slot, print_ = _pair_fingerprints(users[picked], items[picked])
        picked = picked[self._seen_pairs[slot] != print_][:EVALS_PER_BATCH]
        if not len(picked):
            return
        recent = self.model.recent_partners("user", torch.from_numpy(users[picked])).cpu() \
            .numpy()
        if known_items <= EVAL_ITEMS:
            pool = np.arange(known_items, dtype=np.int64)
        else:
            # with replacement: O(EVAL_ITEMS), not O(catalogue); repeats are rare and keep
            # the count of items above the target unbiased
            pool = self._eval_rng.integers(0, known_items, EVAL_ITEMS)
        scale = known_items / len(pool)
        who, target = users[picked], items[picked]
        scores = self.model.score_matrix(torch.from_numpy(who), torch.from_numpy(pool)) \
            .cpu().numpy().astype(np.float64)
        own = self.model.predict(torch.from_numpy(who), torch.from_numpy(target), raw=True) \
            .cpu().numpy().astype(np.float64)
        pool_pos, target_pos = self._positives_of(pool), self._positives_of(target)
        weights = np.asarray(CANDIDATE_WEIGHTS)[:, None]
        hits = [self.chooser.hits(retrieval_scores(target_pos[k], own[k], weights[:, 0]),
                                  retrieval_scores(pool_pos, scores[k], weights),
                                  (pool == target[k]) | np.isin(pool, recent[k]), scale)
                for k in range(len(picked))]
        self.chooser.observe(np.array(hits))
        if self.coliked is not None:
            self._judge_coliked(who, target, pool, scores, own, recent, scale,
                                pool_pos, target_pos)

    @property
    def coliked_weight(self) -> float | None:
        return None if self.coliked is None else self.co_chooser.weight

    def _judge_coliked(self, who: np.ndarray, target: np.ndarray, pool: np.ndarray,
                       scores: np.ndarray, own: np.ndarray, recent: np.ndarray,
                       scale: float, pool_pos: np.ndarray, target_pos: np.ndarray) -> None:
        """Would each candidate weight of co-liked items (``cel.covisit``) have recommended
        the sampled positives' items, the model's weight as currently chosen?"""
        assert self.coliked is not None
        weights = np.asarray(WEIGHTS)
        model_weight = self.chooser.weight
        anchors = [self.coliked.recent_positives(int(u)) for u in who]
        rows = self._item_rows(np.concatenate([pool, target, *anchors]))  # one lookup
        pool_rows, target_rows = rows[: len(pool)], rows[len(pool): len(pool) + len(who)]
        anchor_rows = np.split(rows[len(pool) + len(who):],
                               np.cumsum([len(a) for a in anchors])[:-1])
        hits = []
        for k in range(len(who)):
            co = co_at(self.coliked.counts, self.coliked.positives, anchor_rows[k],
                       np.append(pool_rows, target_rows[k]))
            pool_co, target_co = co[:-1], float(co[-1])
            base_pool = retrieval_scores(pool_pos, scores[k], model_weight)
            base_target = retrieval_scores(target_pos[k], own[k], model_weight)
            hits.append(self.co_chooser.hits(
                base_target + weights * np.log1p(target_co),
                base_pool[None, :] + weights[:, None] * np.log1p(pool_co)[None, :],
                (pool == target[k]) | np.isin(pool, recent[k]), scale))
        self.co_chooser.observe(np.array(hits))

    def _item_rows(self, items: np.ndarray) -> np.ndarray:
        return self.model.clusters_of("item", torch.from_numpy(
            np.asarray(items, np.int64))).cpu().numpy()

    def take_liked(self) -> dict[str, list[bytes]]:
        liked, self._liked = self._liked, {}
        return liked

    def _positives_of(self, items: np.ndarray) -> np.ndarray:
        counts = self.item_popularity
        return np.where(items < len(counts), counts[np.minimum(items, len(counts) - 1)], 0)

    def _count_positives(self, items: np.ndarray, scenarios: list[str]) -> None:
        if len(self.item_popularity) <= items.max():
            grown = np.zeros(max(2 * len(self.item_popularity), int(items.max()) + 1), np.int32)
            grown[: len(self.item_popularity)] = self.item_popularity
            self.item_popularity = grown
        np.add.at(self.item_popularity, items, 1)
        self._popular.append(items)
        rows = self.model.clusters_of("item", torch.from_numpy(items)).cpu().numpy()
        index = np.array([self._scenario_index(s) for s in scenarios])
        ok = rows >= 0
        np.add.at(self.scenario_prior, (index[ok], rows[ok]), 1.0)

    # -- publishing --------------------------------------------------------------------
    def _reset_changes(self) -> None:
        self._changed: dict[str, list[np.ndarray]] = {s: [] for s in SIDES}
        self._touched: dict[str, list[np.ndarray]] = {s: [] for s in SIDES}  # own biases
        self._popular: list[np.ndarray] = []
        self._splits: list[tuple[str, int, int, int]] = []
        self._published_entities = {s: len(self.ids[s]) for s in SIDES}

    @property
    def has_changes(self) -> bool:
        return any(self._changed[s] or self._touched[s] for s in SIDES) or bool(
            self._popular) or any(
            len(self.ids[s]) != self._published_entities[s] for s in SIDES)

    def side_meta(self) -> dict[str, SideMeta]:
        return {s: SideMeta(entities=len(self.ids[s]),
                            rows=int(self.model.cluster_table(s).shape[0]),
                            clustered=self.model.sides[s].clustered) for s in SIDES}

    def _own_bias(self, side: str, internal: np.ndarray) -> np.ndarray:
        return self.model.entity_bias(side, torch.from_numpy(internal)).cpu().numpy() \
            .astype(np.float32)

    def _bias_prior(self, side: str) -> np.ndarray:
        return self.model.sides[side].bias_prior.detach().cpu().numpy().astype(np.float32)

    def _rows_of(self, side: str, internal: np.ndarray) -> np.ndarray:
        """Current row of each id; ids a skipped batch never admitted get the default row."""
        rows = self.model.clusters_of(side, torch.from_numpy(internal)).cpu().numpy()
        if (rows < 0).any():
            rows = np.where(rows < 0, self.model.sides[side].default_cluster(), rows)
        return rows

    def _common_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"{s}.table": self.model.cluster_table(s).detach().cpu().numpy()
                  .astype(np.float32) for s in SIDES}
        for name, value in self.model.model.state_dict().items():
            arrays[f"model.{name}"] = value.detach().cpu().numpy().astype(np.float32)
        arrays["scenario.item_cluster_popularity"] = self._prior()
        return arrays

    def _prior(self) -> np.ndarray:
        rows = int(self.model.cluster_table("item").shape[0])
        prior = np.zeros((len(self.scenarios), rows), dtype=np.float32)
        width = min(rows, self.scenario_prior.shape[1])
        prior[:, :width] = self.scenario_prior[:, :width]
        return prior

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """Everything a reader needs to serve (see schemas.snapshot); resets the changes."""
        arrays = self._common_arrays()
        arrays.update(snapshot_id_arrays(
            self.ids, self._rows_of,
            {s: int(self.model.cluster_table(s).shape[0]) for s in SIDES}, self.item_popularity))
        if self.model.config.entity_bias:
            for side in SIDES:
                known = np.arange(len(self.ids[side]), dtype=np.int64)
                arrays[f"{side}.bias"] = self._own_bias(side, known)
                arrays[f"{side}.bias_prior"] = self._bias_prior(side)
        if self.coliked is not None:
            self.coliked.take_changed()
            arrays.update(self._coliked_arrays(np.arange(len(self.coliked.counts))))
        self._reset_changes()
        return arrays

    def delta_arrays(self) -> tuple[dict[str, int], list[tuple[str, int, int, int]],
                                    dict[str, np.ndarray]]:
        """(first new internal id per side, split events, arrays); resets the changes."""
        arrays = self._common_arrays()
        first_new = dict(self._published_entities)
        arrays.update(delta_id_arrays(self.ids, first_new, self._changed, self._rows_of,
                                      self._popular, self.item_popularity))
        if self.model.config.entity_bias:
            for side in SIDES:
                touched = self._touched[side]
                index = (np.unique(np.concatenate(touched)) if touched
                         else np.zeros(0, np.int64)).astype(np.int64)
                arrays[f"{side}.bias.index"] = index
                arrays[f"{side}.bias.value"] = self._own_bias(side, index)
                arrays[f"{side}.bias_prior"] = self._bias_prior(side)
        if self.coliked is not None:
            arrays.update(self._coliked_arrays(self.coliked.take_changed()))
        splits = self._splits
        self._reset_changes()
        return first_new, splits, arrays

    def _coliked_arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The co-liked counts of ``rows`` against every row, and the positives per row."""
        assert self.coliked is not None
        return {"item.coliked.index": rows.astype(np.int64),
                "item.coliked.counts": self.coliked.counts[rows].astype(np.float32),
                "item.coliked.positives": self.coliked.positives.astype(np.float32)}

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, bytes]:
        blobs = {f"cel.{k}": encode_array(v.detach().cpu().numpy())
                 for k, v in self.model.state_dict().items()}
        for side in SIDES:
            blob, offsets = self.ids[side].export_arrays()
            blobs[f"ids.{side}.blob"] = encode_array(blob)
            blobs[f"ids.{side}.offsets"] = encode_array(offsets)
        blobs["item_popularity"] = encode_array(self.item_popularity)
        blobs["scenario_prior"] = encode_array(self.scenario_prior)
        blobs["scenarios"] = json.dumps(self.scenarios).encode()
        blobs["retrieval_chooser"] = encode_array(self.chooser.state())
        if self.coliked is not None:
            blobs.update({f"coliked.{k}": encode_array(v)
                          for k, v in self.coliked.state().items()})
            blobs["coliked_chooser"] = encode_array(self.co_chooser.state())
        return blobs

    def restore(self, blobs: dict[str, bytes]) -> None:
        if not all(f"cel.{k}" in blobs for k in self.model.state_dict()):
            return  # first start, or a checkpoint of another model kind: start fresh
        if any(k.startswith("cel.model.") and k[4:] not in self.model.state_dict()
               for k in blobs):
            return  # another interaction model's weights (mf <-> deepfm): start fresh
        state = {k[4:]: torch.from_numpy(decode_array(v)) for k, v in blobs.items()
                 if k.startswith("cel.")}
        self.model.load_state_dict(state)
        for side in SIDES:
            self.ids[side] = IdMap.from_arrays(decode_array(blobs[f"ids.{side}.blob"]),
                                               decode_array(blobs[f"ids.{side}.offsets"]))
        self.item_popularity = decode_array(blobs["item_popularity"]).astype(np.int32)
        self.scenario_prior = decode_array(blobs["scenario_prior"]).astype(np.float32)
        self.scenarios = json.loads(blobs["scenarios"])
        if "retrieval_chooser" in blobs:  # older checkpoints start from the default weight
            self.chooser.load(decode_array(blobs["retrieval_chooser"]))
        coliked = {k[len("coliked."):]: decode_array(v) for k, v in blobs.items()
                   if k.startswith("coliked.")}
        if "coliked_chooser" in blobs:
            self.co_chooser.load(decode_array(blobs["coliked_chooser"]))
        if self.coliked is not None and coliked:  # older checkpoints start with none
            try:
                self.coliked.load(coliked)
            except (KeyError, ValueError):  # another layout: counts, rebuilt from the stream
                self.coliked = Covisitation()
        self._reset_changes()
        self._published_entities = {s: 0 for s in SIDES}  # the next publish is a snapshot

    # -- the metrics -------------------------------------------------------------------
    def predict_before_learn(self, events: list[Event]
                             ) -> tuple[np.ndarray, np.ndarray] | None:
        if self.loss != "logloss":
            return None
        users = torch.from_numpy(self.ids["user"].lookup(e.user_id for e in events))
        items = torch.from_numpy(self.ids["item"].lookup(e.item_id for e in events))
        scores = self.model.predict(users, items).detach().cpu().numpy().astype(np.float64)
        return scores, np.array([self._label(e) for e in events], dtype=np.float64)

    def device_name(self) -> str:
        return str(self.model.device)

    def memory_bytes(self) -> int:
        coliked = 0 if self.coliked is None else self.coliked.nbytes()
        return self.model.memory_bytes() + coliked

    def cluster_sizes(self, side: str) -> np.ndarray:
        return self.model.cluster_sizes(side).detach().cpu().numpy()

    def entities(self, side: str) -> int:
        return len(self.ids[side])

    @property
    def events_applied(self) -> int:
        return int(self.model.totals["events"])

    def positives(self) -> int:
        return int(self.item_popularity.sum())
