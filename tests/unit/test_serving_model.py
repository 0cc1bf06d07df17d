import math

import numpy as np
import pytest

from cel.retrieval import DEFAULT_WEIGHT
from service.serving_load import serving_model
from service.serving_model import (
    DeltaMismatch,
    ModelDataError,
    ServingModel,
)
from tests.modelpub import ModelWriter

USERS = ["alice", "bob", "carol"]
USER_ASSIGN = [0, 1, 0]  # row 0 is the most common user row
USER_TABLE = [[1.0, 0.0, 0.1], [0.0, 1.0, -0.1]]
ITEMS = ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3", "c0", "c1"]
ITEM_ASSIGN = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
ITEM_TABLE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.2], [-1.0, -1.0, 0.0]]
POPULARITY = [1, 5, 3, 0, 2, 9, 0, 4, 1, 1]
SCENARIOS = ["web", "app"]
PRIOR = [[0.0, 10.0, 1.0], [7.0, 0.0, 0.0]]
BIAS = 0.5


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def build(loss: str = "logloss") -> tuple[ServingModel, ModelWriter]:
    writer = ModelWriter()
    meta, arrays = writer.snapshot(
        3, USERS, ITEMS, np.array(USER_TABLE), np.array(ITEM_TABLE), USER_ASSIGN, ITEM_ASSIGN,
        popularity=POPULARITY, prior=np.array(PRIOR), scenarios=SCENARIOS, global_bias=BIAS,
        loss=loss, publish=False)
    return serving_model(meta, arrays), writer


def apply(model: ServingModel, writer: ModelWriter, **kwargs) -> None:
    model.apply_delta(*writer.delta(publish=False, **kwargs))


def hand_score(user_row: int, item_row: int, bias: float = BIAS, items=ITEM_TABLE) -> float:
    u, i = USER_TABLE[user_row], items[item_row]
    return u[0] * i[0] + u[1] * i[1] + u[2] + i[2] + bias


def test_score_equals_hand_computation():
    model, _ = build()
    scores, unknown_user, unknown_items = model.score("bob", ["a0", "b1", "c0"])
    expected = [sigmoid(hand_score(1, r)) for r in (0, 1, 2)]
    assert scores == pytest.approx(expected, rel=1e-6)
    assert unknown_user is False and unknown_items == [False, False, False]


def test_mse_scores_are_raw():
    model, _ = build(loss="mse")
    scores, _, _ = model.score("alice", ["b0"])
    assert scores == pytest.approx([hand_score(0, 1)], rel=1e-6)


def test_unknown_ids_are_flagged_and_served_the_cold_default():
    model, writer = build()
    # unknown user -> most common user row (0); unknown item -> the largest item row, where
    # the trainer will place it (rows 0 and 1 hold 4 items each: the first), any scenario
    scores, unknown_user, unknown_items = model.score("zed", ["new-item", "a0"], "web")
    assert unknown_user is True and unknown_items == [True, False]
    assert scores == pytest.approx([sigmoid(hand_score(0, 0)), sigmoid(hand_score(0, 0))])
    for scenario in ("app", None):
        scores, _, _ = model.score("zed", ["new-item"], scenario)
        assert scores == pytest.approx([sigmoid(hand_score(0, 0))])
    apply(model, writer, item_changed=([0], [1]))  # row 1 now the largest
    scores, _, _ = model.score("zed", ["new-item"], "web")
    assert scores == pytest.approx([sigmoid(hand_score(0, 1))])


def by_formula(user: int | list[float], n: int, exclude=(), items=ITEMS, table=ITEM_TABLE,
               assign=ITEM_ASSIGN, popularity=POPULARITY, own_bias=None,
               weight: float = DEFAULT_WEIGHT) -> list[str]:
    """Brute force over the catalogue: weight x (row score + own bias) + log(1 + positives),
    best first (ties: the older id)."""
    u = USER_TABLE[user] if isinstance(user, int) else user
    totals = []
    for k, item in enumerate(items):
        if item in exclude or assign[k] < 0:
            continue
        row = table[assign[k]]
        model = float(np.dot(u[:-1], row[:-1]) + row[-1])
        model += 0.0 if own_bias is None else own_bias[k]
        totals.append((-(weight * model + math.log1p(popularity[k])), k))
    return [items[k] for _, k in sorted(totals)[:n]]


