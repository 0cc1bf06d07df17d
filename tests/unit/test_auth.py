"""API keys with scopes: 401 without a (known) key, 403 without the scope, 200 with it."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings, SettingsError, load_settings
from schemas.state import StateKeys
from service.app import build_state, create_app
from service.auth import Keyring, hash_key, hash_key_main
from tests.modelpub import ModelWriter
from tests.unit.test_scoring_api import PREFIX, publish

KEYS = {"writer": "w-key-0123456789", "reader": "r-key-0123456789",
        "admin": "a-key-0123456789", "both": "b-key-0123456789"}
SCOPES = {"writer": "events:write", "reader": "scores:read", "admin": "admin",
          "both": "events:write,scores:read"}
API_KEYS = " ".join(f"{hash_key(KEYS[n])}:{SCOPES[n]}" for n in KEYS)
EVENT = {"user_id": "u", "item_id": "i"}


def make_client(**overrides: object) -> tuple[TestClient, object]:
    store = EmbeddedStateStore()
    settings = Settings(state_prefix=PREFIX, api_keys=API_KEYS, **overrides)
    state = build_state(settings, EmbeddedEventLog(partitions=1), store)
    client = TestClient(create_app(state), raise_server_exceptions=False)
    return client, state


@pytest.fixture
def client():
    client, state = make_client()
    with client:
        publish(ModelWriter(state.store, StateKeys(PREFIX)), state)
        yield client


def call(client: TestClient, route: str, key: str | None, bearer: bool = False):
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    if route == "events":
        return client.post("/events", json=EVENT, headers=headers)
    path = {"scores": "/scores?user_id=bob&item_id=a0", "recommendations": "/recommendations/bob",
            "model": "/model", "metrics": "/metrics"}[route]
    return client.get(path, headers=headers)


ROUTES = {"events": "events:write", "scores": "scores:read", "recommendations": "scores:read",
          "model": "scores:read", "metrics": "admin"}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_route_answers_401_403_or_success_by_scope(client, route):
    missing = call(client, route, None)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert call(client, route, "not-a-configured-key").status_code == 401
    success = 202 if route == "events" else 200
    for name in KEYS:
        allowed = name == "admin" or ROUTES[route] in SCOPES[name].split(",")
        response = call(client, route, KEYS[name], bearer=name == "both")
        assert response.status_code == (success if allowed else 403), (name, response.text)
        if not allowed:
            assert response.json()["error"] == "forbidden"
            assert ROUTES[route] in response.json()["message"]


def test_health_is_open_by_default_and_can_be_closed():
    client, _ = make_client()
    with client:
        assert client.get("/health/live").status_code == 200
    closed, _ = make_client(auth_open_health=False, auth_open_metrics=True)
    with closed:
        assert closed.get("/health/live").status_code == 401
        assert closed.get("/health/ready", headers={"X-API-Key": KEYS["reader"]}
                          ).status_code == 403
        assert closed.get("/health/live", headers={"X-API-Key": KEYS["admin"]}
                          ).status_code == 200
        assert closed.get("/metrics").status_code == 200


def test_no_configured_keys_means_auth_is_off():
    state = build_state(Settings(), EmbeddedEventLog(partitions=1), EmbeddedStateStore())
    with TestClient(create_app(state)) as client:
        assert client.post("/events", json=EVENT).status_code == 202
        assert client.get("/metrics").status_code == 200


def test_openapi_documents_401_and_403_when_auth_is_on(client):
    operation = client.get("/openapi.json").json()["paths"]["/events"]["post"]
    assert {"401", "403"} <= set(operation["responses"])


def test_keys_never_reach_the_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    for key in KEYS.values():
        call(client, "scores", key)
        call(client, "events", key, bearer=True)
    call(client, "scores", "a-wrong-key-4242")
    for key in [*KEYS.values(), "a-wrong-key-4242"]:
        assert key not in caplog.text


def test_keyring_matches_hashes_only_and_rejects_bad_entries():
    ring = Keyring.parse(API_KEYS)
    assert ring.scopes_of(KEYS["both"]) == {"events:write", "scores:read"}
    assert ring.scopes_of(hash_key(KEYS["admin"])) is None  # the hash itself is no key
    assert not Keyring.parse("").enabled
    for bad in ["abc:admin", f"{'0' * 64}:root", f"{'0' * 64}"]:
        with pytest.raises(SettingsError, match="CELREC_API_KEYS"):
            load_settings(api_keys=bad)


def test_hash_key_prints_an_entry_the_settings_accept(capsys):
    assert hash_key_main("events:write,admin", False, lambda: "s3cret\n") == 0
    entry = capsys.readouterr().out.split("entry: ")[1].strip()
    assert entry == f"{hash_key('s3cret')}:events:write,admin"
    assert Keyring.parse(load_settings(api_keys=entry).api_keys).scopes_of("s3cret")
    assert hash_key_main("root", False, lambda: "x") == 2


def test_redis_url_carries_password_and_tls_options_without_connecting():
    import redis

    from celrec.backends.redis import RedisStateStore

    store = RedisStateStore("rediss://:s3cret@127.0.0.1:6390/2?ssl_ca_certs=/etc/ca.pem")
    pool = store._client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert pool.connection_kwargs["db"] == 2
    store.close()
