"""Co-liked items (cel.covisit): exact counts while rows have room, the strongest partners
kept when they do not, and the co-liked score."""

from collections import defaultdict, deque

import numpy as np
import pytest

from cel.covisit import Covisitation, co_scores


def naive_counts(batches, window):
    counts = defaultdict(lambda: defaultdict(float))
    recent = defaultdict(lambda: deque(maxlen=window))
    for users, items in batches:
        for u, i in zip(users, items, strict=True):
            for j in recent[u]:
                if j != i:
                    counts[j][i] += 1
                    counts[i][j] += 1
            recent[u].append(i)
    return counts, recent


def test_counts_equal_pairs_within_the_window_across_batches():
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 6, n), rng.integers(0, 25, n))
               for n in rng.integers(1, 40, 30)]
    coliked = Covisitation(neighbours=1000, window=4)
    for users, items in batches:
        coliked.learn(users, items)
    counts, recent = naive_counts(batches, 4)
    for item in range(25):
        ids, got = coliked.rows(np.array([item]), 25)
        row = {int(a): float(c) for a, c in zip(ids[0], got[0], strict=True) if a >= 0}
        assert row == dict(counts[item])
    for user in range(6):
        assert coliked.recent_positives(user).tolist() == list(recent[user])[::-1]


def test_a_full_row_keeps_its_strongest_partner():
    coliked = Covisitation(neighbours=2, window=1)
    coliked.learn([0, 0] * 3, [1, 2] * 3)  # 1 and 2 liked together again and again
    for k in range(10):  # then 1 next to ten items liked once
        coliked.learn([k + 1, k + 1], [1, 100 + k])
    ids, counts = coliked.rows(np.array([1]), 200)
    strongest = dict(zip(ids[0].tolist(), counts[0].tolist(), strict=True))
    assert strongest[2] == 5.0  # five adjacent (1, 2) pairs, never displaced


def test_state_round_trip_and_a_width_change_is_refused():
    coliked = Covisitation(neighbours=4, window=3)
    coliked.learn([0, 0, 1, 1], [5, 6, 5, 7])
    copy = Covisitation(neighbours=4, window=3)
    copy.load(coliked.state())
    assert np.array_equal(copy.rows(np.arange(8), 8)[0], coliked.rows(np.arange(8), 8)[0])
    assert copy.recent_positives(1).tolist() == [7, 5]
    with pytest.raises(ValueError):
        Covisitation(neighbours=8, window=3).load(coliked.state())


def test_changed_rows_are_reported_once():
    coliked = Covisitation(neighbours=4, window=3)
    coliked.learn([0, 0], [5, 6])
    assert coliked.take_changed().tolist() == [5, 6]
    assert coliked.take_changed().tolist() == []


def test_co_score_sums_over_anchors_and_divides_by_the_root_of_positives():
    ids = np.array([[3, 4, -1], [3, -1, -1]])
    counts = np.array([[2.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    positives = np.array([0, 0, 0, 16, 1])
    items, co = co_scores(ids, counts, positives)
    assert items.tolist() == [3, 4]
    assert co.tolist() == pytest.approx([4.0 / 4.0, 1.0])
