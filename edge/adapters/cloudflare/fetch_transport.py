"""httpx over the Workers runtime's `fetch()`, for the edge's own HTTP calls in a Worker.

The edge calls Prefect, webhook receivers and (optionally) an OpenAI-compatible LLM with
httpx. A Worker has no sockets: only `fetch()`. Pyodide's own httpx build carries a fetch
transport, but PyPI's (what worker.lock pins, and what pywrangler may vendor) tries
sockets and fails. Hand-written because no published httpx transport targets the
Workers runtime; it is small: one request becomes one `fetch()`, and the answer an
httpx.Response. Errors map onto httpx's, so the adapters' retry logic is the same in
both runtimes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from edge.adapters.cloudflare import _js

#: The runtime sets these itself; passing them is refused (host) or wrong once the body
#: is decoded (fetch() has already undone content-encoding).
_REQUEST_HEADERS_DROPPED = frozenset({"host", "content-length", "connection"})
_RESPONSE_HEADERS_DROPPED = frozenset({"content-encoding", "content-length", "transfer-encoding"})

Fetch = Callable[..., Awaitable[tuple[int, list[tuple[str, str]], bytes]]]


class FetchTransport(httpx.AsyncBaseTransport):
    """Sends each httpx request with `fetch()` (`_js.fetch`, or a stand-in in tests)."""

    def __init__(self, fetch: Fetch | None = None) -> None:
        self._fetch = fetch or _js.fetch

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.decode("latin-1").lower() not in _REQUEST_HEADERS_DROPPED
        ]
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        limits = [t for t in (timeouts.get("connect"), timeouts.get("read")) if t]
        try:
            status, answered, content = await self._fetch(
                str(request.url),
                method=request.method,
                headers=headers,
                body=await request.aread() or None,
                timeout_seconds=sum(limits) if limits else None,
            )
        except _js.JsException as exc:
            message = str(exc)
            if "TimeoutError" in message or "AbortError" in message:
                raise httpx.ReadTimeout(message, request=request) from exc
            raise httpx.ConnectError(message, request=request) from exc
        kept = [(k, v) for k, v in answered if k.lower() not in _RESPONSE_HEADERS_DROPPED]
        return httpx.Response(status, headers=kept, content=content, request=request)
