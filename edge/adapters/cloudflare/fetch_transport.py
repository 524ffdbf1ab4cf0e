"""httpx over the Workers runtime's `fetch()`, for the edge's own HTTP calls in a Worker.

The edge calls Prefect, webhook receivers and (optionally) an OpenAI-compatible LLM with
httpx. In a Worker, outbound HTTP(S) is `fetch()`. Pyodide's own httpx build carries a fetch
transport, but PyPI's (what worker.lock pins, and what pywrangler may vendor) tries
sockets and fails. Hand-written because no published httpx transport targets the
Workers runtime; it is small: one request becomes one `fetch()`, and the answer an
httpx.Response. Errors map onto httpx's, so the adapters' retry logic is the same in
both runtimes. Limitation: the body is read whole before httpx sees it, so a streamed
LLM answer arrives at once (Workers AI, the default on Cloudflare, streams natively).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from edge.adapters.cloudflare import _js

#: The runtime sets these itself (host, length), or we do: fetch() decodes only gzip and
#: br bodies, so only those are asked for, and only their header is dropped once decoded.
_REQUEST_HEADERS_DROPPED = frozenset({"host", "content-length", "connection", "accept-encoding"})
_ACCEPT_ENCODING = ("accept-encoding", "gzip, br")
_DECODED_BY_FETCH = frozenset({"gzip", "br"})
_RESPONSE_HEADERS_DROPPED = frozenset({"content-length", "transfer-encoding"})

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
        headers.append(_ACCEPT_ENCODING)
        # One deadline for the whole exchange (fetch() reads the body before answering):
        # the longest limit the caller set, not their sum.
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        limits = [t for t in (timeouts.get("connect"), timeouts.get("read")) if t]
        try:
            status, answered, content = await self._fetch(
                str(request.url),
                method=request.method,
                headers=headers,
                body=await request.aread() or None,
                timeout_seconds=max(limits) if limits else None,
            )
        except _js.JsException as exc:
            message = str(exc)
            if "TimeoutError" in message or "AbortError" in message:
                raise httpx.ReadTimeout(message, request=request) from exc
            raise httpx.ConnectError(message, request=request) from exc
        # As bytes: httpx would encode str values as ASCII, and a header may hold Latin-1.
        kept = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in answered
            if k.lower() not in _RESPONSE_HEADERS_DROPPED
            and not (k.lower() == "content-encoding" and v.strip().lower() in _DECODED_BY_FETCH)
        ]
        return httpx.Response(status, headers=kept, content=content, request=request)
