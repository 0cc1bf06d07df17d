"""Online peers for the prequential benchmark (bench/prequential.py), settings of
/work/shared/docs/evaluation.md.

Every peer learns one event at a time, in stream order. When it scores is its ``updates`` setting:

- ``event`` (the default): inside ``process`` it scores event k, learns event k, then goes on to
  k+1, so each event is scored by a model that has seen every earlier event;
- ``chunk``: ``process`` first scores every event of the chunk with the state from before the
  chunk, then learns the chunk's events one at a time in order -- the freshness celrec gets through
  the API (it scores a chunk, then learns it).

Scoring peers return predictions (probability of 1 on binary streams, the rating on rating
streams); the top-N peers (``popularity``, ``isgd``) return None from ``process`` and answer
``recommend``. The benchmark asks for recommendations before the chunk is processed, so they
always answer with the state from before the chunk: ``updates`` does not change them.

River and Vowpal Wabbit are optional: their peers raise ``PeerUnavailable`` naming the missing
package when built without it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np


class PeerUnavailable(RuntimeError):
    """A peer's package is not installed (the message says which)."""


def deep_sizeof(obj, _seen: set[int] | None = None) -> int:
    """Approximate bytes held by a Python object graph (numpy arrays by ``nbytes``).

    Follows containers and instance attributes; modules, classes and functions are not counted.
    """
    seen = _seen if _seen is not None else set()
    stack = [obj]
    total = 0
    skip = (type, type(sys), type(deep_sizeof), type(len))
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip) or callable(o) and not hasattr(o, "__dict__"):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            total += sys.getsizeof(o) + (o.nbytes if o.base is None else 0)
            if o.dtype == object:
                stack.extend(o.ravel().tolist())
            continue
        try:
            total += sys.getsizeof(o)
        except TypeError:
            continue
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, (str, bytes, int, float, bool, complex)) or o is None:
            continue
        else:
            d = getattr(o, "__dict__", None)
            if isinstance(d, dict):
                stack.append(d)
            for name in getattr(type(o), "__slots__", ()):
                if hasattr(o, name):
                    stack.append(getattr(o, name))
    return total


UPDATES = ("event", "chunk")


class _Base:
    name = "peer"
    updates = "event"

    def score_one(self, user: str, item: str) -> float:
        raise NotImplementedError

    def learn_one(self, user: str, item: str, value: float) -> None:
        raise NotImplementedError

    def process(self, users, items, values, timestamps):
        out = np.empty(len(items), dtype=np.float64)
        vals = values.tolist()
        if self.updates == "chunk":
            for k, (u, i) in enumerate(zip(users, items, strict=True)):
                out[k] = self.score_one(u, i)
            for u, i, v in zip(users, items, vals, strict=True):
                self.learn_one(u, i, v)
        else:
            for k, (u, i, v) in enumerate(zip(users, items, vals, strict=True)):
                out[k] = self.score_one(u, i)
                self.learn_one(u, i, v)
        return out

    def recommend(self, user: str, n: int, exclude: set[str]) -> list[str] | None:
        return None

    def memory_bytes(self) -> int | None:
        return deep_sizeof(self)


class Counter(_Base):
    """Per-item mean (CTR, or rating) with a prior of strength 2 around the running global mean.

    ``p = (sum_i + 2 g) / (n_i + 2)`` with ``g`` the mean of every value seen so far (0.5 before
    the first event on binary streams; 0.0 on rating streams, like River's reco models).
    """

    name = "counter"

    def __init__(self, task: str = "binary", strength: float = 2.0, updates: str = "event"):
        self.updates = updates
        self.strength = strength
        self.initial = 0.5 if task == "binary" else 0.0
        self.total = 0.0
        self.count = 0
        self.sums: dict[str, float] = {}
        self.ns: dict[str, int] = {}

    def score_one(self, user: str, item: str) -> float:
        g = self.total / self.count if self.count else self.initial
        return (self.sums.get(item, 0.0) + self.strength * g) / (self.ns.get(item, 0)
                                                                 + self.strength)

    def learn_one(self, user: str, item: str, value: float) -> None:
        self.total += value
        self.count += 1
        self.sums[item] = self.sums.get(item, 0.0) + value
        self.ns[item] = self.ns.get(item, 0) + 1


