import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from celrec.backends import StateStoreUnavailable
from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from schemas.state import StateKeys
from service.app import build_state, create_app
from tests.modelpub import ModelWriter
from tests.unit.test_serving_model import (
    BIAS,
    ITEM_ASSIGN,
    ITEM_TABLE,
    ITEMS,
    POPULARITY,
    PRIOR,
    SCENARIOS,
    USER_ASSIGN,
    USER_TABLE,
    USERS,
    by_formula,
    hand_score,
    sigmoid,
)

PREFIX = "api-test"


class FlakyStore(EmbeddedStateStore):
    """The embedded store with list reads that can be made to fail, and that records the
    keys of the lists read."""

    fail_lists = False

    def __init__(self) -> None:
        super().__init__()
        self.lists_read: list[str] = []

    def list_range(self, key: str, count: int) -> list[bytes]:
        self.lists_read.append(key)
        if self.fail_lists:
            raise StateStoreUnavailable("list reads are down")
        return super().list_range(key, count)


@pytest.fixture
def store():
    return FlakyStore()


@pytest.fixture
def app_state(store):
    settings = Settings(state_prefix=PREFIX, score_max_items=5)
    return build_state(settings, EmbeddedEventLog(partitions=1), store)


@pytest.fixture
def client(app_state):
    app = create_app(app_state)
    with TestClient(app, raise_server_exceptions=False) as client:  # runs the follower
        yield client


@pytest.fixture
def writer(store):
    return ModelWriter(store, StateKeys(PREFIX))


def publish(writer: ModelWriter, app_state, version: int = 3) -> None:
    writer.snapshot(version, USERS, ITEMS, np.array(USER_TABLE), np.array(ITEM_TABLE),
                    USER_ASSIGN, ITEM_ASSIGN, popularity=POPULARITY, prior=np.array(PRIOR),
                    scenarios=SCENARIOS, global_bias=BIAS)
    assert app_state.follower.wait_for(lambda m: m.version == version, 5.0)


def assert_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    if error is not None:
        assert body["error"] == error
    return body


def test_no_model_yet_is_503_with_retry_after(client):
    for path in ("/scores?user_id=u&item_id=i", "/recommendations/u", "/model"):
        response = client.get(path)
        assert_error(response, 503, "model_not_loaded")
        assert int(response.headers["retry-after"]) > 0
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["model"] == "not loaded"


def test_scores_are_probabilities_from_the_published_model(client, writer, app_state):
    publish(writer, app_state)
    response = client.get("/scores", params={"user_id": "bob",
                                             "item_id": ["a0", "b1", "new"], "scenario": "app"})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == 3 and body["model_seq"] == 0
    assert body["unknown_user"] is False and body["score_kind"] == "probability"
    assert [s["item_id"] for s in body["scores"]] == ["a0", "b1", "new"]
    assert [s["unknown"] for s in body["scores"]] == [False, False, True]
    expected = [sigmoid(hand_score(1, r)) for r in (0, 1, 0)]  # "new": app's top row is 0
    assert [s["score"] for s in body["scores"]] == pytest.approx(expected, rel=1e-6)
    cold = client.get("/scores", params={"user_id": "stranger", "item_id": "a0"}).json()
    assert cold["unknown_user"] is True
    assert cold["scores"][0]["score"] == pytest.approx(sigmoid(hand_score(0, 0)), rel=1e-6)
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["model"] == "ok"


@pytest.mark.parametrize("params, status", [
    ({"item_id": "a0"}, 422),  # no user_id
    ({"user_id": "bob"}, 422),  # no item_id
    ({"user_id": "bob", "item_id": ["a0", "x" * 129]}, 422),
    ({"user_id": "x" * 129, "item_id": "a0"}, 422),
    ({"user_id": "", "item_id": "a0"}, 422),
    ({"user_id": "bob", "item_id": ""}, 422),
    ({"user_id": "bob", "item_id": "a0", "scenario": "s" * 129}, 422),
    ({"user_id": "bob", "item_id": [f"i{k}" for k in range(6)]}, 413),  # limit is 5
])
def test_scores_validation(client, writer, app_state, params, status):
    publish(writer, app_state)
    body = assert_error(client.get("/scores", params=params), status)
    if status == 422:
        assert body["error"] == "validation_error" and body["details"]
    else:
        assert body["error"] == "too_many_items"


