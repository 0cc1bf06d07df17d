import math

import numpy as np
import pytest

from cel.serving import DeltaMismatch, ModelDataError, ServingModel
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
    return ServingModel.from_snapshot(meta, arrays), writer


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
    model, _ = build()
    # unknown user -> most common user row (0); unknown item -> scenario's most popular row
    scores, unknown_user, unknown_items = model.score("zed", ["new-item", "a0"], "web")
    assert unknown_user is True and unknown_items == [True, False]
    assert scores == pytest.approx([sigmoid(hand_score(0, 1)), sigmoid(hand_score(0, 0))])
    scores, _, _ = model.score("zed", ["new-item"], "app")
    assert scores == pytest.approx([sigmoid(hand_score(0, 0))])
    scores, _, _ = model.score("zed", ["new-item"], None)  # all scenarios: row 1 (10 > 7)
    assert scores == pytest.approx([sigmoid(hand_score(0, 1))])


def test_recommend_returns_best_cluster_first_ranked_by_popularity():
    model, _ = build()
    result = model.retrieve("alice", 3)
    assert [i for i, _ in result.items] == ["a1", "a2", "a0"]
    assert result.items[0][1] == pytest.approx(sigmoid(hand_score(0, 0)))
    assert result.stats.clusters_expanded == 1 and result.stats.members_examined == 3
    assert [i for i, _ in model.recommend("bob", 2)] == ["b1", "b3"]
    # more than one cluster holds: continue with the next best cluster
    items = [i for i, _ in model.recommend("alice", 6)]
    assert items == ["a1", "a2", "a0", "a3", "b1", "b3"]


def test_recommend_excludes_given_items():
    model, _ = build()
    items = [i for i, _ in model.recommend("alice", 3, exclude={"a1", "a0", "unknown"})]
    assert items == ["a2", "a3", "b1"]


def test_recommend_for_a_cold_user_follows_the_scenario_prior():
    model, _ = build()
    web = model.retrieve("nobody", 2, "web")
    assert web.unknown_user and [i for i, _ in web.items] == ["b1", "b3"]
    assert [i for i, _ in model.recommend("nobody", 2, "app")] == ["a1", "a2"]
    assert model.recommend("alice", 0) == []
    everything = model.recommend("alice", 100)
    assert sorted(i for i, _ in everything) == sorted(ITEMS)


def test_recommend_cost_grows_with_clusters_expanded_not_the_catalogue():
    rows, per_row, dim = 50, 400, 4
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(rows * per_row)]
    writer = ModelWriter()
    meta, arrays = writer.snapshot(
        1, ["u"], items, rng.normal(size=(1, dim + 1)), rng.normal(size=(rows, dim + 1)),
        [0], np.repeat(np.arange(rows), per_row), popularity=rng.integers(0, 100, len(items)),
        publish=False)
    model = ServingModel(meta, arrays)
    result = model.retrieve("u", 10)
    assert len(result.items) == 10
    assert result.stats.rows_scored == rows
    assert result.stats.clusters_expanded == 1
    assert result.stats.members_examined == 10  # of 20,000 items
    result = model.retrieve("u", per_row + 5)
    assert result.stats.clusters_expanded == 2
    assert result.stats.members_examined == per_row + 5


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
    assert items == ["d0", "c0", "c1", "a2", "a0"]  # a1 moved to row 1
    assert "a1" in [i for i, _ in model.recommend("bob", 2)]  # pop 5 ranks second in row 1
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
    assert [i for i, _ in model.recommend("nobody", 2, "web")] == ["b1", "b0"]
    assert model.info().sides["item"].clusters == 4
    scores, _, unknown = model.score("alice", ["x"], "web")
    assert unknown == [True] and scores[0] == pytest.approx(sigmoid(1.0 * 0 + 0.1 + 5.0 + BIAS))


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
            user = arrays["user.table"][0]
            table = arrays["item.table"]
            row_scores = table[:, :-1] @ user[:-1] + table[:, -1]
            expected = []
            for r in np.argsort(-row_scores):
                members = [k for k in range(len(items)) if assign[k] == r]
                expected += sorted(members, key=lambda k: (-pop[k], k))
            got = [i for i, _ in model.recommend("u", len(items))]
            assert got == [items[k] for k in expected]
