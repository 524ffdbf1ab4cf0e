"""ASGI guards that run before routing: body size limit and API-key authentication.

They sit in front of FastAPI so that a request without a valid key gets 401 before its
body is even read, and an oversized body gets 413 without being buffered.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.auth import ApiKeys
from edge.problems import Problem, problem_response

#: Routes under /v1 that authenticate some other way (signed executor callbacks).
UNAUTHENTICATED_PREFIXES = ("/v1/internal/",)


class BodySizeLimit:
    """Refuse bodies over `max_bytes`, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status, detail = (
                (413, f"The body exceeds the {self.max_bytes}-byte limit")
                if declared.isdigit()
                else (400, "Content-Length is not a number")
            )
            await problem_response(status, detail)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions met while reading the body.
                    raise Problem(413, f"The body exceeds the {self.max_bytes}-byte limit")
            return message

        await self.app(scope, counting_receive, send)


class ApiKeyAuth:
    """Resolve the bearer key of every /v1 request to a tenant, stored in scope["state"]."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith("/v1/")
            or path.startswith(UNAUTHENTICATED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        tenant = self.keys.tenant_for(_header(scope, b"authorization"))
        if tenant is None:
            response = problem_response(
                401,
                "Send a valid API key as `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": 'Bearer realm="edgecrew"'},
            )
            await response(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["tenant"] = tenant
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