def test_the_trainers_retrieval_weight_reranks_recommendations():
    """A delta carrying the trainer's chosen weight (cel.retrieval) re-ranks every row's
    members by it; a delta without one keeps the weight."""
    model, writer = build()
    assert model.retrieval_weight == DEFAULT_WEIGHT
    before = [i for i, _ in model.retrieve("alice", 5).items]
    apply(model, writer, retrieval_weight=4.0)
    after = [i for i, _ in model.retrieve("alice", 5).items]
    assert after == by_formula(0, 5, weight=4.0) and after != before
    apply(model, writer)
    assert model.retrieval_weight == 4.0
    assert [i for i, _ in model.retrieve("alice", 5).items] == after


def test_recommend_ranks_by_the_model_weighted_by_popularity():
    model, _ = build()
    result = model.retrieve("alice", 3)
    assert [i for i, _ in result.items] == by_formula(0, 3) == ["b1", "a1", "b3"]
    # the score served is the model's probability, not the ranking key
    assert result.items[1][1] == pytest.approx(sigmoid(hand_score(0, 0)))
    assert [i for i, _ in model.recommend("bob", 2)] == by_formula(1, 2)
    assert [i for i, _ in model.recommend("alice", 10)] == by_formula(0, 10)


def test_a_popular_item_of_a_disliked_row_loses_to_a_liked_row():
    model, writer = build()
    table = np.array(ITEM_TABLE)
    table[2] = [12.0, 0.0, 0.0]  # alice now likes row 2 a lot: its items overtake b1 (pop 9)
    apply(model, writer, item_table=table)
    items = [i for i, _ in model.recommend("alice", 3)]
    assert items[:2] == ["c0", "c1"]
    assert items == by_formula(0, 3, table=table.tolist())


def test_recommend_excludes_given_items():
    model, _ = build()
    items = [i for i, _ in model.recommend("alice", 3, exclude={"b1", "a1", "unknown"})]
    assert items == by_formula(0, 3, exclude={"b1", "a1"})
    assert "b1" not in items and "a1" not in items


def test_recommend_for_a_cold_user_uses_the_typical_user_row():
    model, _ = build()
    cold = model.retrieve("nobody", 2, "web")
    assert cold.unknown_user and [i for i, _ in cold.items] == by_formula(0, 2)
    assert model.recommend("alice", 0) == []
    everything = model.recommend("alice", 100)
    assert sorted(i for i, _ in everything) == sorted(ITEMS)


def test_own_item_biases_take_part_in_the_ranking():
    writer = ModelWriter()
    meta, arrays = writer.snapshot(
        3, USERS, ITEMS, np.array(USER_TABLE), np.array(ITEM_TABLE), USER_ASSIGN, ITEM_ASSIGN,
        popularity=POPULARITY, publish=False)
    own = np.linspace(-3.0, 3.0, len(ITEMS)).astype(np.float32)
    arrays["item.bias"] = own
    model = ServingModel(meta, arrays)
    got = [i for i, _ in model.recommend("alice", 5)]
    assert got == by_formula(0, 5, own_bias=own.tolist())
    assert got != by_formula(0, 5)


def test_recommend_cost_grows_with_clusters_expanded_not_the_catalogue():
    rows, per_row, dim = 50, 400, 4
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(rows * per_row)]
    writer = ModelWriter()
    user, table = rng.normal(size=(1, dim + 1)), rng.normal(size=(rows, dim + 1))
    assign, pop = np.repeat(np.arange(rows), per_row), rng.integers(0, 100, len(items))
    meta, arrays = writer.snapshot(1, ["u"], items, user, table, [0], assign,
                                   popularity=pop, publish=False)
    model = ServingModel(meta, arrays)
    result = model.retrieve("u", 10)
    expected = by_formula(user[0].tolist(), 10, items=items, table=table.tolist(),
                          assign=assign.tolist(), popularity=pop.tolist())
    assert [i for i, _ in result.items] == expected
    assert result.stats.rows_scored == rows
    assert result.stats.clusters_expanded < rows // 2
    assert result.stats.members_examined <= 10 * result.stats.clusters_expanded  # of 20,000


