"""Co-liked rows (cel.covisit): pairs within a user's window counted between item rows."""

from collections import defaultdict, deque

import numpy as np
import pytest

from cel.covisit import Covisitation, co_at

ROWS = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4] * 3)  # row of items 0..29


def rows_of(items: np.ndarray) -> np.ndarray:
    return ROWS[items]


def naive(batches, window):
    counts = np.zeros((5, 5))
    positives = np.zeros(5)
    recent = defaultdict(lambda: deque(maxlen=window))
    for users, items in batches:
        for u, i in zip(users, items, strict=True):
            for j in recent[u]:
                if j != i:
                    counts[ROWS[j], ROWS[i]] += 1
                    counts[ROWS[i], ROWS[j]] += 1
            recent[u].append(i)
            positives[ROWS[i]] += 1
    return counts, positives, recent


def test_counts_equal_pairs_within_the_window_between_rows_across_batches():
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 6, n), rng.integers(0, 30, n))
               for n in rng.integers(1, 40, 30)]
    coliked = Covisitation(window=4)
    for users, items in batches:
        coliked.learn(users, items, rows_of)
    counts, positives, recent = naive(batches, 4)
    assert np.array_equal(coliked.counts, counts)
    assert np.array_equal(coliked.positives, positives)
    for user in range(6):
        assert coliked.recent_positives(user).tolist() == list(recent[user])[::-1]


def test_items_without_a_row_are_not_counted():
    coliked = Covisitation(window=2)
    coliked.learn([0, 0, 0], [1, 2, 3],
                  lambda items: np.where(items == 2, -1, ROWS[items]))
    assert coliked.counts.sum() == 2.0  # only (1, 3), both ways
    assert coliked.counts[ROWS[1], ROWS[3]] == 1.0


def test_state_round_trip_changed_rows_and_a_bad_state_is_refused():
    coliked = Covisitation(window=3)
    coliked.learn([0, 0, 1, 1], [5, 6, 5, 7], rows_of)
    assert coliked.take_changed().tolist() == [2, 3]
    assert coliked.take_changed().tolist() == []
    copy = Covisitation(window=3)
    copy.load(coliked.state())
    assert np.array_equal(copy.counts, coliked.counts)
    assert copy.recent_positives(1).tolist() == [7, 5]
    with pytest.raises(ValueError):
        Covisitation(window=8).load(coliked.state())


def test_co_sums_the_anchor_rows_and_divides_by_the_root_of_positives():
    counts = np.array([[0.0, 8.0, 2.0], [8.0, 0.0, 0.0], [2.0, 0.0, 4.0]])
    positives = np.array([1.0, 16.0, 4.0])
    anchors = np.array([0, 2, 2, 7])  # 7: not a row, ignored
    co = co_at(counts, positives, anchors, np.arange(3))
    assert co.tolist() == pytest.approx([(0 + 2 + 2) / 1, 8 / 4, (2 + 4 + 4) / 2])
    assert co_at(counts, positives, anchors, np.array([2, -1, 9])).tolist() == \
        pytest.approx([5.0, 0.0, 0.0])  # no row (-1) or beyond the counts: none
    assert co_at(counts, positives, np.array([], np.int64), np.arange(3)).tolist() == [0, 0, 0]
