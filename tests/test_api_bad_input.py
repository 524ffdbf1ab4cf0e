"""Bad input gets the documented status as problem+json, never a 500, and changes nothing."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.limits import DEFAULT_LIMITS
from tests.conftest import AUTH_A, KEY_A

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


async def corpus_is_empty(client: httpx.AsyncClient) -> bool:
    search = await client.post(
        "/v1/search", json={"query": "anything", "top_k": 20}, headers=AUTH_A
    )
    return search.json()["matches"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-000"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {KEY_A}x"},
    ],
)
async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient, headers: dict) -> None:
    for method, path in [
        ("POST", "/v1/documents"),
        ("POST", "/v1/search"),
        ("POST", "/v1/answers"),
        ("DELETE", "/v1/documents/x"),
        ("GET", "/v1/unknown"),
    ]:
        response = await client.request(method, path, headers=headers, content=b"{not json")
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert KEY_A not in json.dumps(body)


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/documents",
        content=b'{"documents": [',
        headers={**AUTH_A, "Content-Type": "application/json"},
    )
    assert_problem(response, 400)
    assert await corpus_is_empty(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = dict(AUTH_A)
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"query": "x"}).encode()
    assert_problem(await client.post("/v1/search", content=body, headers=headers), 415)


async def test_oversized_body_is_413_announced_or_streamed(client: httpx.AsyncClient) -> None:
    big = json.dumps(
        {"documents": [{"id": "big", "text": "x" * (DEFAULT_LIMITS.max_body_bytes + 10)}]}
    )
    headers = {**AUTH_A, "Content-Type": "application/json"}
    assert_problem(await client.post("/v1/documents", content=big, headers=headers), 413)

    async def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536].encode()

    assert_problem(await client.post("/v1/documents", content=chunks(), headers=headers), 413)
    assert await corpus_is_empty(client)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404)
    assert_problem(await client.get("/v1/nope", headers=AUTH_A), 404)
    assert_problem(await client.get("/v1/search", headers=AUTH_A), 405)
    assert_problem(await client.put("/healthz"), 405)


INVALID_BODIES: list[tuple[str, Any]] = [
    ("/v1/documents", {}),
    ("/v1/documents", {"documents": []}),
    ("/v1/documents", {"documents": "nope"}),
    ("/v1/documents", {"documents": [{"id": "a"}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": ""}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": 5}]}),
    ("/v1/documents", {"documents": [{"id": "a#1", "text": "x"}]}),
    ("/v1/documents", {"documents": [{"id": "../etc", "text": "x"}]}),
    ("/v1/documents", {"documents": [{"id": "a" * 129, "text": "x"}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x", "metadata": {"_doc": "x"}}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x", "metadata": {"a.b": "x"}}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x", "metadata": {"k": [1]}}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x", "metadata": {"k": None}}]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x", "extra": 1}]}),
    ("/v1/documents", {"documents": [{"id": f"d{i}", "text": "x"} for i in range(101)]}),
    ("/v1/documents", {"documents": [{"id": "a", "text": "x" * 200_001}]}),
    ("/v1/search", {"query": ""}),
    ("/v1/search", {"query": "   "}),
    ("/v1/search", {"query": "x" * 2001}),
    ("/v1/search", {"query": "x", "top_k": 0}),
    ("/v1/search", {"query": "x", "top_k": 21}),
    ("/v1/search", {"query": "x", "top_k": "5"}),
    ("/v1/search", {"query": "x", "top_k": 2.5}),
    ("/v1/search", {"query": 5}),
    ("/v1/search", {"query": "x", "filter": "source=docs"}),
    ("/v1/search", [1, 2]),
    ("/v1/search", "just a string"),
    ("/v1/answers", {"question": "x", "stream": "yes"}),
    ("/v1/answers", {"question": None}),
    ("/v1/answers", {"question": "x", "top_k": -1}),
]


@pytest.mark.parametrize(("path", "body"), INVALID_BODIES)
async def test_invalid_input_is_422_with_errors(
    client: httpx.AsyncClient, path: str, body: Any
) -> None:
    problem = assert_problem(await client.post(path, json=body, headers=AUTH_A), 422)
    assert problem["errors"] and all({"loc", "msg"} <= set(e) for e in problem["errors"])
    assert await corpus_is_empty(client)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=x", "cursor=%25%25%25", "cursor=" + "A" * 1025]
)
async def test_bad_listing_parameters_are_422(client: httpx.AsyncClient, query: str) -> None:
    assert_problem(await client.get(f"/v1/documents?{query}", headers=AUTH_A), 422)


async def test_json_null_body_is_422(client: httpx.AsyncClient) -> None:
    headers = {**AUTH_A, "Content-Type": "application/json"}
    assert_problem(await client.post("/v1/search", content=b"null", headers=headers), 422)


async def test_a_document_id_of_another_shape_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.delete("/v1/documents/%23hash", headers=AUTH_A), 404)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
route_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "documents": st.lists(
                st.fixed_dictionaries(
                    {"id": st.text(max_size=10), "text": st.text(max_size=30)},
                    optional={"metadata": json_values},
                ),
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries(
        {"query": st.text(max_size=30)}, optional={"top_k": json_values, "filter": json_values}
    ),
    st.fixed_dictionaries(
        {"question": st.text(max_size=30)},
        optional={"top_k": json_values, "filter": json_values, "stream": st.booleans()},
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(["/v1/documents", "/v1/search", "/v1/answers"]), body=route_bodies)
async def test_no_body_produces_a_500(client: httpx.AsyncClient, path: str, body: Any) -> None:
    headers = {**AUTH_A, "Content-Type": "application/json"}
    response = await client.post(path, content=json.dumps(body), headers=headers)
    assert response.status_code in {200, 422}, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64))
async def test_no_raw_bytes_produce_a_500(client: httpx.AsyncClient, raw: bytes) -> None:
    headers = {**AUTH_A, "Content-Type": "application/json"}
    response = await client.post("/v1/search", content=raw, headers=headers)
    assert response.status_code in {200, 400, 422}, response.text


async def test_a_failing_local_store_is_503_not_500(client: httpx.AsyncClient, app: Any) -> None:
    class LockedDatabase:
        def execute(self, *args: Any) -> None:
            raise sqlite3.OperationalError("database is locked")

    app.state.ports.kv._db = LockedDatabase()
    response = await client.get("/v1/documents", headers=AUTH_A)
    problem = assert_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    assert "locked" not in problem["detail"], "internal details stay in the logs"


@pytest.mark.parametrize("declared", ["²", "1" * 5000, "12a"])
async def test_a_content_length_that_is_not_a_plain_number_is_400(
    declared: str, app: FastAPI
) -> None:
    """Below any HTTP server's own checks, straight into the ASGI app."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": "/v1/search", "query_string": b"",
             "headers": [(b"content-length", declared.encode("latin-1")),
                         (b"authorization", f"Bearer {KEY_A}".encode())]}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 400