def test_delta_adds_ids_reassigns_and_replaces_tables():
    model, writer = build()
    new_table = np.array(ITEM_TABLE)
    new_table[2] = [3.0, 0.0, 0.0]  # row 2 becomes alice's best
    apply(model, writer, new_users=["dave"], new_items=["d0"], item_table=new_table,
          user_changed=([3], [1]), item_changed=([10, 1], [2, 1]),
          popularity=([10], [100]), global_bias=1.0)
    assert model.seq == 1
    scores, unknown_user, unknown_items = model.score("dave", ["d0", "a1"])
    assert unknown_user is False and unknown_items == [False, False]
    assert scores == pytest.approx([sigmoid(hand_score(1, 2, 1.0, new_table)),
                                    sigmoid(hand_score(1, 1, 1.0, new_table))])
    items = [i for i, _ in model.recommend("alice", 5)]
    assign = ITEM_ASSIGN[:1] + [1] + ITEM_ASSIGN[2:] + [2]  # a1 moved to row 1, d0 in row 2
    expected = by_formula(0, 5, items=ITEMS + ["d0"], table=new_table.tolist(), assign=assign,
                          popularity=POPULARITY + [100])
    assert items == expected and items[0] == "d0"
    info = model.info()
    assert (info.version, info.seq) == (3, 1)
    assert info.sides["user"].entities == 4 and info.sides["item"].entities == 11
    assert info.sides["item"].rows == 3 and info.sides["item"].clusters == 3
    assert info.memory_bytes > 0


def test_delta_with_new_rows_and_prior():
    model, writer = build()
    table = np.vstack([ITEM_TABLE, [[0.0, 0.0, 5.0]]])  # a split created row 3
    prior = np.array([[0.0, 0.0, 0.0, 50.0], [7.0, 0.0, 0.0, 0.0]])
    apply(model, writer, item_table=table, item_changed=([4, 5], [3, 3]), prior=prior)
    assign = ITEM_ASSIGN[:4] + [3, 3] + ITEM_ASSIGN[6:]
    assert [i for i, _ in model.recommend("nobody", 2, "web")] == by_formula(
        0, 2, table=table.tolist(), assign=assign) == ["b1", "b0"]
    assert model.info().sides["item"].clusters == 4
    scores, _, unknown = model.score("alice", ["x"], "web")  # the largest row: 0
    assert unknown == [True] and scores[0] == pytest.approx(sigmoid(hand_score(0, 0)))


def test_out_of_sequence_or_malformed_delta_changes_nothing():
    model, writer = build()
    header, arrays = writer.delta(publish=False, new_items=["x"], item_changed=([10], [0]))
    with pytest.raises(DeltaMismatch):
        model.apply_delta(header.model_copy(update={"seq": 2}), arrays)
    with pytest.raises(DeltaMismatch):
        model.apply_delta(header.model_copy(update={"version": 4}), arrays)
    bad = dict(arrays, **{"item.changed.row": np.array([7], np.int32)})  # no row 7
    with pytest.raises(ModelDataError):
        model.apply_delta(header, bad)
    known = dict(arrays)
    known["item.new_ids.blob"], known["item.new_ids.offsets"] = (
        np.frombuffer(b"a0", np.uint8).copy(), np.array([2], np.int32))
    with pytest.raises(ModelDataError):
        model.apply_delta(header, known)
    assert model.seq == 0 and model.info().sides["item"].entities == 10
    model.apply_delta(header, arrays)
    assert model.score("alice", ["x"])[2] == [False]


def test_member_index_agrees_with_brute_force_over_random_deltas():
    rng = np.random.default_rng(7)
    rows, n_items, dim = 6, 60, 3
    items = [f"i{k}" for k in range(n_items)]
    assign = rng.integers(0, rows, n_items)
    pop = rng.integers(0, 20, n_items)
    writer = ModelWriter()
    meta, arrays = writer.snapshot(
        1, ["u"], items, rng.normal(size=(1, dim + 1)), rng.normal(size=(rows, dim + 1)),
        [0], assign, popularity=pop, publish=False)
    model = ServingModel(meta, arrays)
    assign, pop = list(assign), list(pop)
    for step in range(30):
        index = rng.integers(0, len(items), 8)
        new_rows = rng.integers(0, rows, 8)
        new = [f"n{step}"]
        index = np.append(index, len(items))
        new_rows = np.append(new_rows, rng.integers(0, rows))
        pop_index = rng.integers(0, len(items) + 1, 3)
        pop_values = rng.integers(0, 20, 3)
        apply(model, writer, new_items=new, item_changed=(index, new_rows),
              popularity=(pop_index, pop_values))
        items += new
        assign.append(-1)
        pop.append(0)
        for k, r in zip(index, new_rows, strict=True):
            assign[k] = r
        for k, v in zip(pop_index, pop_values, strict=True):
            pop[k] = v
        if step % 3 == 0:  # recommend between deltas so lazily rebuilt rows are re-edited
            user = arrays["user.table"][0].tolist()
            table = arrays["item.table"].tolist()
            got = [i for i, _ in model.recommend("u", len(items))]
            assert got == by_formula(user, len(items), items=items, table=table,
                                     assign=assign, popularity=pop)
            # again, from the row heads kept since the delta, leaving some items out
            excluded = set(got[:3]) | {got[-1], "not-an-item"}
            top = [i for i, _ in model.recommend("u", 5, exclude=excluded)]
            assert top == by_formula(user, 5, exclude=excluded, items=items, table=table,
                                     assign=assign, popularity=pop)


