"""httpx over the Workers runtime's fetch(), with a recording stand-in for fetch() (the
real one runs in tests/pyodide): what goes out, what comes back, how failures map."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from edge.adapters.cloudflare._js import JsException
from edge.adapters.cloudflare.fetch_transport import FetchTransport
from edge.adapters.prefect import PrefectOrchestrator
from edge.ports import DependencyUnavailable


class RecordingFetch:
    def __init__(self, *answers: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self._answers = list(answers)

    async def __call__(self, url: str, **init: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        self.calls.append({"url": url, **init})
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_a_request_becomes_one_fetch_and_its_answer_an_httpx_response() -> None:
    body = json.dumps({"ok": True}).encode()
    fetch = RecordingFetch((201, [("content-type", "application/json"),
                                  ("content-encoding", "gzip"), ("x-id", "7")], body))  # fmt: skip
    async with httpx.AsyncClient(transport=FetchTransport(fetch), timeout=4.0) as client:
        response = await client.post("https://prefect.test/api/x?a=1", json={"n": 1},
                                     headers={"Authorization": "Bearer s"})  # fmt: skip
    assert response.status_code == 201 and response.json() == {"ok": True}
    assert response.headers["x-id"] == "7"
    assert "content-encoding" not in response.headers, "fetch() already decoded the body"
    (call,) = fetch.calls
    assert call["url"] == "https://prefect.test/api/x?a=1" and call["method"] == "POST"
    sent = {name.lower(): value for name, value in call["headers"]}
    assert sent["authorization"] == "Bearer s" and sent["content-type"] == "application/json"
    assert "host" not in sent and "content-length" not in sent, "the runtime sets those"
    assert json.loads(call["body"]) == {"n": 1}
    assert call["timeout_seconds"] == 4.0, "the caller's limit, not connect + read"
    assert sent["accept-encoding"] == "gzip, br", "only what fetch() decodes"


async def test_a_gzipped_body_is_not_decoded_twice() -> None:
    fetch = RecordingFetch((200, [("content-encoding", "gzip")], b"plain text, decoded"))
    async with httpx.AsyncClient(transport=FetchTransport(fetch)) as client:
        assert (await client.get("https://x.test/")).text == "plain text, decoded"


async def test_an_encoding_fetch_does_not_decode_is_left_for_httpx() -> None:
    import zlib

    fetch = RecordingFetch((200, [("content-encoding", "deflate")], zlib.compress(b"deflated")))
    async with httpx.AsyncClient(transport=FetchTransport(fetch)) as client:
        assert (await client.get("https://x.test/")).text == "deflated"


async def test_latin_1_and_repeated_headers_come_back_intact() -> None:
    answered = [("x-city", "Köln"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]
    async with httpx.AsyncClient(
        transport=FetchTransport(RecordingFetch((200, answered, b"")))
    ) as c:
        response = await c.get("https://x.test/")
    assert response.headers["x-city"] == "Köln"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (JsException("TimeoutError: The operation was aborted due to timeout"), httpx.ReadTimeout),
        (JsException("AbortError: signal is aborted"), httpx.ReadTimeout),
        (JsException("TypeError: fetch failed"), httpx.ConnectError),
    ],
)
async def test_fetch_failures_become_httpx_errors(error: Exception, expected: type) -> None:
    async with httpx.AsyncClient(transport=FetchTransport(RecordingFetch(error))) as client:
        with pytest.raises(expected):
            await client.get("https://x.test/")


async def test_the_prefect_adapter_retries_over_fetch_and_reports_the_outage() -> None:
    down = JsException("TypeError: fetch failed")
    fetch = RecordingFetch(down, down, down)
    prefect = PrefectOrchestrator("https://prefect.test/api", transport=FetchTransport(fetch),
                                  backoff=0)  # fmt: skip
    with pytest.raises(DependencyUnavailable):
        await prefect.submit("run-crew-job/cpu", parameters={}, idempotency_key="k", tags=[])
    assert len(fetch.calls) == 3
    assert fetch.calls[0]["url"] == "https://prefect.test/api/deployments/name/run-crew-job/cpu"