def _river():
    try:
        import river  # noqa: F401
        from river import facto, optim, reco
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PeerUnavailable(f"river not installed ({exc.__class__.__name__}: {exc})") from exc
    return facto, optim, reco


class RiverFM(_Base):
    """river.facto.FMClassifier, features ``{u_<user>: 1, i_<item>: 1}``."""

    name = "river-fm"

    def __init__(self, seed: int = 0, updates: str = "event"):
        facto, optim, _ = _river()
        self.updates = updates
        self.model = facto.FMClassifier(
            n_factors=16, intercept=0, sample_normalization=False,
            weight_optimizer=optim.SGD(0.05), latent_optimizer=optim.SGD(0.05), seed=seed)

    def score_one(self, user, item):
        return self.model.predict_proba_one({f"u_{user}": 1, f"i_{item}": 1}).get(True, 0.0)

    def learn_one(self, user, item, value):
        self.model.learn_one({f"u_{user}": 1, f"i_{item}": 1}, value > 0)


class RiverReco(_Base):
    """river.reco.Baseline (biases, SGD 0.005) or river.reco.BiasedMF (k=10, River's defaults)."""

    def __init__(self, kind: str, seed: int = 0, updates: str = "event"):
        _, optim, reco = _river()
        self.updates = updates
        self.name = f"river-{kind}"
        if kind == "baseline":
            self.model = reco.Baseline(optimizer=optim.SGD(0.005), seed=seed)
        elif kind == "biasedmf":
            self.model = reco.BiasedMF(n_factors=10, seed=seed)
        else:
            raise ValueError(kind)

    def score_one(self, user, item):
        return self.model.predict_one(user, item)

    def learn_one(self, user, item, value):
        self.model.learn_one(user, item, value)


def _vw_token(s: str) -> str:
    # VW feature names cannot hold whitespace, '|' or ':'
    return s.replace(" ", "_").replace("\t", "_").replace("|", "_").replace(":", "_")


class VWLrq(_Base):
    """Vowpal Wabbit, logistic loss and link, ``--lrq ui16 -b 20 -l 0.1``; one learn per event.

    Examples are ``<label> |u <user> |i <item>`` (the ids bare inside their namespaces: this form
    reproduces evaluation.md's figures exactly; ``u_<user>``/``i_<item>`` names only hash
    differently, ml100k-likes AUC 0.7101 instead of 0.7111). Labels -1/1; with
    ``--link logistic`` ``predict`` returns the probability of the label 1.
    """

    name = "vw-lrq"
    ARGS = "--loss_function logistic --link logistic --lrq ui16 -b 20 -l 0.1 --quiet"

    def __init__(self, seed: int = 0, updates: str = "event"):
        self.updates = updates
        try:
            import vowpalwabbit
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise PeerUnavailable(
                f"vowpalwabbit not installed ({exc.__class__.__name__}: {exc})") from exc
        self.vw = vowpalwabbit.Workspace(f"{self.ARGS} --random_seed {seed}")

    def score_one(self, user, item):
        return self.vw.predict(f"|u {_vw_token(user)} |i {_vw_token(item)}")

    def learn_one(self, user, item, value):
        self.vw.learn(("1 " if value > 0 else "-1 ") + f"|u {_vw_token(user)} |i {_vw_token(item)}")

    def memory_bytes(self) -> int | None:
        return self.vw.num_weights() * self.vw.get_stride() * 4