def test_recommendations_best_cluster_first_and_validation(client, writer, app_state):
    publish(writer, app_state)
    body = client.get("/recommendations/alice", params={"n": 3}).json()
    assert [i["item_id"] for i in body["items"]] == by_formula(0, 3)
    assert body["model_version"] == 3 and body["unknown_user"] is False
    assert body["items"][0]["score"] == pytest.approx(sigmoid(hand_score(0, 1)), rel=1e-6)
    cold = client.get("/recommendations/stranger", params={"n": 2, "scenario": "web"}).json()
    assert cold["unknown_user"] is True
    assert [i["item_id"] for i in cold["items"]] == by_formula(0, 2)
    for n in (0, 1001, "many"):
        assert_error(client.get("/recommendations/alice", params={"n": n}), 422)
    assert_error(client.get("/recommendations/" + "u" * 129), 422)
    assert len(client.get("/recommendations/alice", params={"n": 1000}).json()["items"]) == 10


def test_recommendations_exclude_seen_and_degrade_when_the_store_fails(
        client, writer, app_state, store):
    publish(writer, app_state)
    store.list_push(StateKeys(PREFIX).user_seen("alice"), [b"a1", b"a2"], 100)
    body = client.get("/recommendations/alice", params={"n": 2}).json()
    assert body["seen_excluded"] == "applied"
    assert [i["item_id"] for i in body["items"]] == by_formula(0, 2, exclude={"a1", "a2"})
    body = client.get("/recommendations/alice", params={"n": 2, "exclude_seen": False}).json()
    assert body["seen_excluded"] == "not_requested"
    assert [i["item_id"] for i in body["items"]] == by_formula(0, 2)
    store.fail_lists = True
    response = client.get("/recommendations/alice", params={"n": 2})
    assert response.status_code == 200
    assert response.json()["seen_excluded"] == "unavailable"
    assert [i["item_id"] for i in response.json()["items"]] == by_formula(0, 2)


def test_model_info_and_deltas_become_visible(client, writer, app_state):
    publish(writer, app_state)
    body = client.get("/model").json()
    assert body["version"] == 3 and body["seq"] == 0 and body["model"] == "mf"
    assert body["sides"]["user"] == {"entities": 3, "rows": 2, "clusters": 2,
                                     "clustered": True}
    assert body["sides"]["item"]["entities"] == 10 and body["sides"]["item"]["clusters"] == 3
    assert body["memory_bytes"] > 0 and body["age_seconds"] >= 0
    assert body["scenarios"] == SCENARIOS and body["store_connected"] is True
    assert body["retrieval_weight"] == 0.25  # the default until the trainer chooses
    writer.delta(new_items=["fresh"], item_changed=([10], [1]), global_bias=2.0,
                 accepted_at=[time.time() - 0.2, time.time() - 0.1], retrieval_weight=1.0)
    assert app_state.follower.wait_for(lambda m: m.seq == 1, 5.0)
    scores = client.get("/scores", params={"user_id": "bob", "item_id": "fresh"}).json()
    assert scores["model_seq"] == 1 and scores["scores"][0]["unknown"] is False
    assert scores["scores"][0]["score"] == pytest.approx(sigmoid(hand_score(1, 1, 2.0)))
    assert client.get("/model").json()["sides"]["item"]["entities"] == 11
    assert client.get("/model").json()["retrieval_weight"] == 1.0
    metrics = client.get("/metrics").text
    assert "celrec_freshness_seconds_count 2.0" in metrics
    assert "celrec_model_version 3.0" in metrics
    assert "celrec_model_deltas_applied_total 1.0" in metrics


def test_a_new_version_replaces_the_model(client, writer, app_state):
    publish(writer, app_state)
    publish(writer, app_state, version=4)
    assert client.get("/model").json()["version"] == 4