COLIKED = np.array([[0.0, 1.0, 8.0], [1.0, 0.0, 0.0], [8.0, 0.0, 2.0]], np.float32)
ROW_POSITIVES = np.array([9.0, 15.0, 4.0], np.float32)


def co_liked_model() -> tuple[ServingModel, ModelWriter]:
    writer = ModelWriter()
    meta, arrays = writer.snapshot(
        3, USERS, ITEMS, np.array(USER_TABLE), np.array(ITEM_TABLE), USER_ASSIGN, ITEM_ASSIGN,
        popularity=POPULARITY, global_bias=BIAS, publish=False)
    # items of rows 0 and 2 are often liked close together
    arrays["item.coliked.index"] = np.arange(3, dtype=np.int64)
    arrays["item.coliked.counts"] = COLIKED
    arrays["item.coliked.positives"] = ROW_POSITIVES
    return ServingModel(meta, arrays), writer


def with_co_term(user: int, n: int, anchor_rows: list[int], weight: float, exclude=(),
                 counts=COLIKED, positives=ROW_POSITIVES) -> list[str]:
    """Brute force: by_formula's key plus weight x log(1 + co) of the item's row."""
    co = np.asarray(counts, np.float64)[anchor_rows].sum(axis=0) / np.sqrt(
        np.maximum(positives, 1.0))
    u = USER_TABLE[user]
    totals = []
    for k, item in enumerate(ITEMS):
        if item in exclude:
            continue
        row = ITEM_TABLE[ITEM_ASSIGN[k]]
        key = DEFAULT_WEIGHT * float(np.dot(u[:-1], row[:-1]) + row[-1]) + math.log1p(
            POPULARITY[k])
        key += weight * math.log1p(co[ITEM_ASSIGN[k]])
        totals.append((-key, k))
    return [ITEMS[k] for _, k in sorted(totals)[:n]]


def test_rows_co_liked_with_the_users_latest_positives_rank_higher():
    model, _ = co_liked_model()
    plain = [i for i, _ in model.retrieve("alice", 3).items]
    got = [i for i, _ in model.retrieve("alice", 3, exclude={"a0"}, anchors=["a0"],
                                        anchor_weight=2.0).items]
    assert got == with_co_term(0, 3, [0], 2.0, exclude={"a0"})
    assert set(got) & {"c0", "c1"} and not set(plain) & {"c0", "c1"}
    full = [i for i, _ in model.retrieve("bob", 10, anchors=["a0", "c1", "zz"],
                                         anchor_weight=4.0).items]
    assert full == with_co_term(1, 10, [0, 2], 4.0)  # every item, exact
    assert [i for i, _ in model.retrieve("alice", 3, anchors=["a0"],
                                         anchor_weight=0.0).items] == plain
    model.coliked_weight = 2.0  # the trainer's choice is the default weight
    assert [i for i, _ in model.retrieve("alice", 3, exclude={"a0"},
                                         anchors=["a0"]).items] == got


def test_a_delta_replaces_co_liked_rows_and_bad_rows_change_nothing():
    model, writer = co_liked_model()
    header, arrays = writer.delta(publish=False)
    arrays["item.coliked.index"] = np.array([1], np.int64)
    arrays["item.coliked.counts"] = np.array([[6.0, 0.0, 0.0]], np.float32)
    arrays["item.coliked.positives"] = ROW_POSITIVES
    model.apply_delta(header, arrays)
    counts = COLIKED.copy()
    counts[1] = [6.0, 0.0, 0.0]
    got = [i for i, _ in model.retrieve("bob", 10, anchors=["b0"], anchor_weight=2.0).items]
    assert got == with_co_term(1, 10, [1], 2.0, counts=counts)
    header, arrays = writer.delta(publish=False)
    arrays["item.coliked.index"] = np.array([7], np.int64)  # no such row
    arrays["item.coliked.counts"] = np.array([[5.0, 0.0, 0.0]], np.float32)
    arrays["item.coliked.positives"] = ROW_POSITIVES
    with pytest.raises(ModelDataError):
        model.apply_delta(header, arrays)
    assert [i for i, _ in model.retrieve("bob", 10, anchors=["b0"],
                                         anchor_weight=2.0).items] == got
