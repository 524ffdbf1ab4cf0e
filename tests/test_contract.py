"""The contract tells the truth: authentication before validation, 404 for ids, OpenAPI."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from edge.app import create_app
from edge.settings import Settings
from shared.limits import DEFAULT_LIMITS
from shared.signing import new_secret, signed_headers
from tests.conftest import AUTH_A, KEY_A, KEY_B, asgi_client
from tests.doubles.catalog import SUMMARIZE, publish_shipped_crews
from tests.doubles.orchestrator import InMemoryOrchestrator
from tests.doubles.queues import RecordingQueue
from tests.doubles.scheduler import RecordingScheduler
from tests.support import sqlite_ports

EXECUTOR_SECRET = new_secret()
PROBLEM = "application/problem+json"
A_JOB_ID = "job_" + "0" * 26
EVENT = {"tenant": "tenant_a", "type": "running"}


def contract_app(data_dir: Path) -> FastAPI:
    """The whole app with every optional part wired, on local adapters and fakes (the
    catalog empty: `seeded_contract_app` has the shipped crews published)."""
    settings = Settings(
        api_keys={KEY_A: "tenant_a", KEY_B: "tenant_b"},
        embed_model="fake-bow",
        prefect_api_url="http://prefect.test/api",
        executor_secret=EXECUTOR_SECRET,
        secret_key="k" * 40,
        allow_loopback_webhooks=True,
    )
    ports = sqlite_ports(
        data_dir,
        orchestrator=InMemoryOrchestrator(),
        scheduler=RecordingScheduler(),
        deliveries=RecordingQueue(),
    )
    return create_app(settings, ports)


async def seeded_contract_app(data_dir: Path) -> FastAPI:
    """`contract_app` with the shipped crews in its catalog."""
    app = contract_app(data_dir)
    await publish_shipped_crews(app.state.ports.kv)
    return app


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(await seeded_contract_app(tmp_path)) as client:
        yield client


def signed(body: bytes, *, age: int = 0, secret: str = EXECUTOR_SECRET) -> dict[str, str]:
    return signed_headers(secret, "msg-1", int(time.time()) - age, body)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# --- authentication before any validation --------------------------------------------------

INTERNAL_PATHS = [
    f"/v1/internal/jobs/{A_JOB_ID}/events",
    "/v1/internal/jobs/job_abc/events",  # a job id of another shape
    "/v1/internal/jobs/%2e%2e/events",
    "/v1/internal/search",
    "/v1/internal/crews",
    f"/v1/internal/schedules/sch_{'0' * 26}/runs",
    "/v1/internal/no-such-route",
]
BODIES = [b"", b"{not json", b"[]", json.dumps(EVENT).encode(), b"\xff\xfe"]


@pytest.mark.parametrize("path", INTERNAL_PATHS)
@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_unsigned_internal_calls_are_401_whatever_the_path_or_body(
    api: httpx.AsyncClient, path: str, body: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    assert_problem(await api.post(path, content=body, headers=headers), 401)


@pytest.mark.parametrize("path", INTERNAL_PATHS)
@pytest.mark.parametrize(
    "headers",
    # Signed when the test runs, not when it is collected: on a slow machine the tests
    # before this one can take longer than the future one's margin over the tolerance.
    [
        lambda: signed(b"{}", age=400),  # stale
        lambda: signed(b"{}", age=-400),  # from the future
        lambda: {**signed(b"{}"), "webhook-timestamp": "9" * 5000},  # int() would refuse it
        lambda: signed(b"{}", secret=new_secret()),  # another secret
        lambda: {**signed(b"{}"), "webhook-id": ""},
    ],
    ids=["stale", "future", "huge-timestamp", "wrong-secret", "no-id"],
)
async def test_stale_or_forged_internal_calls_are_401(
    api: httpx.AsyncClient, path: str, headers: Callable[[], dict[str, str]]
) -> None:
    headers = {**headers(), "Content-Type": "application/json"}
    assert_problem(await api.post(path, content=b"{}", headers=headers), 401)
    assert_problem(await api.get(path, headers=headers), 401)


async def test_an_unsigned_oversized_call_is_401_before_its_body_is_read(
    api: httpx.AsyncClient,
) -> None:
    big = b"x" * (DEFAULT_LIMITS.max_body_bytes + 1)
    assert_problem(await api.post("/v1/internal/search", content=big), 401)


async def test_a_signed_oversized_call_is_413(api: httpx.AsyncClient) -> None:
    big = b" " * (DEFAULT_LIMITS.max_body_bytes + 1)
    headers = {**signed(big), "Content-Type": "application/json"}
    assert_problem(await api.post("/v1/internal/search", content=big, headers=headers), 413)


async def test_signed_calls_are_then_validated(api: httpx.AsyncClient) -> None:
    path = f"/v1/internal/jobs/{A_JOB_ID}/events"
    for body, content_type, status in [
        (b"{not json", "application/json", 400),
        (json.dumps(EVENT).encode(), "text/plain", 415),
        (json.dumps({**EVENT, "type": "exploded"}).encode(), "application/json", 422),
        (json.dumps(EVENT).encode(), "application/json", 404),  # no such job
    ]:
        headers = {**signed(body), "Content-Type": content_type}
        assert_problem(await api.post(path, content=body, headers=headers), status)
    query = json.dumps({"tenant": "tenant_a", "query": "x"}).encode()
    headers = {**signed(query), "Content-Type": "application/json"}
    response = await api.post("/v1/internal/search", content=query, headers=headers)
    assert response.status_code == 200 and response.json()["matches"] == []


async def test_signed_crew_publishes_are_then_validated(api: httpx.AsyncClient) -> None:
    good = {"worker": "w-1", "pool": "cpu", "crews": [SUMMARIZE.public()]}
    other_pool = {**good, "pool": "gpu"}
    for body, content_type, status in [
        (b"{not json", "application/json", 400),
        (json.dumps(good).encode(), "text/plain", 415),
        (json.dumps(other_pool).encode(), "application/json", 422),
    ]:
        headers = {**signed(body), "Content-Type": content_type}
        assert_problem(await api.post("/v1/internal/crews", content=body, headers=headers), status)
    body = json.dumps(good).encode()
    headers = {**signed(body), "Content-Type": "application/json"}
    response = await api.post("/v1/internal/crews", content=body, headers=headers)
    assert (response.status_code, response.json()) == (200, {"crews": ["summarize"]})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/job_abc"),
        ("POST", "/v1/jobs/job_abc/cancel"),
        ("GET", "/v1/documents/%23hash"),
        ("DELETE", "/v1/documents/%23hash"),
        ("GET", "/v1/jobs?limit=0"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/no-such-route"),
    ],
)
async def test_calls_without_a_key_are_401_before_any_validation(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path, content=b"{not json")
    assert_problem(response, 401)


async def test_a_valid_key_still_reaches_the_routes(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/crews", headers=AUTH_A)).status_code == 200


# --- unknown, foreign and malformed ids are all 404 ----------------------------------------

MALFORMED_JOB_IDS = ["job_abc", "nope", "JOB_" + "0" * 26, "job_" + "0" * 27, "j" * 5000, "%00"]


@pytest.mark.parametrize("job_id", [A_JOB_ID, *MALFORMED_JOB_IDS])
async def test_unknown_or_malformed_job_ids_are_404(api: httpx.AsyncClient, job_id: str) -> None:
    assert_problem(await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A), 404)
    assert_problem(await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A), 404)
    body = json.dumps(EVENT).encode()
    headers = {**signed(body), "Content-Type": "application/json"}
    path = f"/v1/internal/jobs/{job_id}/events"
    assert_problem(await api.post(path, content=body, headers=headers), 404)


async def test_another_tenants_job_is_404(api: httpx.AsyncClient) -> None:
    job = {"crew": "summarize", "inputs": {"text": "Paris is on the Seine."}}
    job_id = (await api.post("/v1/jobs", json=job, headers=AUTH_A)).json()["id"]
    other = {"Authorization": f"Bearer {KEY_B}"}
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).status_code == 200
    assert_problem(await api.get(f"/v1/jobs/{job_id}", headers=other), 404)
    assert_problem(await api.post(f"/v1/jobs/{job_id}/cancel", headers=other), 404)
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "queued"


@pytest.mark.parametrize("document_id", ["doc-1", "%23hash", "a%2Fb", "_x", "a" * 129, "%20"])
async def test_unknown_or_malformed_document_ids_are_404(
    api: httpx.AsyncClient, document_id: str
) -> None:
    assert_problem(await api.get(f"/v1/documents/{document_id}", headers=AUTH_A), 404)
    assert_problem(await api.delete(f"/v1/documents/{document_id}", headers=AUTH_A), 404)


# --- /openapi.json documents what the app sends --------------------------------------------


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    return contract_app(tmp_path).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_every_ref_in_the_document_resolves(document: dict[str, Any]) -> None:
    found = refs(document)
    assert found, "the document uses components"
    for ref in found:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_error_is_documented_as_problem_json(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(document)
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            (media_type,) = response["content"]
            schema = response["content"][media_type]["schema"]["$ref"].rsplit("/", 1)[1]
            expected = "ValidationProblem" if status == "422" else "ProblemDetails"
            assert (media_type, schema) == (PROBLEM, expected), (method, path, status)
        if {"503", "429"} & set(operation["responses"]):
            for status in {"503", "429"} & set(operation["responses"]):
                assert operation["responses"][status]["headers"]["Retry-After"]["required"]


def test_every_route_documents_what_its_guards_can_answer(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        statuses = set(operation["responses"])
        assert {"400", "413"} <= statuses, (method, path)
        if path.startswith("/v1/internal/"):
            assert "401" in statuses and "429" not in statuses, (method, path)
        elif path.startswith("/v1/"):
            assert {"401", "429"} <= statuses, (method, path)
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
        if "requestBody" in operation:
            assert {"400", "415", "422"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)


def test_the_executor_event_body_is_documented_in_full(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v1/internal/jobs/{job_id}/events"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ExecutorEvent"}
    event = document["components"]["schemas"]["ExecutorEvent"]
    assert "$defs" not in json.dumps(document), "nested definitions belong in components"
    assert event["required"] == ["type", "tenant"]


async def test_problems_sent_match_the_documented_schemas(api: httpx.AsyncClient) -> None:
    from edge.problems import ProblemDetails, ValidationProblem

    conflict = {**AUTH_A, "Idempotency-Key": "k-1"}
    job = {"crew": "summarize", "inputs": {"text": "Paris is on the Seine."}}
    assert (await api.post("/v1/jobs", json=job, headers=conflict)).status_code == 202
    changed = {**job, "inputs": {"text": "other"}}
    sent = [
        (await api.post("/v1/jobs", json=changed, headers=conflict), 422),
        (await api.post("/v1/jobs", json={**job, "inputs": {}}, headers=AUTH_A), 422),
        (await api.get("/v1/jobs?cursor=nope", headers=AUTH_A), 422),
        (await api.post("/v1/search", json={"query": ""}, headers=AUTH_A), 422),
        (await api.get("/v1/jobs/nope", headers=AUTH_A), 404),
        (await api.get("/v1/crews"), 401),
    ]
    for response, status in sent:
        assert response.status_code == status, response.text
        model = ValidationProblem if status == 422 else ProblemDetails
        model.model_validate(response.json())
        if status == 422:
            assert all(
                e["loc"][0] in {"body", "query", "header"} for e in response.json()["errors"]
            )


async def test_a_submitted_jobs_urls_show_no_schedule_everywhere(api: httpx.AsyncClient) -> None:
    """`urls.schedule` is documented as null for a submitted job: in every answer, and in
    the webhook (whose `data` is the job as `GET` shows it)."""
    hook = {"url": "https://hooks.example.com/in", "events": ["job.cancelled"]}
    body = {"crew": "summarize", "inputs": {"text": "t"}, "webhook": hook}
    accepted = await api.post("/v1/jobs", json=body, headers=AUTH_A)
    assert accepted.status_code == 202, accepted.text
    job_url = accepted.json()["urls"]["self"]
    assert accepted.json()["urls"]["schedule"] is None
    assert (await api.get(job_url, headers=AUTH_A)).json()["urls"]["schedule"] is None
    cancelled = await api.post(f"{job_url}/cancel", headers=AUTH_A)
    assert cancelled.json()["urls"]["schedule"] is None
    queue = api._transport.app.state.ports.deliveries  # type: ignore[attr-defined]
    (sent, _), *_ = queue.sent
    assert sent["payload"]["data"]["urls"]["schedule"] is None
