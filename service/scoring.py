"""GET /scores, GET /recommendations/{user_id} and GET /model over the followed model.

/recommendations and /model are plain functions, so FastAPI runs them in its thread pool:
the seen-list read is a blocking store call and must not stall the event loop. /scores does
no I/O (~0.1 ms of numpy under the model lock) and runs on the event loop: the thread-pool
hand-off cost more than the scoring (a quarter of the server's CPU per request).
Each request takes the model reference once, so one answer comes from one version.

saml and dupn also need the user's behaviour sequence, a state-store read per request: for
them /scores hands the read and the forward pass to the thread pool. A store that cannot be
read costs the sequence, not the answer (scored with an empty one, logged).
GET /users/{user_id}/representation returns the user's vector for downstream tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import StringConstraints

from cel.covisit import WINDOW
from celrec.backends import BackendUnavailable
from schemas.api import (
    ErrorResponse,
    ModelResponse,
    ModelSide,
    RecommendationsResponse,
    RecommendedItem,
    RepresentationResponse,
    ScoresResponse,
)
from schemas.sequence import SequenceFormatError, decode_sequence
from schemas.state import StateKeys
from service.errors import ApiError
from service.follower import ModelFollower
from service.serving_model import RequestContext, ServingModel
from service.state import ServiceState

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2
SEEN_READ_MAX = 1000  # newest seen items read per recommendation
MAX_ID_CHARS = 128  # as for ids in events
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
UserId = Annotated[str, Query(min_length=1, max_length=MAX_ID_CHARS, description="user id")]
Scenario = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID_CHARS,
          description="scenario of the request; absent: all scenarios (cold-start prior)"),
]
_NO_MODEL = {"model": ErrorResponse,
             "description": "no model loaded yet, or it produced non-finite scores; retry later"}
_INVALID = {"model": ErrorResponse, "description": "invalid parameter(s)"}


def _score_kind(model: ServingModel) -> Any:
    return "probability" if model.loss == "logloss" else "value"


def _finite(scores: Iterable[float]) -> None:
    """A diverged model yields NaN/inf, which JSON cannot carry: say so instead of a 500."""
    if not np.isfinite(np.fromiter(scores, np.float64)).all():
        raise ApiError(503, "model_invalid", "the served model produced non-finite scores",
                       headers={"Retry-After": str(RETRY_AFTER_S)})


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter()
    follower: ModelFollower | None = state.follower
    assert follower is not None, "ServiceState builds its follower"
    settings = state.settings
    keys = StateKeys(settings.state_prefix)

    def current_model() -> ServingModel:
        model = follower.model
        if model is None:
            raise ApiError(503, "model_not_loaded", "no model has been loaded yet; retry later",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        return model

    @router.get(
        "/scores",
        response_model=ScoresResponse,
        summary="Score items for a user",
        responses={413: {"model": ErrorResponse, "description": "too many item_id values"},
                   422: _INVALID, 503: _NO_MODEL},
    )
    async def scores(
        user_id: UserId,
        item_id: Annotated[list[Id], Query(description="item ids to score (repeat the key)")],
        scenario: Scenario = None,
    ) -> dict[str, Any]:
        # async: scoring is ~0.1 ms of in-memory numpy with no I/O, cheaper than the thread
        # pool hand-off it replaces. A plain dict: FastAPI validates it against
        # ScoresResponse once, instead of dumping and re-validating a model.
        if len(item_id) > settings.score_max_items:
            raise ApiError(413, "too_many_items",
                           f"{len(item_id)} item_id values exceed the limit of "
                           f"{settings.score_max_items}")
        model = current_model()
        if model.needs_sequence:
            values, unknown_user, unknown = await run_in_threadpool(
                lambda: model.score(user_id, item_id, scenario, context_for(model, user_id)))
        else:
            values, unknown_user, unknown = model.score(user_id, item_id, scenario)
        _finite(values)
        return {
            "user_id": user_id, "scenario": scenario, "score_kind": _score_kind(model),
            "model_version": model.version, "model_seq": model.seq,
            "unknown_user": unknown_user,
            "scores": [{"item_id": i, "score": s, "unknown": u}
                       for i, s, u in zip(item_id, values.tolist(), unknown, strict=True)],
        }

    @router.get(
        "/recommendations/{user_id}",
        response_model=RecommendationsResponse,
        summary="Top-n items for a user (cluster retrieval)",
        responses={422: _INVALID, 503: _NO_MODEL},
    )
    def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)],
        n: Annotated[int, Query(ge=1, le=1000, description="how many items")] = 10,
        scenario: Scenario = None,
        exclude_seen: Annotated[
            bool, Query(description="leave out the items the user recently interacted with")
        ] = True,
    ) -> RecommendationsResponse:
        model = current_model()
        seen: set[str] = set()
        status = "not_requested"
        if exclude_seen:
            seen, status = read_seen(user_id)
        context = context_for(model, user_id)
        anchors = read_liked(user_id) if model.has_coliked else []
        result = model.retrieve(user_id, n, scenario, seen, context, anchors=anchors)
        _finite(s for _, s in result.items)
        return RecommendationsResponse(
            user_id=user_id, scenario=scenario, score_kind=_score_kind(model),
            model_version=model.version, model_seq=model.seq,
            unknown_user=result.unknown_user, seen_excluded=status,  # type: ignore[arg-type]
            items=[RecommendedItem(item_id=i, score=s) for i, s in result.items],
        )

    @router.get(
        "/users/{user_id}/representation",
        response_model=RepresentationResponse,
        summary="The user's vector (dupn: the user representation) for downstream tasks",
        responses={422: _INVALID, 503: _NO_MODEL},
    )
    def representation(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)],
        scenario: Scenario = None,
    ) -> RepresentationResponse:
        model = current_model()
        context = context_for(model, user_id)
        vector, unknown_user = model.representation(user_id, scenario, context)
        _finite(vector)
        return RepresentationResponse(
            user_id=user_id, scenario=scenario, model=model.kind,
            model_version=model.version, model_seq=model.seq, unknown_user=unknown_user,
            kind="representation" if model.kind == "dupn" else "embedding",
            vector=vector.tolist(),
        )

    def context_for(model: ServingModel, user_id: str) -> RequestContext | None:
        """The user's published behaviour sequence for a model that reads one (empty when
        none or unreadable); None for the others, which need no store read."""
        if not model.needs_sequence:
            return None
        now = time.time()
        if not follower.store_reachable:
            return RequestContext((), now)
        try:
            raw = state.store.get(keys.user_sequence(user_id))
            steps = decode_sequence(raw) if raw is not None else []
        except (BackendUnavailable, SequenceFormatError) as exc:
            log.warning("behaviour sequence of a user unreadable, scored without: %s", exc)
            steps = []
        return RequestContext(steps, now)

    def read_list(key: str, count: int, what: str) -> list[str] | None:
        """A user's stored item list, newest first; None while the store is unreachable
        (a known outage is not waited on per request) or the read fails."""
        if not follower.store_reachable:
            return None
        try:
            raw = state.store.list_range(key, count)
        except BackendUnavailable as exc:
            log.warning("%s of a user unreadable, recommended without: %s", what, exc)
            return None
        return [item.decode("utf-8", errors="replace") for item in raw]

    def read_liked(user_id: str) -> list[str]:
        """The user's latest positives (the co-liked anchors); none when unreadable."""
        return read_list(keys.user_liked(user_id), WINDOW, "liked items") or []

    def read_seen(user_id: str) -> tuple[set[str], str]:
        seen = read_list(keys.user_seen(user_id), SEEN_READ_MAX, "seen items")
        return (set(), "unavailable") if seen is None else (set(seen), "applied")

    @router.get(
        "/model",
        response_model=ModelResponse,
        summary="The model being served",
        responses={503: _NO_MODEL},
    )
    def model_info() -> ModelResponse:
        info = current_model().info()
        return ModelResponse(
            version=info.version, seq=info.seq, model=info.model, loss=info.loss,
            dim=info.dim, created_at=info.created_at,
            age_seconds=max(0.0, time.time() - info.created_at),
            events_applied=info.events_applied, scenarios=info.scenarios,
            sides={name: ModelSide(entities=s.entities, rows=s.rows, clusters=s.clusters,
                                   clustered=s.clustered) for name, s in info.sides.items()},
            memory_bytes=info.memory_bytes, retrieval_weight=info.retrieval_weight,
            coliked_weight=info.coliked_weight,
            store_connected=follower.status().connected,
        )

    return router
