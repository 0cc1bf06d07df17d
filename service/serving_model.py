"""The serving side of online CEL: scores and cluster retrieval over a snapshot plus deltas.

Pure numpy, no I/O: ``service.follower`` reads the published arrays (layout in
``schemas.snapshot``) and hands them here. One :class:`ServingModel` per snapshot version;
deltas of that version apply in place under the model's lock, so a reader sees a delta
entirely or not at all, and a new version is a new object swapped in by the follower.

Retrieval never scans the catalogue: it scores the item rows (clusters), then expands the
members of the best rows in popularity order until it has ``n`` items. Members per row are
kept incrementally (O(1) per moved item); a row's popularity ranking is rebuilt lazily, only
when that row is expanded after it changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cel.arrays import grown, grown_square
from cel.covisit import WEIGHT as COLIKED_WEIGHT
from cel.covisit import co_at
from cel.idmap import IdMap
from cel.retrieval import DEFAULT_WEIGHT
from schemas.snapshot import SIDES, DeltaHeader, SideMeta, SnapshotMeta

DEEP_MODEL_KINDS = ("saml", "dupn")  # served by service.deep_serving_model (service.serving_load)
_ID_OVERHEAD_BYTES = 120  # rough per-id cost of a Python str + dict entry + list slot


@dataclass(frozen=True)
class RequestContext:
    """What a request adds for sequence models: the user's behaviour sequence (oldest
    first, ``schemas.sequence.Step`` tuples) and the request time (unix s)."""

    steps: Sequence[tuple[str, str, str, float]] = ()
    now: float = 0.0


class ModelDataError(ValueError):
    """Arrays or headers that do not fit the model; nothing of them was applied."""


class DeltaMismatch(ModelDataError):
    """A delta of another version, or not the next one in sequence."""


class Scorer(Protocol):
    """Raw scores of one user row against item rows: (W,), (B, W) -> (B,)."""

    def scores(self, user_row: np.ndarray, item_rows: np.ndarray) -> np.ndarray: ...


class MFScorer:
    """``cel.online.MFInteraction``: <u[:-1], i[:-1]> + u[-1] + i[-1] + global bias."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        bias = weights.get("model.global_bias")
        self.global_bias = 0.0 if bias is None else float(np.asarray(bias).reshape(-1)[0])

    def scores(self, user_row: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return item_rows[:, :-1] @ user_row[:-1] + item_rows[:, -1] + (
            user_row[-1] + self.global_bias)


class DeepFMScorer:
    """``cel.models.DeepFM`` without context fields: biases + FM (<u, i> for two fields) +
    the deep MLP on [u, i]; its first layer's user half is computed once per request."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        bias = weights.get("model.global_bias")
        self.global_bias = 0.0 if bias is None else float(np.asarray(bias).reshape(-1)[0])
        layers = sorted({int(k.split(".")[2]) for k in weights
                         if k.startswith("model.deep.") and k.endswith(".weight")})
        if not layers:
            raise ModelDataError("deepfm: no model.deep.* weights")
        try:
            self.layers = [(np.asarray(weights[f"model.deep.{k}.weight"], np.float32).T,
                            np.asarray(weights[f"model.deep.{k}.bias"], np.float32))
                           for k in layers]
        except KeyError as exc:
            raise ModelDataError(f"deepfm: missing weight {exc}") from None
        if any(w.ndim != 2 or w.shape[1] != len(b) for w, b in self.layers):
            raise ModelDataError("deepfm: weight and bias shapes disagree")

    def scores(self, user_row: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        u, items = user_row[:-1], item_rows[:, :-1]
        (w1, b1), rest = self.layers[0], self.layers[1:]
        if w1.shape[0] != 2 * len(u):
            raise ModelDataError("deepfm: first deep layer does not fit the embedding width")
        x = items @ w1[len(u):] + (u @ w1[: len(u)] + b1)
        for w, b in rest:
            x = np.maximum(x, 0.0) @ w + b
        return (x[:, 0] + items @ u + item_rows[:, -1] + (user_row[-1] + self.global_bias))


#: interaction model kind (``SnapshotMeta.model``) -> scorer built from the ``model.*`` arrays
SCORERS: dict[str, Callable[[Mapping[str, np.ndarray]], Scorer]] = {
    "mf": MFScorer, "deepfm": DeepFMScorer}


def make_scorer(kind: str, weights: Mapping[str, np.ndarray]) -> Scorer:
    factory = SCORERS.get(kind)
    if factory is None:
        raise ModelDataError(f"no scorer for model kind {kind!r} (known: {sorted(SCORERS)})")
    return factory(weights)


@dataclass(frozen=True)
class SideInfo:
    entities: int
    rows: int
    clusters: int  # rows with at least one member
    clustered: bool


@dataclass(frozen=True)
class ModelInfo:
    version: int
    seq: int
    created_at: float
    model: str
    loss: str
    dim: int
    events_applied: int
    scenarios: list[str]
    sides: dict[str, SideInfo]
    memory_bytes: int
    retrieval_weight: float
    coliked_weight: float = 0.0


@dataclass
class RetrievalStats:
    """What one retrieval touched: it grows with rows and expanded members, not the catalogue."""

    rows_scored: int = 0
    clusters_expanded: int = 0
    members_examined: int = 0


@dataclass
class Retrieval:
    items: list[tuple[str, float]]
    unknown_user: bool
    stats: RetrievalStats = field(default_factory=RetrievalStats)


def _idmap_of(arrays: Mapping[str, np.ndarray], prefix: str) -> IdMap | None:
    blob, offsets = arrays.get(f"{prefix}.blob"), arrays.get(f"{prefix}.offsets")
    if blob is None and offsets is None:
        return None
    if blob is None or offsets is None:
        raise ModelDataError(f"{prefix}: blob and offsets come together")
    try:
        return IdMap.from_arrays(blob, offsets)
    except ValueError as exc:
        raise ModelDataError(f"{prefix}: {exc}") from None


def _ids_of(arrays: Mapping[str, np.ndarray], prefix: str) -> list[str]:
    ids = _idmap_of(arrays, prefix)
    return [] if ids is None else ids.external(range(len(ids)))


def _table(array: np.ndarray | None, name: str, width: int) -> np.ndarray:
    if array is None:
        raise ModelDataError(f"missing array {name}")
    if array.ndim != 2 or array.shape[1] != width:
        raise ModelDataError(f"{name}: shape {array.shape}, expected (rows, {width})")
    return np.ascontiguousarray(array, dtype=np.float32)


def _scalar(array: np.ndarray | None, name: str) -> float:
    if array is None:
        return 0.0
    if array.size != 1:
        raise ModelDataError(f"{name} must hold one value")
    return float(np.asarray(array, np.float64).reshape(-1)[0])


def _index_pair(arrays: Mapping[str, np.ndarray], a: str, b: str
                ) -> tuple[np.ndarray, np.ndarray] | None:
    first, second = arrays.get(a), arrays.get(b)
    if first is None and second is None:
        return None
    if first is None or second is None or first.ndim != 1 or first.shape != second.shape:
        raise ModelDataError(f"{a} and {b} must be 1-d arrays of one length")
    return first.astype(np.int64), second


def _last_occurrence(index: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each distinct value (later entries win)."""
    _, first_in_reversed = np.unique(index[::-1], return_index=True)
    return len(index) - 1 - first_in_reversed


def _coliked_rows(arrays: Mapping[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``item.coliked.index`` / ``.counts`` / ``.positives`` checked (None when absent)."""
    names = ("item.coliked.index", "item.coliked.counts", "item.coliked.positives")
    index, counts, positives = (arrays.get(n) for n in names)
    if index is None and counts is None and positives is None:
        return None
    if (index is None or counts is None or positives is None or index.ndim != 1
            or counts.ndim != 2 or len(counts) != len(index) or positives.ndim != 1
            or counts.shape[1] != len(positives)):
        raise ModelDataError("item.coliked: index (R,), counts (R, rows), positives (rows,)")
    index = index.astype(np.int64)
    if ((index < 0) | (index >= len(positives))).any():
        raise ModelDataError("item.coliked.index out of range")
    return index, counts.astype(np.float32), positives.astype(np.float32)


class _ColikedRows:
    """The trainer's co-liked counts between item rows (``cel.covisit``), rows x rows."""

    def __init__(self) -> None:
        self.counts = np.zeros((0, 0), np.float32)
        self.positives = np.zeros(0, np.float32)

    def set(self, index: np.ndarray, counts: np.ndarray, positives: np.ndarray) -> None:
        self.counts = grown_square(self.counts, len(positives))
        self.counts[index, : counts.shape[1]] = counts
        self.positives = positives

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + self.positives.nbytes


class _Members:
    """Item ids per item row: a base array per row plus pending adds/removes (O(1) edits)."""

    def __init__(self, assign: np.ndarray, rows: int):
        valid = np.flatnonzero(assign >= 0)
        order = valid[np.argsort(assign[valid], kind="stable")]
        counts = np.bincount(assign[valid], minlength=rows)
        self.base: list[np.ndarray] = list(np.split(order, np.cumsum(counts)[:-1]))
        self.added: dict[int, set[int]] = {}
        self.removed: dict[int, set[int]] = {}
        self.ranked: dict[int, np.ndarray] = {}
        self.ensure_rows(rows)

    def ensure_rows(self, rows: int) -> None:
        while len(self.base) < rows:
            self.base.append(np.zeros(0, dtype=np.int64))

    def move(self, item: int, old: int, new: int) -> None:
        if old == new:
            return
        if old >= 0:  # invariant: removed[r] is a subset of base[r], added[r] is disjoint
            added = self.added.get(old)
            if added is not None and item in added:
                added.discard(item)
            else:
                self.removed.setdefault(old, set()).add(item)
            self.ranked.pop(old, None)
        if new >= 0:
            removed = self.removed.get(new)
            if removed is not None and item in removed:
                removed.discard(item)
            else:
                self.added.setdefault(new, set()).add(item)
            self.ranked.pop(new, None)

    def ranking(self, row: int, key: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Members of ``row``, highest ``key(members)`` first (ties: older ids first);
        cached until the row's members or their keys change (:meth:`changed`)."""
        cached = self.ranked.get(row)
        if cached is not None:
            return cached
        members = self.base[row]
        removed, added = self.removed.pop(row, None), self.added.pop(row, None)
        if removed:
            members = members[~np.isin(members, np.fromiter(removed, np.int64, len(removed)))]
        if added:
            members = np.concatenate([members, np.fromiter(added, np.int64, len(added))])
        order = np.lexsort((members, -key(members)))
        self.base[row] = ranked = members[order]
        self.ranked[row] = ranked
        return ranked

    def changed(self, rows: np.ndarray) -> None:
        """The keys of some members of ``rows`` changed: rank those rows anew."""
        for row in np.unique(rows).tolist():
            self.ranked.pop(row, None)

    @property
    def nbytes(self) -> int:
        pending = sum(len(s) for s in (*self.added.values(), *self.removed.values()))
        return sum(a.nbytes for a in self.base) + 8 * pending + sum(
            a.nbytes for a in self.ranked.values())


class _Side:
    """Id map, assignments (with spare capacity), table and member count per row."""

    def __init__(self, name: str, meta: SideMeta, arrays: Mapping[str, np.ndarray], width: int):
        ids = _idmap_of(arrays, f"{name}.ids")
        if ids is None:
            raise ModelDataError(f"missing arrays {name}.ids.blob / {name}.ids.offsets")
        self.ids = ids
        self.id_bytes = len(arrays[f"{name}.ids.blob"])
        self.clustered = meta.clustered
        self.table = _table(arrays.get(f"{name}.table"), f"{name}.table", width)
        assign = arrays.get(f"{name}.assign")
        if assign is None and not meta.clustered:
            assign = np.arange(len(ids))  # one row per entity, in internal-id order
        if assign is None or assign.ndim != 1 or len(assign) != len(ids):
            raise ModelDataError(f"{name}.assign must hold one row per id ({len(ids)})")
        assign = assign.astype(np.int32)
        if len(assign) and (assign.min() < -1 or assign.max() >= len(self.table)):
            raise ModelDataError(f"{name}.assign points outside the table")
        self.n = len(ids)
        self.assign = grown(np.zeros(0, np.int32), self.n, -1)
        self.assign[: self.n] = assign
        self.counts = np.bincount(assign[assign >= 0], minlength=len(self.table))
        # Own bias per entity (``{side}.bias``), None when the learner keeps none; unknown
        # ids get the learnt first-sight bias (``{side}.bias_prior``).
        bias = arrays.get(f"{name}.bias")
        self.bias: np.ndarray | None = None
        self.bias_prior = _scalar(arrays.get(f"{name}.bias_prior"), f"{name}.bias_prior")
        if bias is not None:
            if bias.ndim != 1 or len(bias) != self.n:
                raise ModelDataError(f"{name}.bias must hold one value per id ({self.n})")
            self.bias = grown(np.zeros(0, np.float32), self.n, 0)
            self.bias[: self.n] = bias

    @property
    def rows(self) -> int:
        return len(self.table)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Row per external id; -1 where unknown (or known but not yet placed)."""
        return self.rows_and_bias(ids)[0]

    def rows_and_bias(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row per external id (-1 where unknown) and its own bias (0 where unknown)."""
        internal = self.ids.lookup(ids)
        rows = np.full(len(internal), -1, dtype=np.int64)
        bias = np.zeros(len(internal), dtype=np.float64)
        known = internal >= 0
        rows[known] = self.assign[internal[known]]
        if self.bias is not None:
            bias[known] = self.bias[internal[known]]
        bias[rows < 0] = self.bias_prior
        return rows, bias

    def add_ids(self, new_ids: list[str]) -> None:
        self.ids.lookup_or_add(new_ids)
        self.id_bytes += sum(len(s) for s in new_ids)
        self.n += len(new_ids)
        self.assign = grown(self.assign, self.n, -1)
        if self.bias is not None:
            self.bias = grown(self.bias, self.n, 0)

    def set_bias(self, index: np.ndarray, values: np.ndarray) -> None:
        if self.bias is None:
            self.bias = grown(np.zeros(0, np.float32), self.n, 0)
        self.bias[index] = values

    def set_table(self, table: np.ndarray) -> None:
        self.table = table
        if len(self.counts) < len(table):
            self.counts = np.concatenate(
                [self.counts, np.zeros(len(table) - len(self.counts), self.counts.dtype)])

    def reassign(self, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Set the rows of ``index`` (distinct ids); returns their previous rows."""
        old = self.assign[index].astype(np.int64)
        np.subtract.at(self.counts, old[old >= 0], 1)
        np.add.at(self.counts, rows, 1)
        self.assign[index] = rows
        return old

    @property
    def nbytes(self) -> int:
        own = 0 if self.bias is None else self.bias.nbytes
        return (self.table.nbytes + self.assign.nbytes + self.counts.nbytes + self.id_bytes
                + own + _ID_OVERHEAD_BYTES * self.n)


class ServingModel:
    """One published version, kept current by deltas; every public method is thread-safe."""

    def __init__(self, meta: SnapshotMeta, arrays: Mapping[str, np.ndarray]):
        if set(meta.sides) != set(SIDES):
            raise ModelDataError(f"snapshot must describe sides {SIDES}, got {sorted(meta.sides)}")
        self._lock = threading.Lock()
        self.version = meta.version  # fixed: a new version is a new ServingModel
        self.seq = 0
        self.kind, self.loss, self.dim = meta.model, meta.loss, meta.dim
        self.created_at = meta.created_at
        self.events_applied = meta.events_applied
        self.offsets = dict(meta.offsets)
        self.side_meta = dict(meta.sides)
        width = meta.dim + 1
        self._user = _Side("user", meta.sides["user"], arrays, width)
        self._item = _Side("item", meta.sides["item"], arrays, width)
        self._weights = {k: np.asarray(v) for k, v in arrays.items() if k.startswith("model.")}
        self.network = dict(meta.network)
        self._scorer = self._build_scorer(self._weights)
        pop = arrays.get("item.popularity")
        if pop is not None and (pop.ndim != 1 or len(pop) != self._item.n):
            raise ModelDataError(f"item.popularity must hold one count per item ({self._item.n})")
        self._popularity = grown(np.zeros(0, np.int64), self._item.n, 0)
        if pop is not None:
            self._popularity[: self._item.n] = pop
        self.scenarios = list(meta.scenarios)
        # the weight of the model's score in recommendations, as the trainer chose it
        self.retrieval_weight = (DEFAULT_WEIGHT if meta.retrieval_weight is None
                                 else meta.retrieval_weight)
        self._prior = self._checked_prior(arrays.get("scenario.item_cluster_popularity"),
                                          len(self.scenarios))
        self._members = _Members(self._item.assign[: self._item.n], self._item.rows)
        self._coliked: _ColikedRows | None = None
        coliked = _coliked_rows(arrays)
        if coliked is not None:
            self._coliked = _ColikedRows()
            self._coliked.set(*coliked)
        # the weight of co-liked items in recommendations, as the trainer chose it
        self.coliked_weight = (COLIKED_WEIGHT if meta.coliked_weight is None
                               else meta.coliked_weight)
        self._invalidate_caches()

    # ----------------------------------------------------------------- model hooks

    #: whether scoring needs the user's behaviour sequence (``schemas.sequence``)
    needs_sequence = False
    #: a never-seen item is scored with its scenario's most popular item row (saml/dupn), or
    #: with the largest row, where the online trainer (``cel.online``) will place it (mf)
    cold_item_by_scenario = False

    def _build_scorer(self, weights: Mapping[str, np.ndarray]) -> Scorer:
        return make_scorer(self.kind, weights)

    def _check_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        make_scorer(self.kind, weights)  # raises ModelDataError before anything changes

    def _raw_scores(self, user_row: int, item_rows: np.ndarray, scenario: str | None,
                    request: RequestContext | None) -> np.ndarray:
        return self._scorer.scores(self._user.table[user_row], self._item.table[item_rows])

    def _user_vector(self, user_row: int, scenario: str | None,
                     request: RequestContext | None) -> np.ndarray:
        return self._user.table[user_row, :-1].astype(np.float64)  # factors, no bias

    # ----------------------------------------------------------------- reading

    def score(self, user_id: str, item_ids: Sequence[str], scenario: str | None = None,
              request: RequestContext | None = None) -> tuple[np.ndarray, bool, list[bool]]:
        """Scores (probabilities under logloss) of ``item_ids`` for ``user_id``; unknown ids
        are scored with the cold-start rows and flagged, never refused. ``request``: the
        user's sequence and the time (models with ``needs_sequence``)."""
        with self._lock:
            user_row, unknown_user, user_bias = self._user_row_and_bias(user_id)
            rows, item_bias = self._item.rows_and_bias(item_ids)
            unknown = rows < 0
            if unknown.any():
                rows[unknown] = self._cold_item_row(scenario)
            raw = self._raw_scores(user_row, rows, scenario, request)
            raw = raw + item_bias + user_bias
            return self._output(raw), unknown_user, unknown.tolist()

    def representation(self, user_id: str, scenario: str | None = None,
                       request: RequestContext | None = None) -> tuple[np.ndarray, bool]:
        """The user's vector and whether the user is unknown (then: the cold-start user's).
        mf and saml: the user's embedding row (its cluster row, bias left out); dupn: the
        user representation (sequence -> gated LSTM -> attention, plus the user row)."""
        with self._lock:
            user_row, unknown_user = self._user_row(user_id)
            return self._user_vector(user_row, scenario, request), unknown_user

    def recommend(self, user_id: str, n: int, scenario: str | None = None,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        return self.retrieve(user_id, n, scenario, exclude).items

    def retrieve(self, user_id: str, n: int, scenario: str | None = None,
                 exclude: Collection[str] = (), request: RequestContext | None = None,
                 anchors: Sequence[str] = (), anchor_weight: float | None = None
                 ) -> Retrieval:
        """Top ``n`` items by ``retrieval_weight`` x the model's score (the user's row
        against the item's row, plus the item's own bias) + log(1 + the item's positives):
        what the user likes, weighted by what users choose.

        The row part is shared by a row's members and the rest does not depend on the user,
        so each row keeps its members ranked by the rest; rows are expanded best bound first
        and the walk stops when no unexpanded row can beat the n-th item: exact, and it
        grows with rows and expanded members, not with the catalogue.

        ``anchors``: the user's latest positive items; every item of a row co-liked with
        theirs (``cel.covisit``) gets ``anchor_weight`` (default: the trainer's
        ``coliked_weight``) x log(1 + co) more, a part of its row's score like the model's."""
        with self._lock:
            user_row, unknown_user, user_bias = self._user_row_and_bias(user_id)
            item = self._item
            live = np.flatnonzero(item.counts[: item.rows] > 0)
            raw = self._raw_scores(user_row, live, scenario, request)
            row_part = self.retrieval_weight * raw
            skip = item.ids.lookup(list(exclude)) if exclude else np.zeros(0, np.int64)
            skip = np.unique(skip[skip >= 0])
            skip_set = set(skip.tolist())  # per-row windows are short: a set beats np.isin
            weight = self.coliked_weight if anchor_weight is None else anchor_weight
            row_part = row_part + weight * np.log1p(self._co_liked(anchors, live, weight))
            stats = RetrievalStats(rows_scored=len(live))
            heads, head_quality = self._row_heads(live)
            bound = row_part + head_quality
            bound[np.isnan(bound)] = np.inf  # a diverged row comes first: the caller sees NaN
            best_ids: list[np.ndarray] = []
            best_raw: list[np.ndarray] = []
            best_total: list[np.ndarray] = []
            nth = -np.inf
            for k in np.argsort(-bound, kind="stable"):
                if bound[k] == -np.inf or (stats.clusters_expanded and bound[k] <= nth):
                    break
                # At most len(skip) of them are excluded, so this window always suffices.
                window = heads[k][: n + len(skip)]
                stats.clusters_expanded += 1
                stats.members_examined += len(window)
                if len(skip):
                    window = window[np.fromiter((w not in skip_set for w in window.tolist()),
                                                bool, len(window))]
                window = window[:n]
                if not len(window):
                    continue
                own = self._own_item_bias(window)
                best_ids.append(window)
                best_raw.append(raw[k] + own)
                part = row_part[k] + self._quality(window)
                best_total.append(np.where(np.isnan(part), np.inf, part))
                total = np.concatenate(best_total)
                if len(total) >= n:
                    nth = np.partition(total, len(total) - n)[len(total) - n]
            if best_ids:
                ids_all, raw_all = np.concatenate(best_ids), np.concatenate(best_raw)
                order = np.argsort(-np.concatenate(best_total), kind="stable")[:n]
                internal, chosen_raw = ids_all[order], raw_all[order]
            else:
                internal, chosen_raw = np.zeros(0, np.int64), np.zeros(0)
            scores = self._output(chosen_raw + user_bias) if len(internal) else np.zeros(0)
            ids = item.ids.external(internal.tolist())
            items = list(zip(ids, scores.tolist(), strict=True))
            return Retrieval(items=items, unknown_user=unknown_user, stats=stats)

    def _row_heads(self, live: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Each live row's members, ranked, and its best member's quality (-inf: none):
        the same for every user until the model changes, so kept until the next delta
        (at the default 256 rows, recomputing them was most of a request's time)."""
        cached = self._heads
        if cached is None or not np.array_equal(cached[0], live):
            heads = [self._members.ranking(int(r), self._quality) for r in live]
            tops = np.array([h[0] if len(h) else 0 for h in heads], dtype=np.int64)
            empty = np.array([not len(h) for h in heads], dtype=bool)
            quality = np.where(empty, -np.inf, self._quality(tops))
            self._heads = cached = (live, heads, quality)
        return cached[1], cached[2]

    def _co_liked(self, anchors: Sequence[str], live: np.ndarray, weight: float
                  ) -> np.ndarray:
        """``co`` of each ``live`` row for a user whose latest positives are ``anchors``."""
        if self._coliked is None or not anchors or weight <= 0:
            return np.zeros(len(live))
        internal = self._item.ids.lookup(list(anchors))
        anchor_rows = self._item.assign[internal[internal >= 0]]
        return co_at(self._coliked.counts, self._coliked.positives, anchor_rows, live)

    def _own_item_bias(self, internal: np.ndarray) -> np.ndarray:
        bias = self._item.bias
        return np.zeros(len(internal)) if bias is None else bias[internal].astype(np.float64)

    def _quality(self, internal: np.ndarray) -> np.ndarray:
        """The user-independent part of an item's retrieval score."""
        return (np.log1p(self._popularity[internal].astype(np.float64))
                + self.retrieval_weight * self._own_item_bias(internal))

    def info(self) -> ModelInfo:
        with self._lock:
            sides = {
                name: SideInfo(entities=side.n, rows=side.rows,
                               clusters=int(np.count_nonzero(side.counts[: side.rows])),
                               clustered=self.side_meta[name].clustered)
                for name, side in (("user", self._user), ("item", self._item))
            }
            return ModelInfo(
                version=self.version, seq=self.seq, created_at=self.created_at,
                model=self.kind, loss=self.loss, dim=self.dim,
                events_applied=self.events_applied, scenarios=list(self.scenarios),
                sides=sides, memory_bytes=self._nbytes(),
                retrieval_weight=self.retrieval_weight,
                coliked_weight=self.coliked_weight if self._coliked is not None else 0.0,
            )

    @property
    def has_coliked(self) -> bool:
        """Whether the model holds co-liked items with a weight above 0 (only then do
        recommendations read the user's latest positives: at weight 0 they change nothing)."""
        return self._coliked is not None and self.coliked_weight > 0

    def memory_bytes(self) -> int:
        with self._lock:
            return self._nbytes()

    def cluster_sizes(self, side: str) -> np.ndarray:
        """Members per row of ``side`` (a copy)."""
        with self._lock:
            s = self._user if side == "user" else self._item
            return s.counts[: s.rows].copy()

    def largest_clusters(self, side: str, k: int, shown: int) -> list[tuple[int, int, list[str]]]:
        """(row, size, a few member ids) of the ``k`` biggest rows of ``side``; item members
        come most popular first. O(entities) per row listed: for dashboards, not requests."""
        with self._lock:
            s = self._user if side == "user" else self._item
            counts = s.counts[: s.rows]
            out = []
            for row in np.argsort(-counts, kind="stable")[:k]:
                if counts[row] <= 0:
                    break
                members = np.flatnonzero(s.assign[: s.n] == row)
                if side == "item":
                    members = members[np.argsort(-self._popularity[members], kind="stable")]
                out.append((int(row), int(counts[row]), s.ids.external(members[:shown].tolist())))
            return out

    # ----------------------------------------------------------------- deltas

    def apply_delta(self, header: DeltaHeader, arrays: Mapping[str, np.ndarray]) -> None:
        """Apply the next delta of this version. Everything is checked before anything
        changes, so a :class:`ModelDataError` leaves the model as it was."""
        with self._lock:
            if header.version != self.version or header.seq != self.seq + 1:
                raise DeltaMismatch(
                    f"delta v{header.version}#{header.seq} does not follow "
                    f"v{self.version}#{self.seq}")
            plan = self._check_delta(header, arrays)
            for name, side in (("user", self._user), ("item", self._item)):
                new_ids, table, changed = plan[name]
                if new_ids:
                    side.add_ids(new_ids)
                if table is not None:
                    side.set_table(table)
                own = plan[f"{name}.bias"]
                if own is not None:
                    side.set_bias(*own)
                if plan[f"{name}.bias_prior"] is not None:
                    side.bias_prior = plan[f"{name}.bias_prior"]
                if changed is not None:
                    index, rows = changed
                    old = side.reassign(index, rows)
                    if name == "item":
                        self._members.ensure_rows(side.rows)
                        for k, was, now in zip(index.tolist(), old.tolist(), rows.tolist(),
                                               strict=True):
                            self._members.move(k, was, now)
            self._members.ensure_rows(self._item.rows)
            self._popularity = grown(self._popularity, self._item.n, 0)
            popularity = plan["popularity"]
            if popularity is not None:
                index, values = popularity
                self._popularity[index] = values
                self._members.changed(self._item.assign[index])
            own = plan["item.bias"]
            if own is not None:
                self._members.changed(self._item.assign[own[0]])
            coliked = plan["coliked"]
            if coliked is not None:
                if self._coliked is None:
                    self._coliked = _ColikedRows()
                self._coliked.set(*coliked)
            if header.scenarios:
                self.scenarios = list(header.scenarios)
            if header.coliked_weight is not None:
                self.coliked_weight = header.coliked_weight
            weight = header.retrieval_weight
            if weight is not None and weight != self.retrieval_weight:
                self.retrieval_weight = weight
                self._members.ranked.clear()  # each row's members are ranked by the weight
            if plan["prior"] is not None:
                self._prior = plan["prior"]
            weights = plan["weights"]
            if weights:
                self._weights.update(weights)
                self._scorer = self._build_scorer(self._weights)
            self.side_meta.update(header.sides)
            self.seq = header.seq
            self.created_at = header.created_at
            self.events_applied = header.events_applied
            self.offsets.update(header.offsets)
            self._invalidate_caches()

    def _check_delta(self, header: DeltaHeader, arrays: Mapping[str, np.ndarray]) -> dict:
        width = self.dim + 1
        plan: dict = {}
        sizes: dict[str, int] = {}
        for name, side in (("user", self._user), ("item", self._item)):
            new_ids = _ids_of(arrays, f"{name}.new_ids")
            if new_ids:
                first = header.first_new.get(name, side.n)
                if first != side.n:
                    raise ModelDataError(f"{name} new ids start at {first}, model has {side.n}")
                if len(set(new_ids)) != len(new_ids) or (side.ids.lookup(new_ids) >= 0).any():
                    raise ModelDataError(f"{name} new ids repeat known ids")
            n_after = side.n + len(new_ids)
            sizes[name] = n_after
            table = None
            if f"{name}.table" in arrays:
                table = _table(arrays[f"{name}.table"], f"{name}.table", width)
                if len(table) < side.rows:
                    raise ModelDataError(f"{name}.table shrank from {side.rows} rows")
            rows_after = side.rows if table is None else len(table)
            changed = _index_pair(arrays, f"{name}.changed.index", f"{name}.changed.row")
            if changed is not None:
                index, rows = changed
                rows = rows.astype(np.int64)
                bad = (index < 0) | (index >= n_after) | (rows < 0) | (rows >= rows_after)
                if bad.any():
                    raise ModelDataError(f"{name}.changed holds ids or rows out of range")
                keep = _last_occurrence(index)
                changed = (index[keep], rows[keep])
            plan[name] = (new_ids, table, changed)
            own = _index_pair(arrays, f"{name}.bias.index", f"{name}.bias.value")
            if own is not None:
                if ((own[0] < 0) | (own[0] >= n_after)).any():
                    raise ModelDataError(f"{name}.bias.index out of range")
                keep = _last_occurrence(own[0])
                own = (own[0][keep], own[1][keep].astype(np.float32))
            plan[f"{name}.bias"] = own
            prior = arrays.get(f"{name}.bias_prior")
            plan[f"{name}.bias_prior"] = (None if prior is None
                                          else _scalar(prior, f"{name}.bias_prior"))
        popularity = _index_pair(arrays, "item.popularity.index", "item.popularity.value")
        if popularity is not None:
            index, values = popularity
            if ((index < 0) | (index >= sizes["item"])).any():
                raise ModelDataError("item.popularity.index out of range")
            keep = _last_occurrence(index)
            popularity = (index[keep], values[keep].astype(np.int64))
        plan["popularity"] = popularity
        plan["coliked"] = _coliked_rows(arrays)
        scenarios = header.scenarios or self.scenarios
        plan["prior"] = self._checked_prior(arrays.get("scenario.item_cluster_popularity"),
                                            len(scenarios), allow_missing=True)
        plan["weights"] = {k: np.asarray(v) for k, v in arrays.items() if k.startswith("model.")}
        if plan["weights"]:
            self._check_weights({**self._weights, **plan["weights"]})  # fails before changes
        return plan

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _checked_prior(prior: np.ndarray | None, scenarios: int,
                       allow_missing: bool = False) -> np.ndarray | None:
        if prior is None:
            return None if allow_missing else np.zeros((scenarios, 0), np.float64)
        if prior.ndim != 2 or prior.shape[0] != scenarios:
            raise ModelDataError(
                f"scenario.item_cluster_popularity: shape {prior.shape}, expected "
                f"({scenarios}, item rows)")
        return prior.astype(np.float64)

    def _invalidate_caches(self) -> None:
        self._heads: tuple[np.ndarray, list[np.ndarray], np.ndarray] | None = None
        self._cold_user: int | None = None
        self._priors: dict[str | None, np.ndarray] = {}

    def _user_row(self, user_id: str) -> tuple[int, bool]:
        row, unknown, _ = self._user_row_and_bias(user_id)
        return row, unknown

    def _user_row_and_bias(self, user_id: str) -> tuple[int, bool, float]:
        """The user's row (the typical user's when unknown), whether unknown, own bias."""
        rows, bias = self._user.rows_and_bias([user_id])
        if rows[0] >= 0:
            return int(rows[0]), False, float(bias[0])
        if self._cold_user is None:  # the most common user row: the typical user
            counts = self._user.counts[: self._user.rows]
            self._cold_user = int(np.argmax(counts)) if len(counts) else 0
        return self._cold_user, True, float(bias[0])

    def _prior_for(self, scenario: str | None) -> np.ndarray:
        """Positive events per item row in ``scenario`` (all scenarios when it is unknown)."""
        cached = self._priors.get(scenario)
        if cached is not None:
            return cached
        index = self.scenarios.index(scenario) if scenario in self.scenarios else None
        if index is None:
            counts = self._prior.sum(axis=0)
        elif index < len(self._prior):
            counts = self._prior[index]
        else:  # a scenario the prior does not cover yet
            counts = np.zeros(0)
        rows = self._item.rows
        out = np.zeros(rows, np.float64)
        out[: min(rows, len(counts))] = counts[:rows]
        self._priors[scenario] = out
        return out

    def _cold_item_row(self, scenario: str | None) -> int:
        prior = self._prior_for(scenario) if self.cold_item_by_scenario else np.zeros(0)
        if len(prior) and prior.max() > 0:
            return int(np.argmax(prior))
        counts = self._item.counts[: self._item.rows]  # no events yet: the largest row
        return int(np.argmax(counts)) if len(counts) else 0

    def _output(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.loss == "logloss":
            with np.errstate(invalid="ignore"):  # NaN in, NaN out: the caller checks
                return np.exp(-np.logaddexp(0.0, -raw))  # sigmoid without overflow
        return raw

    def _nbytes(self) -> int:
        weights = sum(w.nbytes for w in self._weights.values())
        coliked = 0 if self._coliked is None else self._coliked.nbytes
        return (self._user.nbytes + self._item.nbytes + self._popularity.nbytes
                + self._prior.nbytes + self._members.nbytes + weights + coliked)


__all__ = ["DEEP_MODEL_KINDS", "DeltaMismatch", "MFScorer", "ModelDataError", "ModelInfo",
           "RequestContext", "Retrieval",
           "RetrievalStats", "SCORERS", "Scorer", "ServingModel", "SideInfo", "make_scorer"]
