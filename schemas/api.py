"""HTTP request and response models of the service (the OpenAPI document is built from these)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.events import Event


class IngestResponse(BaseModel):
    accepted: int = Field(description="number of events durably handed to the event log")
    event_ids: list[str] = Field(description="ids of the accepted events, in request order")


class ErrorDetail(BaseModel):
    field: str | None = Field(None, description="dotted path of the offending field, if any")
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="short machine-readable error code")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class HealthResponse(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class TrainerProgress(BaseModel):
    """What the trainer has applied; stored in the state store after every micro-batch."""

    events_applied: int = 0
    duplicates_skipped: int = 0
    dead_lettered: int = 0
    events_skipped: int = Field(
        0, description="events of batches the model refused (non-finite loss or gradients)"
    )
    batches: int = 0
    offsets: dict[str, int] = Field(
        default_factory=dict, description="'topic:partition' -> next offset to read"
    )
    updated_at: float = 0.0


__all__ = ["Event", "ErrorDetail", "ErrorResponse", "HealthResponse", "IngestResponse",
           "TrainerProgress"]
