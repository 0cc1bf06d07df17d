"""The FastAPI application: ingestion, scoring, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from celrec import __version__
from celrec.backends import BackendUnavailable, EventLog, StateStore
from celrec.logs import adopt_uvicorn_loggers
from schemas.api import ErrorResponse, HealthResponse
from service import dashboard, ingest, scoring
from service.auth import AUTH_RESPONSES, Keyring, require_scope
from service.errors import install_error_handlers
from service.metrics import RequestObserver, install_operations_metrics
from service.state import ServiceState


def create_app(state: ServiceState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The model follower runs while the app serves (uvicorn, or `with TestClient(app)`).
        assert state.follower is not None
        adopt_uvicorn_loggers()  # uvicorn set up its own handlers after ours
        state.follower.start()
        history.start()
        try:
            yield
        finally:
            await run_in_threadpool(history.stop)
            await run_in_threadpool(state.follower.stop)

    app = FastAPI(
        title="celrec",
        version=__version__,
        description="Online-learning recommendations with Clustered Embedding Learning.",
        lifespan=lifespan,
    )
    app.state.celrec = state
    install_error_handlers(app)
    app.add_middleware(RequestObserver, metrics=install_operations_metrics(state))
    app.state.dashboard = history = dashboard.DashboardHistory(state)
    settings = state.settings
    keyring = Keyring.parse(settings.api_keys)
    auth = AUTH_RESPONSES if keyring.enabled else {}

    def scope(name: str, open_access: bool = False) -> list[Any]:
        return [Depends(require_scope(keyring, name, open_access))]

    app.include_router(ingest.build_router(state), dependencies=scope("events:write"),
                       responses=auth)
    app.include_router(scoring.build_router(state), dependencies=scope("scores:read"),
                       responses=auth)
    health = {"dependencies": scope("admin", settings.auth_open_health),
              "responses": {} if settings.auth_open_health else auth}

    @app.get("/health/live", response_model=HealthResponse, summary="The process is up",
             dependencies=health["dependencies"], responses=health["responses"])
    async def live() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get(
        "/health/ready",
        response_model=HealthResponse,
        summary="A model is loaded (scores can be served)",
        description="Ready once a model version is loaded. The state store's state is "
        "reported but does not decide: scores are served from memory while it is away.",
        responses={503: {"model": HealthResponse}, **health["responses"]},
        dependencies=health["dependencies"],
    )
    async def ready() -> Any:
        checks: dict[str, str] = {}
        model = state.follower.model if state.follower is not None else None
        checks["model"] = "ok" if model is not None else "not loaded"
        try:
            await run_in_threadpool(state.store.ping)
            checks["state_store"] = "ok"
        except BackendUnavailable as exc:
            checks["state_store"] = f"unavailable: {exc}"
        healthy = checks["model"] == "ok"
        body = HealthResponse(status="ok" if healthy else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}},
                        **({} if settings.auth_open_metrics else auth)},
             dependencies=scope("admin", settings.auth_open_metrics))
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    # The dashboard shows ids and rates: the same access rule as /metrics.
    app.include_router(dashboard.build_router(history),
                       dependencies=scope("admin", settings.auth_open_metrics),
                       responses={} if settings.auth_open_metrics else auth)

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
