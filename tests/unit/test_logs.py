"""JSON logs: one line per request at INFO with its request id; errors with context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from celrec.backends.embedded import EmbeddedEventLog, EmbeddedStateStore
from celrec.logs import configure_logging
from celrec.settings import Settings
from service.app import build_state, create_app


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_records_are_json_with_extra_fields_and_errors(log_stream):
    log = logging.getLogger("celrec.test")
    log.info("hello %s", "world", extra={"events": 3})
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("it failed", extra={"batch": 7})
    logging.getLogger("celrec.test").debug("not at INFO")
    info, error = lines(log_stream)
    assert info["message"] == "hello world" and info["level"] == "INFO"
    assert info["events"] == 3 and info["logger"] == "celrec.test" and info["ts"].endswith("Z")
    assert error["level"] == "ERROR" and error["batch"] == 7
    assert error["error"] == "ValueError: bad value" and "Traceback" in error["traceback"]


def test_log_level_comes_from_the_setting(log_stream):
    configure_logging("WARNING", stream=log_stream)
    logging.getLogger("celrec.test").info("hidden")
    logging.getLogger("celrec.test").warning("shown")
    assert [e["message"] for e in lines(log_stream)] == ["shown"]
    assert len([h for h in logging.getLogger().handlers
                if getattr(h, "_celrec_handler", False)]) == 1  # reconfiguring replaces


def test_one_access_line_per_request_with_its_request_id(log_stream):
    state = build_state(Settings(), EmbeddedEventLog(), EmbeddedStateStore())
    app = create_app(state)
    boom = APIRouter()

    @boom.get("/boom")
    async def fail() -> None:
        logging.getLogger("celrec.test").warning("about to fail")
        raise RuntimeError("kaput")

    app.include_router(boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        log_stream.truncate(0)
        log_stream.seek(0)
        given = client.get("/health/live", headers={"x-request-id": "req-123"})
        generated = client.get("/health/live")
        failed = client.get("/boom")
    assert given.headers["x-request-id"] == "req-123"
    assert len(generated.headers["x-request-id"]) == 32
    assert failed.status_code == 500
    entries = lines(log_stream)
    access = [e for e in entries if e["logger"] == "celrec.access"]
    assert [(e["path"], e["status"]) for e in access] == [
        ("/health/live", 200), ("/health/live", 200), ("/boom", 500)]
    assert access[0]["request_id"] == "req-123" and access[0]["level"] == "INFO"
    assert access[1]["request_id"] == generated.headers["x-request-id"]
    assert access[2]["level"] == "WARNING" and access[2]["duration_ms"] >= 0
    # the service's own error line (other loggers, e.g. a Kafka client thread left by an
    # earlier test, may log errors into the same stream meanwhile)
    failure = [e for e in entries if e["level"] == "ERROR" and e["logger"] == "service.metrics"]
    assert failure and failure[0]["error"] == "RuntimeError: kaput"
    assert failure[0]["route"] == "/boom" and failure[0]["request_id"]
    warned = [e for e in entries if e["message"] == "about to fail"]
    assert warned[0]["request_id"] == failure[0]["request_id"]  # handler logs carry the id
