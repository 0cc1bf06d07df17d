"""One JSON error shape (schemas.api.ErrorResponse) for every 4xx/5xx the service returns."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.api import ErrorDetail, ErrorResponse


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str,
                 details: list[ErrorDetail] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=error, message=message, details=details or [])
        self.headers = headers


def details_of(errors: list[dict], skip_prefix: tuple[str, ...] = ()) -> list[ErrorDetail]:
    """Pydantic/FastAPI errors as (dotted field path, message) pairs."""
    out = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if str(p) not in skip_prefix]
        out.append(ErrorDetail(field=".".join(loc) or None, message=error.get("msg", "invalid")))
    return out


def validation_error(exc: ValidationError | RequestValidationError,
                     skip_prefix: tuple[str, ...] = ()) -> ApiError:
    details = details_of(list(exc.errors()), skip_prefix)
    fields = ", ".join(d.field or "(body)" for d in details)
    return ApiError(422, "validation_error", f"invalid input: {fields}", details)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return JSONResponse(err.body.model_dump(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorResponse(error=f"http_{exc.status_code}", message=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
