"""HTTP request and response models of the service (the OpenAPI document is built from these)."""

from __future__ import annotations

from typing import Literal

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


class ItemScore(BaseModel):
    item_id: str
    score: float = Field(
        description="probability of a positive event (logloss models) or the predicted value"
    )
    unknown: bool = Field(
        description="never seen by the model: scored as the scenario's most popular item cluster"
    )


class ScoresResponse(BaseModel):
    user_id: str
    scenario: str | None = Field(description="scenario asked for (null: all scenarios)")
    score_kind: Literal["probability", "value"]
    model_version: int = Field(description="model version that produced the scores")
    model_seq: int = Field(description="last delta of that version applied (0: the snapshot)")
    unknown_user: bool = Field(
        description="never seen by the model: scored as the most common user cluster"
    )
    scores: list[ItemScore] = Field(description="one per requested item_id, in request order")


class RecommendedItem(BaseModel):
    item_id: str
    score: float


class RecommendationsResponse(BaseModel):
    user_id: str
    scenario: str | None
    score_kind: Literal["probability", "value"]
    model_version: int
    model_seq: int
    unknown_user: bool = Field(
        description="never seen: items come from the scenario's most popular clusters"
    )
    seen_excluded: Literal["applied", "not_requested", "unavailable"] = Field(
        description="whether the user's recently seen items were left out; unavailable: the "
        "state store could not be read, so they may be included"
    )
    items: list[RecommendedItem] = Field(description="best first")


class RepresentationResponse(BaseModel):
    user_id: str
    scenario: str | None = Field(description="scenario of the request (dupn: the context)")
    model: str = Field(description="model kind that produced the vector (mf, saml, dupn)")
    model_version: int
    model_seq: int
    unknown_user: bool = Field(
        description="never seen by the model: the vector of the most common user cluster "
        "(dupn: computed from an empty or served behaviour sequence)"
    )
    kind: Literal["embedding", "representation"] = Field(
        description="embedding: the user's row of the user table (mf, deepfm, saml; mf and "
        "deepfm without the bias); representation: dupn's user representation (pooled "
        "behaviour sequence and the user's row), for downstream tasks"
    )
    vector: list[float]


class ModelSide(BaseModel):
    entities: int = Field(description="known ids")
    rows: int = Field(description="rows of the embedding table")
    clusters: int = Field(description="rows that have at least one member")
    clustered: bool


class ModelResponse(BaseModel):
    version: int
    seq: int = Field(description="last delta applied (0: the snapshot as published)")
    model: str = Field(description="interaction model kind")
    loss: str
    dim: int
    created_at: float = Field(description="publication time (unix s) of the state served")
    age_seconds: float = Field(description="seconds since that publication")
    events_applied: int = Field(description="events the trainer had applied into this state")
    scenarios: list[str]
    sides: dict[str, ModelSide]
    memory_bytes: int = Field(description="approximate bytes the served model holds in memory")
    retrieval_weight: float = Field(
        description="weight of the model's score against log(1 + positives) in "
        "/recommendations, as the trainer last chose it"
    )
    coliked_weight: float = Field(
        0.0, description="weight of log(1 + co-liked score) in /recommendations, as the trainer "
        "last chose it (0 where the model keeps no co-liked items)"
    )
    store_connected: bool = Field(description="whether the model follower reaches the store")


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
           "ItemScore", "ModelResponse", "ModelSide", "RecommendationsResponse",
           "RecommendedItem", "RepresentationResponse", "ScoresResponse", "TrainerProgress"]
