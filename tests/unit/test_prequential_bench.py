"""bench/prequential.py: metrics, the recall@10 query selection, the taobao negative sampler, the
counter peer and one small end-to-end run. No River / Vowpal Wabbit / shared data needed."""

from __future__ import annotations

import sys
from collections import Counter as Tally
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
import prequential as pq  # noqa: E402
import streams  # noqa: E402

# ------------------------------------------------------------------------------------- metrics


def test_auc_hand_computed_with_ties():
    # positives scored 0.9, 0.5, 0.3; negatives 0.5, 0.2
    # pairs (pos, neg): (0.9,0.5)=1 (0.9,0.2)=1 (0.5,0.5)=0.5 (0.5,0.2)=1 (0.3,0.5)=0 (0.3,0.2)=1
    y = np.array([1, 0, 1, 1, 0])
    s = np.array([0.9, 0.5, 0.5, 0.3, 0.2])
    assert pq.auc(y, s) == pytest.approx(4.5 / 6)
    assert pq.auc(1 - y, s) == pytest.approx(1 - 4.5 / 6)
    assert pq.auc(y, np.full(5, 0.7)) == pytest.approx(0.5)  # all tied
    assert np.isnan(pq.auc(np.ones(3), np.arange(3.0)))  # one class only


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 7, 300).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert pq.auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_average_ranks():
    np.testing.assert_allclose(pq.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])),
                               [3.5, 1.0, 3.5, 2.0])


def test_logloss_clips():
    y = np.array([1.0, 0.0])
    p = np.array([0.0, 1.0])  # confidently wrong: clipped to 1e-7 each
    assert pq.logloss(y, p) == pytest.approx(-np.log(1e-7))
    assert pq.logloss(np.array([1.0]), np.array([1.0])) == pytest.approx(-np.log(1 - 1e-7))
    assert pq.logloss(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))


def test_prior_counts_and_buckets():
    keys = ["a", "b", "a", "a", "c", "b"]
    np.testing.assert_array_equal(pq.prior_counts(keys), [0, 0, 1, 2, 0, 1])
    counts = np.array([0, 1, 5, 6, 20, 21, 300])
    assert list(pq.bucket_of(counts)) == ["0", "1-5", "1-5", "6-20", "6-20", ">20", ">20"]
    b = pq.bucket_metric(pq.rmse, np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 3.0]),
                         np.array([0, 3, 3]))
    assert b["0"] == {"value": 0.0, "n": 1}
    assert b["1-5"]["value"] == pytest.approx(np.sqrt(2.0)) and b["1-5"]["n"] == 2
    assert b["6-20"]["n"] == 0 and np.isnan(b["6-20"]["value"])


def test_freshness_groups_follow_chunks():
    # chunks of 3: a b a | a c c | c d (c is new all through its first chunk)
    users = ["a", "b", "a", "a", "c", "c", "c", "d"]
    groups = pq.freshness_groups(users, chunk=3)
    assert list(groups) == ["first chunk"] * 3 + ["user known", "user new", "user new",
                                                  "user known", "user new"]
    values = np.array([1, 0, 1, 0, 1, 0, 0, 1], dtype=float)
    got = pq.group_metric(pq.rmse, values, np.zeros(8), groups)
    assert got["user known"] == {"value": 0.0, "n": 2}
    assert got["user new"]["n"] == 3
    assert got["user new"]["value"] == pytest.approx(np.sqrt(2 / 3))


def test_auc_curve_points():
    y = np.array([0, 1] * 10)
    s = y.astype(float)
    curve = pq.auc_curve(y, s, points=10)
    assert [p["events"] for p in curve] == list(range(2, 21, 2))
    assert all(p["auc"] == 1.0 for p in curve)


# -------------------------------------------------------------------------------------- recall


def test_recall_query_selection():
    # 25 positives (and negatives in between); warm-up = first 5 positives;
    # after it, the 5th, 10th, 15th, 20th positive are candidates
    users, values = [], []
    for k in range(25):
        users.append("new" if k == 9 else f"u{k % 3}")  # positive #5 after warm-up is "new"
        values.append(1.0)
        users.append(f"u{k % 3}")
        values.append(0.0)
    values = np.array(values)
    pos = np.flatnonzero(values > 0)
    q = pq.select_recall_queries(users, values)
    # positive ranks (0-based) 9, 14, 19, 24; rank 9's user "new" had no earlier positive
    assert q == [int(pos[14]), int(pos[19]), int(pos[24])]
    assert users[pos[9]] == "new"