def _top_n(scores: np.ndarray, names: Sequence[str], index: dict[str, int], n: int,
           exclude: set[str]) -> list[str]:
    """The ``n`` best names by score, excluded ones removed; ties go to the earlier-seen name."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    for it in exclude:
        j = index.get(it)
        if j is not None and j < len(scores):
            scores[j] = -np.inf
    m = len(scores)
    if m == 0 or n <= 0:
        return []
    if n < m:
        kth = np.partition(scores, m - n)[m - n]  # the n-th largest score
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(m)
    cand = cand[np.isfinite(scores[cand])]
    order = np.lexsort((cand, -scores[cand]))  # score descending, then index ascending
    return [names[j] for j in cand[order[:n]]]


class Popularity(_Base):
    """Top-N by the number of positives of each item so far; only recommends."""

    name = "popularity"

    def __init__(self):
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.counts = np.zeros(1024, dtype=np.float64)

    def process(self, users, items, values, timestamps):
        for i, v in zip(items, values.tolist(), strict=True):
            if v <= 0:
                continue
            j = self.index.get(i)
            if j is None:
                j = self.index[i] = len(self.names)
                self.names.append(i)
                if j >= len(self.counts):
                    self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
            self.counts[j] += 1
        return None

    def recommend(self, user, n, exclude):
        return _top_n(self.counts[: len(self.names)], self.names, self.index, n, exclude)


class ISGD(_Base):
    """Incremental SGD matrix factorisation on positives (Vinagre, Jorge, Gama, UMAP 2014).

    For each positive ``(u, i)``: ``err = 1 - a_u . b_i``, ``a_u += lr (err b_i - l2 a_u)``,
    ``b_i += lr (err a_u - l2 b_i)`` (both from the vectors before the step); new vectors are drawn
    from N(0, 0.1) by a seeded generator. Recommends the top-N items by ``a_u . b_i`` over every
    item seen in a positive, excluded ones removed; only recommends.
    """

    name = "isgd"

    def __init__(self, k: int = 32, lr: float = 0.05, l2: float = 0.01, init_std: float = 0.1,
                 seed: int = 0):
        self.k, self.lr, self.l2, self.init_std = k, lr, l2, init_std
        self.rng = np.random.default_rng(seed)
        self.users: dict[str, np.ndarray] = {}
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.B = np.zeros((1024, k), dtype=np.float64)

    def _item_row(self, item: str) -> int:
        j = self.index.get(item)
        if j is None:
            j = self.index[item] = len(self.names)
            self.names.append(item)
            if j >= len(self.B):
                self.B = np.concatenate([self.B, np.zeros_like(self.B)])
            self.B[j] = self.rng.normal(0.0, self.init_std, self.k)
        return j

    def learn_one(self, user: str, item: str) -> None:
        a = self.users.get(user)
        if a is None:
            a = self.users[user] = self.rng.normal(0.0, self.init_std, self.k)
        j = self._item_row(item)
        b = self.B[j]
        err = 1.0 - float(a @ b)
        a_new = a + self.lr * (err * b - self.l2 * a)
        self.B[j] = b + self.lr * (err * a - self.l2 * b)
        self.users[user] = a_new

    def process(self, users, items, values, timestamps):
        for u, i, v in zip(users, items, values.tolist(), strict=True):
            if v > 0:
                self.learn_one(u, i)
        return None

    def recommend(self, user, n, exclude):
        a = self.users.get(user)
        if a is None:
            return []
        m = len(self.names)
        # einsum, not BLAS: a threaded gemv per query was 10x slower on a busy 2-core machine
        return _top_n(np.einsum("ij,j->i", self.B[:m], a), self.names, self.index, n, exclude)


def make_peer(name: str, task: str, seed: int = 0, updates: str = "event"):
    """Build a peer by name (raises ``PeerUnavailable`` when its package is missing).

    ``updates`` (``event`` or ``chunk``, see the module docstring) applies to the scoring peers;
    the top-N peers are the same either way."""
    if updates not in UPDATES:
        raise ValueError(f"updates must be one of {UPDATES}, not {updates!r}")
    if name == "counter":
        return Counter(task, updates=updates)
    if name == "river-fm":
        return RiverFM(seed, updates)
    if name == "vw-lrq":
        return VWLrq(seed, updates)
    if name == "river-baseline":
        return RiverReco("baseline", seed, updates)
    if name == "river-biasedmf":
        return RiverReco("biasedmf", seed, updates)
    if name == "popularity":
        return Popularity()
    if name == "isgd":
        return ISGD(seed=seed)
    raise KeyError(name)
