"""The recommendation weight chosen online (cel.retrieval) and the learner that feeds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cel.retrieval import CANDIDATE_WEIGHTS, DEFAULT_WEIGHT, WeightChooser, retrieval_scores
from celrec.demo import DemoWorkload
from celrec.settings import Settings
from trainer.cel_learner import CELLearner


def test_hits_count_only_ranked_items_above_the_target() -> None:
    chooser = WeightChooser()
    target = np.array([1.0, 5.0])  # the target's key under two weights
    keys = np.array([np.arange(20.0), np.arange(20.0)])  # 20 candidates keyed 0..19
    excluded = np.zeros(20, bool)
    # weight 0: 18 candidates above 1.0; weight 1: 14 above 5.0; both miss the top 10
    assert chooser.hits(target, keys, excluded).tolist() == [False, False]
    excluded[10:] = True  # the user's recent items are not ranked: 8 and 4 above
    assert chooser.hits(target, keys, excluded).tolist() == [True, True]
    # a sample of the catalogue: each candidate counts for 2 items (16 and 8 above)
    assert chooser.hits(target, keys, excluded, scale=2.0).tolist() == [False, True]


def _rows(better: int, p_better: float, p_default: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hits = rng.random((n, len(CANDIDATE_WEIGHTS))) < p_default
    hits[:, better] = rng.random(n) < p_better
    return hits


def test_the_chooser_keeps_the_default_until_a_weight_proves_better() -> None:
    chooser = WeightChooser()
    chooser.observe(_rows(4, 0.35, 0.3, 100, seed=0))  # a small lead on 100 events
    assert chooser.weight == DEFAULT_WEIGHT
    chooser.observe(_rows(4, 0.6, 0.2, 400, seed=1))  # a clear one
    assert chooser.weight == CANDIDATE_WEIGHTS[4]


def test_noise_alone_does_not_move_the_chooser() -> None:
    """Every weight hits 30% of events, independently: many disagreements, no real lead."""
    for seed in range(20):
        chooser = WeightChooser()
        chooser.observe(np.random.default_rng(seed).random((2000, len(CANDIDATE_WEIGHTS))) < 0.3)
        assert chooser.weight == DEFAULT_WEIGHT
    unmoved = WeightChooser()
    unmoved.observe(np.zeros((50, len(CANDIDATE_WEIGHTS)), bool))  # no hits: no evidence
    assert unmoved.weight == DEFAULT_WEIGHT


def test_state_round_trips_and_rejects_another_shape() -> None:
    chooser = WeightChooser()
    chooser.observe(_rows(0, 0.9, 0.1, 300, seed=2))
    other = WeightChooser()
    other.load(chooser.state())
    assert other.weight == chooser.weight == CANDIDATE_WEIGHTS[0]
    with pytest.raises(ValueError):
        other.load(np.zeros((2, 2)))


def test_retrieval_scores_weigh_the_model_against_popularity() -> None:
    keys = retrieval_scores(np.array([0, 9]), np.array([2.0, 0.0]), 0.5)
    assert keys.tolist() == pytest.approx([1.0, np.log(10.0)])


def test_the_learner_moves_to_the_model_where_groups_decide() -> None:
    """The demo workload: clicks follow planted groups, not popularity, so ranking by the
    model finds the next clicked items far more often; the learner's evidence says so and
    the weight it publishes leaves the default for a heavier one."""
    learner = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    events = DemoWorkload(users=200, items=100, groups=4, seed=3).events()
    assert learner.retrieval_weight == DEFAULT_WEIGHT
    for _ in range(60):
        learner.learn([next(events) for _ in range(200)])
    assert learner.retrieval_weight is not None and learner.retrieval_weight > DEFAULT_WEIGHT
    # it travels with the checkpoint
    restored = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    restored.restore(learner.state())
    assert restored.retrieval_weight == learner.retrieval_weight
    torch.testing.assert_close(torch.tensor(restored.chooser.state()),
                               torch.tensor(learner.chooser.state()))


def test_the_learner_turns_co_liked_rows_on_where_they_find_the_next_positive() -> None:
    """On the demo workload a user's next liked item sits in a row liked next to the user's
    latest positives (the same group), so a co-liked weight (cel.covisit) starting off is
    switched on by the evidence; the choice travels with the checkpoint."""
    from cel.covisit import WEIGHTS

    learner = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    learner.co_chooser = WeightChooser(candidates=WEIGHTS, default=0.0)
    events = DemoWorkload(users=200, items=100, groups=4, seed=3).events()
    assert learner.coliked_weight == 0.0
    for _ in range(60):
        learner.learn([next(events) for _ in range(200)])
    assert learner.coliked_weight is not None and learner.coliked_weight > 0
    restored = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    restored.restore(learner.state())
    assert restored.coliked_weight == learner.coliked_weight


def test_without_co_liked_rows_the_learner_publishes_no_weight() -> None:
    learner = CELLearner(Settings(_env_file=None, device="cpu", coliked=False))  # type: ignore[call-arg]
    learner.learn([next(DemoWorkload().events()) for _ in range(50)])
    assert learner.coliked_weight is None
    assert not any(k.startswith("item.coliked") for k in learner.snapshot_arrays())


def test_a_checkpoint_with_another_co_liked_layout_restores_with_fresh_counts() -> None:
    from schemas.state import encode_array

    learner = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    learner.learn([next(DemoWorkload().events()) for _ in range(50)])
    blobs = learner.state()
    blobs["coliked.counts"] = encode_array(np.zeros((3, 32), np.float32))  # not (rows, rows)
    del blobs["coliked.positives"]
    restored = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    restored.restore(blobs)
    assert restored.coliked is not None and restored.coliked.counts.size == 0
    assert restored.events_applied == learner.events_applied  # the model itself is kept


def test_ties_count_half_and_repeats_are_no_evidence() -> None:
    chooser = WeightChooser()
    target = np.array([5.0])
    keys = np.array([[5.0] * 21 + [0.0]])  # 21 items tie with the target
    excluded = np.zeros(22, bool)
    assert chooser.hits(target, keys, excluded).tolist() == [False]  # 10.5 above on average
    excluded[:3] = True  # 18 ties: 9 above
    assert chooser.hits(target, keys, excluded).tolist() == [True]
    # a positive on an item in the user's recent history is no evidence for the learner
    from schemas.events import Event

    learner = CELLearner(Settings(_env_file=None, device="cpu"))  # type: ignore[call-arg]
    observed: list[int] = []
    learner.chooser.observe = lambda hits: observed.append(len(hits))  # type: ignore[method-assign]
    learner.learn([Event(user_id="u", item_id=f"i{k}") for k in range(20)])
    learner.learn([Event(user_id="u", item_id="i10") for _ in range(10)])  # repeats only
    assert observed == []
    learner.learn([Event(user_id="v", item_id=f"i{k}") for k in range(10)])  # first sights
    assert observed and observed[0] > 0
    learner.learn([Event(user_id="v", item_id=f"j{k}") for k in range(40)])  # v's history
    observed.clear()
    learner.learn([Event(user_id="v", item_id="i1") for _ in range(10)])  # seen 40 items ago
    assert observed == []  # beyond the model's 16-item history, still no evidence
