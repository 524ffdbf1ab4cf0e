"""ASGI guards that run before routing: authentication first, then the body size limit.

They sit in front of FastAPI so that a request without a valid key or executor signature
gets 401 before any route, parameter or body is looked at (whatever its path or body),
and an oversized body gets 413 without being buffered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.auth import ApiKeys
from edge.problems import Problem, problem_response
from shared.signing import TOLERANCE_SECONDS, SignatureError, verify

#: Routes under /v1 signed by the executor instead of carrying an API key.
EXECUTOR_PREFIX = "/v1/internal/"
_UNSIGNED = (
    "Sign executor calls with webhook-id, webhook-signature and a webhook-timestamp "
    f"within {TOLERANCE_SECONDS} s of now"
)


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
        # isascii: "²".isdigit() is True and int() then raises; 19 digits: int() of
        # thousands of digits raises too, and no body is that long.
        number = declared is not None and declared.isascii() and declared.isdigit()
        number = number and declared is not None and len(declared) <= 19
        if declared is not None and (not number or int(declared) > self.max_bytes):
            status, detail = (
                (413, f"The body exceeds the {self.max_bytes}-byte limit")
                if number
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
            or path.startswith(EXECUTOR_PREFIX)
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


class ExecutorSignatureAuth:
    """Verify the Standard Webhooks signature of every /v1/internal request before routing.

    Unsigned or stale calls are refused from their headers alone, before the body is read;
    otherwise the body (at most `max_bytes`) is buffered, verified against the signature,
    and replayed to the app. The verified `webhook-id` is left in scope["state"].
    """

    def __init__(
        self,
        app: ASGIApp,
        secret: str | None,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.secret = secret
        self.max_bytes = max_bytes
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(EXECUTOR_PREFIX):
            await self.app(scope, receive, send)
            return
        now = int(self.clock())
        if not self.secret:
            status, detail = 401, "Executor calls are not configured on this edge"
        elif not _fresh_signature_headers(scope, now):
            status, detail = 401, _UNSIGNED
        elif (body := await _read_at_most(receive, self.max_bytes)) is None:
            status, detail = 413, f"The body exceeds the {self.max_bytes}-byte limit"
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                message_id = verify(self.secret, headers, body, now=now)
            except SignatureError as exc:
                status, detail = 401, f"Bad executor signature: {exc}"
            else:
                scope.setdefault("state", {})["executor_message_id"] = message_id
                await self.app(scope, _replay(body, receive), send)
                return
        await problem_response(status, detail)(scope, receive, send)


def _fresh_signature_headers(scope: Scope, now: int) -> bool:
    """The three signature headers are there and the timestamp is within the tolerance."""
    if not (_header(scope, b"webhook-id") and _header(scope, b"webhook-signature")):
        return False
    stamp = _header(scope, b"webhook-timestamp") or ""
    # Bounded before int(): Python refuses to convert strings of over 4,300 digits.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return False
    return abs(now - int(stamp)) <= TOLERANCE_SECONDS


async def _read_at_most(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole request body, or None as soon as it grows past `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the buffered body over once, then defers to the real one."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
