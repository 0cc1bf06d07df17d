"""POST /events: validate, hand to the event log, answer 202 only once the log has acked."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from celrec.backends import EventLogUnavailable
from schemas.api import ErrorResponse, IngestResponse
from schemas.events import Event
from schemas.messages import encode_event
from service.errors import ApiError, validation_error
from service.state import ServiceState

RETRY_AFTER_S = 5
_EVENT = TypeAdapter(Event)
_BODY_SCHEMA = TypeAdapter(Event | list[Event]).json_schema(
    ref_template="#/components/schemas/{model}"
)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_events(body: bytes, max_batch: int) -> list[Event]:
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(422, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:  # json's recursion limit: deeply nested arrays/objects
        raise ApiError(422, "invalid_json", "body is nested too deeply") from None
    single = not isinstance(payload, list)
    items = [payload] if single else payload
    if not items:
        raise ApiError(422, "empty_batch", "the batch holds no events")
    if len(items) > max_batch:
        raise ApiError(413, "batch_too_large",
                       f"batch of {len(items)} events exceeds the limit of {max_batch}")
    events, errors = [], []
    for index, item in enumerate(items):
        try:
            events.append(_EVENT.validate_python(item))
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"] if single else (index, *error["loc"])
                errors.append({**error, "loc": loc})
    if errors:
        raise validation_error(ValidationError.from_exception_data("Event", errors))
    return events


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter()
    settings = state.settings

    @router.post(
        "/events",
        status_code=202,
        response_model=IngestResponse,
        summary="Post one event or a batch of events",
        responses={
            413: {"model": ErrorResponse, "description": "body or batch too large"},
            422: {"model": ErrorResponse, "description": "invalid event(s); nothing accepted"},
            503: {"model": ErrorResponse, "description": "event log unavailable; retry"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _BODY_SCHEMA}},
            }
        },
    )
    async def post_events(request: Request) -> IngestResponse:
        try:
            body = await _read_body(request, settings.ingest_max_body_bytes)
            parsed = _parse_events(body, settings.ingest_max_batch)
        except ApiError as exc:  # counted per request: an unreadable body has no event count
            state.metrics_rejected(1, reason=exc.body.error)
            raise
        events = Event.completed_in_order(parsed)
        accepted_at = time.time()
        messages = [encode_event(e, accepted_at) for e in events]
        try:
            await run_in_threadpool(
                state.producer.send, settings.kafka_events_topic, messages,
                settings.produce_timeout_s,
            )
        except EventLogUnavailable as exc:
            state.metrics_rejected(len(events))
            raise ApiError(503, "event_log_unavailable", f"event log unavailable: {exc}",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        state.metrics_accepted(len(events))
        return IngestResponse(accepted=len(events),
                              event_ids=[e.event_id for e in events])  # type: ignore[misc]

    return router
