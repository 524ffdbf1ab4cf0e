"""RFC 9457 problem details: the one error shape every route answers with, and documents."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.ports import DependencyUnavailable, InvalidCursor

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("edgecrew.edge")

_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Dependency unavailable",
}
_SLUGS = {
    400: "malformed-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    429: "rate-limited",
    500: "internal-error",
    503: "dependency-unavailable",
}


class ProblemDetails(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    type: str = Field(description="A stable `urn:edgecrew:problem:*` URN per kind of error")
    title: str = Field(description="A short summary of that kind of error")
    status: int = Field(description="The HTTP status code, repeated")
    detail: str = Field(description="What was wrong with this request, for a human")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="`body`, `query`, `path` or `header`, then the field")
    msg: str


class ValidationProblem(ProblemDetails):
    """A request that does not match the schema; `errors` says where and why."""

    errors: list[FieldError]


#: Why each status is sent, as the OpenAPI document says it.
_WHEN = {
    400: "The body is not valid JSON, or Content-Length is not a number",
    401: "Missing or bad API key (or, on /v1/internal, executor signature)",
    404: "No such resource for this tenant (unknown, another tenant's, or not an id we issue)",
    413: "The body is over the size limit",
    409: (
        "The resource is in a state that refuses this (an ingestion that has ended, a job "
        "that waits for no answer, a job with no webhook sent to redeliver, a tenant with "
        "as many schedules as the edge allows)"
    ),
    410: "The resource was deleted (a schedule whose run asks to become a job)",
    415: "The body is not `application/json`",
    422: "The request does not match the schema; `errors` says where",
    429: "This tenant is over its request rate",
    503: "A dependency (LLM, embedder, index, store, Prefect) is down, or not configured",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer` on routes that take an API key",
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
_SCHEMA_REF = "#/components/schemas/{model}"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries documenting these error statuses as problem+json."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationProblem if status == 422 else ProblemDetails
        schema = {"$ref": _SCHEMA_REF.format(model=model.__name__)}
        responses[status] = {
            "description": _WHEN[status],
            "content": {PROBLEM_JSON: {"schema": schema}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
    return responses


def document_problems(app: FastAPI) -> None:
    """Add the problem schemas to the app's OpenAPI document, and FastAPI's own 422 out.

    FastAPI documents `HTTPValidationError` (a list `detail`) on every route with
    parameters; this app never sends that shape, and each route declares its real 422
    with `problem_responses`. Routes without one cannot fail validation.
    """
    _, top = models_json_schema(
        [(ProblemDetails, "serialization"), (ValidationProblem, "serialization")],
        ref_template=_SCHEMA_REF,
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)  # cached in app.openapi_schema: edited once, here
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if _is_fastapi_default_422(responses.get("422")):
                    del responses["422"]
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        components.update(top["$defs"])
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _is_fastapi_default_422(response: dict[str, Any] | None) -> bool:
    schema = (response or {}).get("content", {}).get("application/json", {}).get("schema")
    return bool(schema == {"$ref": _SCHEMA_REF.format(model="HTTPValidationError")})


class Problem(StarletteHTTPException):
    """An HTTP error that renders as problem+json; raise it from anywhere in a request."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.extra = extra or {}


def problem_body(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of a problem; `type` is a stable URN per status family."""
    return {
        "type": f"urn:edgecrew:problem:{_SLUGS.get(status, 'http-error')}",
        "title": _TITLES.get(status, "HTTP error"),
        "status": status,
        "detail": detail,
        **extra,
    }


def problem_response(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, **extra),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error, expected or not, through problem+json."""

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        extra = exc.extra if isinstance(exc, Problem) else {}
        detail = exc.detail if isinstance(exc.detail, str) else _default_detail(exc.status_code)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route or resource at {request.url.path}"
        if exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, detail, headers=headers, **extra)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(400, "The request body is not valid JSON")
        return problem_response(
            422,
            "The request does not match the schema; see `errors`",
            errors=[{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors],
        )

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DependencyUnavailable)
        log.warning("dependency unavailable: %s", exc)
        return problem_response(
            503,
            f"{exc.dependency} is unavailable; retry later",
            headers={"Retry-After": str(exc.retry_after)},
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "An unexpected error occurred; it has been logged")

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)

    async def on_bad_cursor(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            422,
            "The cursor is not one this API returned; start again without it",
            errors=[{"loc": ["query", "cursor"], "msg": "unknown cursor"}],
        )

    app.add_exception_handler(DependencyUnavailable, on_unavailable)
    app.add_exception_handler(InvalidCursor, on_bad_cursor)
    app.add_exception_handler(Exception, on_unexpected)


def _default_detail(status: int) -> str:
    return _TITLES.get(status, "HTTP error")