def test_openapi_documents_every_scoring_route_with_models(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for model in ("ScoresResponse", "RecommendationsResponse", "ModelResponse",
                  "ErrorResponse"):
        assert model in schemas
    for path, codes in (("/scores", {"200", "413", "422", "503"}),
                        ("/recommendations/{user_id}", {"200", "422", "503"}),
                        ("/model", {"200", "503"})):
        responses = spec["paths"][path]["get"]["responses"]
        assert codes <= set(responses)
        for code in codes:
            assert "$ref" in responses[code]["content"]["application/json"]["schema"]


def test_odd_inputs_never_cause_a_500(client, writer, app_state):
    publish(writer, app_state)
    odd = ["%00", "ü" * 128, "a/b", " ", "../x", "\u202e", "1e309"]
    for value in odd:
        for response in (
            client.get("/scores", params={"user_id": value, "item_id": [value, "a0"],
                                          "scenario": value}),
            client.get("/recommendations/" + value, params={"scenario": value}),
        ):
            assert response.status_code < 500, (value, response.text)


def test_a_diverged_model_is_503_not_500(client, writer, app_state):
    table = np.array(ITEM_TABLE)
    table[0, 0] = np.nan
    writer.snapshot(5, USERS, ITEMS, np.array(USER_TABLE), table, USER_ASSIGN, ITEM_ASSIGN)
    assert app_state.follower.wait_for(lambda m: m.version == 5, 5.0)
    assert_error(client.get("/scores", params={"user_id": "alice", "item_id": "a0"}), 503,
                 "model_invalid")
    assert_error(client.get("/recommendations/alice"), 503, "model_invalid")
    assert client.get("/scores", params={"user_id": "alice", "item_id": "b0"}).status_code == 200


def test_representation_of_mf_is_the_users_row_without_bias(client, writer, app_state):
    assert_error(client.get("/users/bob/representation"), 503, "model_not_loaded")
    publish(writer, app_state)
    body = client.get("/users/bob/representation", params={"scenario": "app"}).json()
    assert body["model"] == "mf" and body["kind"] == "embedding"
    assert body["model_version"] == 3 and body["unknown_user"] is False
    assert body["vector"] == pytest.approx(USER_TABLE[1][:-1])  # bob is in row 1
    cold = client.get("/users/stranger/representation").json()
    assert cold["unknown_user"] is True and cold["vector"] == pytest.approx(USER_TABLE[0][:-1])
    assert_error(client.get("/users/" + "x" * 129 + "/representation"), 422)
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/users/{user_id}/representation"]["get"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RepresentationResponse")


def test_recommendations_add_items_co_liked_with_the_users_latest_positives(
        client, writer, app_state, store):
    """The trainer's co-liked rows and weight (snapshot) and the user's latest positives
    (the liked list) lift the items of a row no popularity or model would rank first: row 2
    (c0, c1), liked next to row 0 (a0)."""
    meta, arrays = writer.snapshot(
        4, USERS, ITEMS, np.array(USER_TABLE), np.array(ITEM_TABLE), USER_ASSIGN, ITEM_ASSIGN,
        popularity=POPULARITY, prior=np.array(PRIOR), scenarios=SCENARIOS, global_bias=BIAS,
        publish=False)
    arrays["item.coliked.index"] = np.arange(3, dtype=np.int64)
    arrays["item.coliked.counts"] = np.array([[0, 0, 50.0], [0, 0, 0], [50.0, 0, 0]],
                                             np.float32)
    arrays["item.coliked.positives"] = np.array([9.0, 15.0, 2.0], np.float32)
    meta = meta.model_copy(update={"coliked_weight": 2.0, "arrays": sorted(arrays)})
    writer.publish_snapshot(meta, arrays)
    assert app_state.follower.wait_for(lambda m: m.version == 4, 5.0)
    assert client.get("/model").json()["coliked_weight"] == 2.0
    plain = [i["item_id"] for i in client.get("/recommendations/alice",
                                               params={"n": 3}).json()["items"]]
    assert not set(plain) & {"c0", "c1"}
    store.list_push(StateKeys(PREFIX).user_liked("alice"), [b"a0"], 16)
    liked = [i["item_id"] for i in client.get("/recommendations/alice",
                                               params={"n": 3}).json()["items"]]
    assert set(liked[:2]) == {"c0", "c1"}
    store.fail_lists = True  # the liked list unreadable: recommended without, no error
    response = client.get("/recommendations/alice", params={"n": 3})
    assert response.status_code == 200
    assert [i["item_id"] for i in response.json()["items"]] == plain
    store.fail_lists = False
    # at weight 0 the rows change nothing, so the liked list is not read at all
    meta = meta.model_copy(update={"version": 5, "coliked_weight": 0.0})
    writer.publish_snapshot(meta, arrays)
    assert app_state.follower.wait_for(lambda m: m.version == 5, 5.0)
    store.lists_read.clear()
    off = [i["item_id"] for i in client.get("/recommendations/alice",
                                             params={"n": 3}).json()["items"]]
    assert off == plain
    liked_key = StateKeys(PREFIX).user_liked("alice")
    assert store.lists_read and liked_key not in store.lists_read