def test_recall_exclusion_and_hits_in_run():
    class Fixed:
        """Recommends the same list; records what it was asked."""

        name = "fixed"

        def __init__(self):
            self.asked = []

        def process(self, users, items, values, timestamps):
            return None

        def recommend(self, user, n, exclude):
            self.asked.append((user, set(exclude)))
            return ["x", "y"]

        def memory_bytes(self):
            return 0

    n = 60
    users = ["a"] * n
    items = [("x" if k == 56 else f"i{k}") for k in range(n)]
    s = streams.Stream("t", "binary", users, items, np.ones(n, np.float32),
                       np.arange(n, dtype=float))
    m = Fixed()
    res, info = pq.run_stream(s, {"fixed": m}, chunk=10, progress=False)
    res = res["fixed"]
    # 60 positives, warm-up 12; queries at positives 16, 21, ..., 56 (0-based)
    assert res["recall_queries"] == 9
    assert res["recall_hits"] == 1  # only the last one (event 56, item "x")
    # the query at event 16 (chunk 1): user "a" had positives in chunk 0, so it is known
    assert info == {"queries": 9, "known_users": 9, "item_unseen_before_chunk": 9,
                    "item_in_exclude_set": 0}
    # the query at event 56 (chunk 5, starting at 50) excludes the items of events 0..49
    user, excl = m.asked[-1]
    assert excl == {f"i{k}" for k in range(50)}
    # one chunk for the whole stream: every query's user had an earlier positive, but none
    # before the chunk, so the method cannot know them
    res, info = pq.run_stream(s, {"fixed": Fixed()}, chunk=100, progress=False)
    assert res["fixed"]["recall_queries"] == 9 and info["known_users"] == 0
    assert res["fixed"]["recall_hits"] == 1 and res["fixed"]["recall_hits_known_users"] == 0
    assert np.isnan(res["fixed"]["recall_at_10_known_users"])


# ---------------------------------------------------------------------------- negative sampler


