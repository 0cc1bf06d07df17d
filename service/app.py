"""The FastAPI application: ingestion, health and metrics (scoring joins in serving work)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from celrec import __version__
from celrec.backends import BackendUnavailable, EventLog, StateStore
from schemas.api import ErrorResponse, HealthResponse
from service import ingest
from service.errors import install_error_handlers
from service.state import ServiceState


def create_app(state: ServiceState) -> FastAPI:
    app = FastAPI(
        title="celrec",
        version=__version__,
        description="Online-learning recommendations with Clustered Embedding Learning.",
    )
    app.state.celrec = state
    install_error_handlers(app)
    app.include_router(ingest.build_router(state))

    @app.get("/health/live", response_model=HealthResponse, summary="The process is up")
    async def live() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get(
        "/health/ready",
        response_model=HealthResponse,
        summary="The state store answers",
        responses={503: {"model": HealthResponse}},
    )
    async def ready() -> Any:
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(state.store.ping)
            checks["state_store"] = "ok"
        except BackendUnavailable as exc:
            checks["state_store"] = f"unavailable: {exc}"
        healthy = all(v == "ok" for v in checks.values())
        body = HealthResponse(status="ok" if healthy else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    _register_body_schemas(app)
    return app


def _register_body_schemas(app: FastAPI) -> None:
    """Move the hand-written request-body schema's $defs into the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorResponse", ErrorResponse.model_json_schema(
            ref_template="#/components/schemas/{model}"))
        body = ingest._BODY_SCHEMA
        for name, definition in body.get("$defs", {}).items():
            components.setdefault(name, definition)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                content = operation.get("requestBody", {}).get("content", {})
                for media in content.values():
                    media.get("schema", {}).pop("$defs", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_state(settings, event_log: EventLog, store: StateStore) -> ServiceState:
    return ServiceState(settings=settings, event_log=event_log, store=store,
                        producer=event_log.producer())
