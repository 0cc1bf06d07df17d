"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Valid and invalid requests for every operation, a bounded number per operation: no answer
may be a 5xx, and every 4xx must carry the JSON error body. The app runs in process over
the embedded backends with a published model (so scoring answers 200, not 503) and API
keys switched on (requests carry an admin key, exercising the auth dependency).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi

from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.settings import Settings
from schemas.state import StateKeys
from service.app import build_state, create_app
from service.auth import hash_key
from tests.modelpub import ModelWriter

MAX_EXAMPLES = 30  # per operation and generation mode: a few seconds in all
ADMIN_KEY = "fuzz-admin-key-0123456789"
PREFIX = "fuzz"


@pytest.fixture(scope="module")
def fuzzed_app() -> Iterator[object]:
    store = EmbeddedStateStore()
    settings = Settings(state_prefix=PREFIX, api_keys=f"{hash_key(ADMIN_KEY)}:admin",
                        ingest_max_batch=50, ingest_max_body_bytes=256 * 1024,
                        score_max_items=50, embedded_log_capacity=100_000)
    state = build_state(settings, EmbeddedEventLog(partitions=1), store)
    ModelWriter(store, StateKeys(PREFIX)).snapshot(
        1, ["u0", "u1"], ["i0", "i1", "i2"], np.ones((2, 5), np.float32) * 0.1,
        np.ones((2, 5), np.float32) * 0.2, [0, 1], [0, 1, 1], popularity=[3, 2, 1],
        prior=np.ones((1, 2), np.float32), scenarios=["default"])
    app = create_app(state)
    with asgi.get_client(app):  # starts the lifespan (model follower) schemathesis reuses
        assert state.follower is not None
        assert state.follower.wait_for(lambda model: model.version == 1, 10.0)
    yield app
    asgi.shutdown_lifespans()  # stops the model follower schemathesis started


def operations() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid input, and with invalid input where it takes any."""
    spec = create_app(build_state(Settings(), EmbeddedEventLog(partitions=1),
                                  EmbeddedStateStore())).openapi()
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            if op.get("parameters") or op.get("requestBody"):
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return out


# schemathesis' own pytest plugin does not run under pytest 9, so each operation is one
# test driving schemathesis' hypothesis strategy directly.
@pytest.mark.integration
@pytest.mark.parametrize("method, path, mode", operations())
def test_no_server_errors_and_4xx_are_json(fuzzed_app, method, path, mode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    operation = schema[path][method]
    calls = []

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers={"X-API-Key": ADMIN_KEY}, timeout=30)
        calls.append(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text[:300])
        if 400 <= response.status_code < 500:
            body = response.json()
            assert {"error", "message", "details"} <= set(body), (case.as_curl_command(), body)

    check()
    assert calls  # the strategy produced requests
