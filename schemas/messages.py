"""Event-log message encoding (Kafka and embedded alike).

A message is UTF-8 JSON ``{"schema": 1, "accepted_at": <unix s>, "event": {...}}`` keyed by
the event's ``user_id`` so one user's events stay ordered in one partition. A message that
cannot be decoded goes to the dead-letter topic as a :class:`DeadLetter` record.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.events import Event

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
# Dead-letter records keep at most this much of the bad payload (brokers cap message size).
MAX_DEAD_LETTER_PAYLOAD = 16 * 1024


class MessageDecodeError(ValueError):
    """The message is not a valid event; ``reason`` says why (goes to the dead-letter record)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class EventEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    # finite: a NaN or inf acceptance time would poison the freshness statistics
    accepted_at: float = Field(allow_inf_nan=False)
    event: Event


def message_key(event: Event) -> bytes:
    return event.user_id.encode("utf-8")


def encode_event(event: Event, accepted_at: float) -> tuple[bytes, bytes]:
    """(key, value) for the event log. The event must be complete (id and time assigned)."""
    if event.event_id is None or event.timestamp is None:
        raise ValueError("only completed events (with event_id and timestamp) are encoded")
    fields = event.model_dump(mode="json")
    if fields.get("price_level") is None:  # optional and new: absent keeps old readers happy
        fields.pop("price_level", None)
    body = {"schema": SCHEMA_VERSION, "accepted_at": accepted_at, "event": fields}
    return message_key(event), json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode_event(value: bytes | None) -> EventEnvelope:
    """Decode and validate one message, raising :class:`MessageDecodeError` with a reason."""
    if value is None:
        raise MessageDecodeError("empty message (null value)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise MessageDecodeError(f"message of {len(value)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        body = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MessageDecodeError(f"not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MessageDecodeError(f"not JSON: {exc}") from None
    except RecursionError:
        raise MessageDecodeError("JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise MessageDecodeError(f"expected a JSON object, got {type(body).__name__}")
    version = body.get("schema")
    if version != SCHEMA_VERSION:
        raise MessageDecodeError(f"unsupported schema version {version!r}")
    try:
        envelope = EventEnvelope(
            schema_version=version,
            accepted_at=body.get("accepted_at", 0.0),
            event=body.get("event"),
        )
    except ValidationError as exc:
        raise MessageDecodeError(_describe(exc)) from None
    extra = set(body) - {"schema", "accepted_at", "event"}
    if extra:
        raise MessageDecodeError(f"unknown top-level fields: {sorted(extra)}")
    if envelope.event.event_id is None or envelope.event.timestamp is None:
        raise MessageDecodeError("event lacks event_id or timestamp")
    return envelope


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class DeadLetter:
    """A message the trainer could not use, with where it came from and why.

    The payload is kept up to :data:`MAX_DEAD_LETTER_PAYLOAD` bytes; ``payload_bytes`` in the
    encoded record gives its full length.
    """

    reason: str
    topic: str
    partition: int
    offset: int
    payload: bytes | None

    def encode(self) -> bytes:
        body = {
            "schema": SCHEMA_VERSION,
            "reason": self.reason,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "payload_bytes": None if self.payload is None else len(self.payload),
            "payload_b64": None
            if self.payload is None
            else base64.b64encode(self.payload[:MAX_DEAD_LETTER_PAYLOAD]).decode(),
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, value: bytes) -> DeadLetter:
        body = json.loads(value)
        payload = body.get("payload_b64")
        return cls(
            reason=body["reason"],
            topic=body["source"]["topic"],
            partition=body["source"]["partition"],
            offset=body["source"]["offset"],
            payload=None if payload is None else base64.b64decode(payload),
        )