def _synthetic_rows(n=3000, users=40, items=60, seed=3):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1)
    pop /= pop.sum()
    return [(f"u{rng.integers(users)}", f"i{rng.choice(items, p=pop)}", float(t // 3))
            for t in range(n)]


def test_negative_sampler_properties():
    rows = _synthetic_rows()
    users, items, values, times, meta = streams.with_sampled_negatives(rows, seed=0)
    catalogue = {i for _, i, _ in rows}
    touched: dict[str, set[str]] = {}
    seen: set[str] = set()
    negs = unseen = 0
    for k, (u, i, v, t) in enumerate(zip(users, items, values, times, strict=True)):
        if v > 0:
            touched.setdefault(u, set()).add(i)
            seen.add(i)
        else:
            negs += 1
            assert values[k - 1] == 1.0 and users[k - 1] == u and times[k - 1] == t
            assert i != items[k - 1]
            assert i not in touched[u]  # never an item the user already had a positive with
            assert i in catalogue  # an item with a positive somewhere in the stream
            unseen += i not in seen
    assert unseen > 0  # the catalogue popularity can draw items not seen yet
    assert negs == meta["negatives"] == len(rows) and meta["positives"] == len(rows)
    assert list(times) == sorted(times)
    # deterministic for a seed, different for another
    assert streams.with_sampled_negatives(rows, seed=0)[1] == items
    assert streams.with_sampled_negatives(rows, seed=1)[1] != items


def test_negative_sampler_first_sight_not_a_giveaway():
    # items enter over time (item k first around positive 10 k): drawn from the items seen so far,
    # every first sight of an item was a positive; with the catalogue popularity many are
    # negatives, and "fewer earlier events of the item" is no longer decisive
    rng = np.random.default_rng(7)
    rows = [(f"u{rng.integers(100)}", f"i{rng.integers(t // 10 + 1)}", float(t))
            for t in range(4000)]
    _, items, values, _, _ = streams.with_sampled_negatives(rows, seed=0)
    values = np.asarray(values)
    counts = pq.prior_counts(items)
    first = counts == 0
    assert (values[first] == 0).sum() > 0.3 * first.sum()
    assert 0.3 < pq.auc(values, -counts.astype(float)) < 0.7


def test_negative_sampler_popularity_proportional():
    # catalogue: a 60 positives, b 30, c 10, d 1 (d is the positive being sampled for)
    pool = ["a"] * 60 + ["b"] * 30 + ["c"] * 10 + ["d"]
    sampler = streams.PopularityNegativeSampler(pool, seed=0)
    assert sampler.draw("me", "a") in {"b", "c", "d"}  # nothing observed yet: any other item
    sampler.observe("me", "c")  # "me" had a positive with c: never drawn for "me"
    draws = Tally(sampler.draw("me", "d") for _ in range(4000))
    assert set(draws) == {"a", "b"}
    assert draws["a"] / 4000 == pytest.approx(60 / 90, abs=0.03)
    other = Tally(sampler.draw("you", "d") for _ in range(4000))  # another user: c allowed
    assert set(other) == {"a", "b", "c"}
    assert other["c"] / 4000 == pytest.approx(10 / 100, abs=0.02)
    # nothing left to draw: no negative
    assert streams.PopularityNegativeSampler([], seed=0).draw("u", "a") is None
    s2 = streams.PopularityNegativeSampler(["a", "b"], seed=0)
    assert s2.draw("u", "a") == "b"  # b is drawn before any positive of b was seen
    s2.observe("u", "b")
    assert s2.draw("u", "a") is None  # only the positive's item and the user's own are left


def test_negative_sampler_exact_fallback():
    # the user had positives with almost every popular item: rejection fails, the exact path
    # draws "rare"
    sampler = streams.PopularityNegativeSampler(["hot"] * 1000 + ["rare"], seed=0, retries=2)
    sampler.observe("me", "hot")
    assert all(sampler.draw("me", "new") == "rare" for _ in range(20))
    assert sampler.exact_fallbacks > 0


def test_taobao_reader_drops_truncated_line_and_malformed(tmp_path):
    p = tmp_path / "ub.csv"
    p.write_text("1,10,5,pv,100\n2,11,5,buy,50\nbad,row\n3,12,5,pv,x\n1,12,5,pv,75\n4,13,5")
    rows, skipped = streams.read_taobao_rows(p)
    assert rows == [("1", "10", 100.0), ("2", "11", 50.0), ("1", "12", 75.0)]
    assert skipped == 2


# ---------------------------------------------------------------------------------------- peers


def test_counter_peer_binary():
    c = peers.Counter("binary")
    users = ["u"] * 4
    items = ["a", "a", "b", "a"]
    p = c.process(users, items, np.array([1, 0, 1, 1], np.float32), np.arange(4.0))
    # event 0: no history, g=0.5 -> 0.5; event 1: a has 1 click / 1, g=1 -> (1+2)/(1+2)=1
    # event 2: b unseen, g=1/2 -> (0+1)/2 = 0.5; event 3: a 1/2, g=2/3 -> (1+4/3)/4
    np.testing.assert_allclose(p, [0.5, 1.0, 0.5, (1 + 4 / 3) / 4])
    assert c.memory_bytes() > 0


def test_counter_peer_rating():
    c = peers.Counter("rating")
    p = c.process(["u", "v", "w"], ["a", "a", "b"], np.array([4, 2, 5], np.float32),
                  np.arange(3.0))
    # event 0: g=0 -> 0; event 1: a: (4 + 2*4)/3 = 4; event 2: b: g=3 -> 3
    np.testing.assert_allclose(p, [0.0, 4.0, 3.0])


def test_counter_peer_chunk_updates():
    users = ["u"] * 4
    items = ["a", "a", "b", "a"]
    values = np.array([1, 0, 1, 1], np.float32)
    c = peers.make_peer("counter", "binary", updates="chunk")
    # the whole chunk scored before learning: every event gets the empty-history 0.5
    np.testing.assert_allclose(c.process(users, items, values, np.arange(4.0)), [0.5] * 4)
    # then it learnt the chunk in order: same state as the event-at-a-time counter
    e = peers.Counter("binary")
    e.process(users, items, values, np.arange(4.0))
    assert (c.sums, c.ns, c.total, c.count) == (e.sums, e.ns, e.total, e.count)
    # one-event chunks: the two modes agree
    c1, e1 = peers.make_peer("counter", "binary", updates="chunk"), peers.Counter("binary")
    for k in range(4):
        args = (users[k:k + 1], items[k:k + 1], values[k:k + 1], np.arange(1.0))
        np.testing.assert_allclose(c1.process(*args), e1.process(*args))
    with pytest.raises(ValueError):
        peers.make_peer("counter", "binary", updates="sometimes")


def test_run_stream_chunk_updates():
    rng = np.random.default_rng(2)
    n = 1000
    users = [f"u{k}" for k in rng.integers(0, 30, n)]
    items = [f"i{k}" for k in rng.integers(0, 20, n)]
    values = (rng.random(n) < 0.4).astype(np.float32)
    s = streams.Stream("syn", "binary", users, items, values, np.arange(n, dtype=float))
    out = {}
    for mode in peers.UPDATES:
        out[mode], _ = pq.run_stream(s, {m: pq.make_method(m, "binary", peer_updates=mode)
                                         for m in ("counter", "popularity", "isgd")},
                                     chunk=100, progress=False)
    # the counter's scores differ, the recommenders answer before the chunk either way
    assert out["event"]["counter"]["auc"] != out["chunk"]["counter"]["auc"]
    for m in ("popularity", "isgd"):
        assert out["event"][m]["recall_hits"] == out["chunk"][m]["recall_hits"]


def test_popularity_and_isgd_recommend():
    pop = peers.Popularity()
    assert pop.process(["u"] * 5, ["a", "b", "b", "c", "c"],
                       np.array([1, 1, 1, 0, 1], np.float32), np.arange(5.0)) is None
    assert pop.recommend("u", 2, set()) == ["b", "a"]  # tie a/c: the earlier seen first
    assert pop.recommend("u", 5, {"b"}) == ["a", "c"]
    isgd = peers.ISGD(seed=0)
    for _ in range(30):
        isgd.process(["u", "v"], ["a", "b"], np.ones(2, np.float32), np.zeros(2))
    assert isgd.recommend("u", 1, set()) == ["a"]
    assert isgd.recommend("u", 5, {"a"}) == ["b"]
    assert isgd.recommend("nobody", 5, set()) == []


def test_river_and_vw_peers_smoke():
    pytest.importorskip("river")
    pytest.importorskip("vowpalwabbit")
    y = np.array([1, 0, 1, 0] * 5, np.float32)
    for name in ("river-fm", "vw-lrq"):
        p = peers.make_peer(name, "binary").process(["u", "v"] * 10, ["a", "b"] * 10, y,
                                                    np.arange(20.0))
        assert p.shape == (20,) and np.all((p >= 0) & (p <= 1))
        assert p[-2] > p[-1]  # learnt that (u, a) clicks and (v, b) does not
        chunked = peers.make_peer(name, "binary", updates="chunk")
        p = chunked.process(["u", "v"] * 10, ["a", "b"] * 10, y, np.arange(20.0))
        # the chunk scored before learning anything: each pair's score never moves in it
        assert np.ptp(p[0::2]) < 1e-12 and np.ptp(p[1::2]) < 1e-12
        p = chunked.process(["u", "v"], ["a", "b"], y[:2], np.arange(2.0))
        assert p[0] > p[1]  # then it learnt the chunk


def test_missing_packages_are_reported(monkeypatch):
    for module, method, word in (("river", "river-fm", "river"),
                                 ("vowpalwabbit", "vw-lrq", "vowpalwabbit"),
                                 ("cli.evaluation.served", "celrec", "celrec: not available")):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
        with pytest.raises(pq.MethodUnavailable, match=word):
            pq.make_method(method, "binary")


def test_run_stream_end_to_end_with_counter_and_popularity():
    rng = np.random.default_rng(0)
    n = 1000
    users = [f"u{k}" for k in rng.integers(0, 30, n)]
    items = [f"i{k}" for k in rng.integers(0, 20, n)]
    values = np.array([1.0 if int(i[1:]) < 5 else float(rng.random() < 0.1) for i in items],
                      np.float32)
    s = streams.Stream("syn", "binary", users, items, values, np.arange(n, dtype=float))
    res, _ = pq.run_stream(s, {"counter": peers.Counter("binary"),
                               "popularity": peers.Popularity()}, progress=False)
    assert res["counter"]["auc"] > 0.8
    assert "recall_at_10" not in res["counter"] and "auc" not in res["popularity"]
    assert res["popularity"]["recall_queries"] > 0
    assert len(res["counter"]["auc_curve"]) == 10
