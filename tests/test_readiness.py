"""`GET /readyz`: every dependency probed, cheaply and within a bound; 503 names the ones
that do not answer. Liveness (`/healthz`) never calls a dependency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import respx
from fastapi import FastAPI

from edge.adapters.openai_compatible import OpenAICompatibleGenerator
from edge.adapters.prefect import PrefectOrchestrator
from edge.app import create_app
from edge.local.numpy_index import NumpyVectorIndex
from edge.local.sqlite_kv import SqliteKV
from edge.ports import Ports
from edge.settings import Settings
from tests.conftest import asgi_client
from tests.doubles.models import RecordingEmbedder, RecordingGenerator, unavailable

LLM = "http://llm.test/v1"
PREFECT = "http://prefect.test/api"


class HangingKV(SqliteKV):
    async def get(self, key: str) -> str | None:
        await asyncio.sleep(30)
        return None


async def test_ready_when_every_dependency_answers_without_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"kv": "ok", "vectors": "ok", "embedder": "ok", "generator": "ok",
                   "ledger": "ok"},
    }  # fmt: skip


async def test_a_dependency_that_is_down_is_named_in_a_503(
    client: httpx.AsyncClient, generator: RecordingGenerator, embedder: RecordingEmbedder
) -> None:
    generator.fail_with = unavailable()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "5"
    problem = response.json()
    assert problem["detail"] == "not ready: generator did not answer"
    assert problem["checks"]["generator"] == "unavailable"
    assert problem["checks"]["kv"] == "ok"
    assert embedder.batches == [["readiness probe"]], "the embedder really embedded"
    assert (await client.get("/healthz")).status_code == 200, "liveness is not readiness"


async def test_a_hanging_dependency_reads_as_down_within_the_bound(
    tmp_path: Path, settings: Settings
) -> None:
    ports = Ports(
        kv=HangingKV(tmp_path / "kv.sqlite3"),
        vectors=NumpyVectorIndex(tmp_path / "v.sqlite3", dimensions=384),
        embedder=RecordingEmbedder(),
        generator=RecordingGenerator(),
    )
    async with asgi_client(create_app(settings, ports)) as client:
        started = time.monotonic()
        response = await client.get("/readyz")
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.json()["checks"]["kv"] == "no answer within 2 s"


def _remote_app(tmp_path: Path, settings: Settings) -> FastAPI:
    ports = Ports(
        kv=SqliteKV(tmp_path / "kv.sqlite3"),
        vectors=NumpyVectorIndex(tmp_path / "v.sqlite3", dimensions=384),
        embedder=RecordingEmbedder(),
        generator=OpenAICompatibleGenerator(LLM, "smollm2"),
        orchestrator=PrefectOrchestrator(PREFECT, attempts=1),
    )
    return create_app(settings, ports)


async def test_the_model_server_and_prefect_are_asked_cheaply(
    tmp_path: Path, settings: Settings
) -> None:
    with respx.mock(assert_all_called=True) as router:
        models = router.get(f"{LLM}/models").respond(200, json={"data": [{"id": "smollm2"}]})
        deployments = router.post(f"{PREFECT}/deployments/filter").respond(200, json=[])
        async with asgi_client(_remote_app(tmp_path, settings)) as client:
            response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["orchestrator"] == "ok"
    # Any other request (a generation) would hit no route and fail the probe.
    assert models.call_count == deployments.call_count == 1


async def test_prefect_and_the_model_server_down_are_both_named(
    tmp_path: Path, settings: Settings
) -> None:
    with respx.mock() as router:
        router.get(f"{LLM}/models").mock(side_effect=httpx.ConnectError("refused"))
        router.post(f"{PREFECT}/deployments/filter").respond(503)
        async with asgi_client(_remote_app(tmp_path, settings)) as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    problem = response.json()
    assert problem["detail"] == "not ready: generator, orchestrator did not answer"
    assert problem["checks"]["orchestrator"] == "unavailable"
    assert "prefect.test" not in response.text, "no internal addresses in the answer"


async def test_an_upstream_error_text_never_reaches_the_answer(
    tmp_path: Path, settings: Settings
) -> None:
    leak = "Incorrect API key provided: sk-live-SECRET123 at https://vllm.internal:8000"
    with respx.mock() as router:
        router.get(f"{LLM}/models").respond(401, json={"error": {"message": leak}})
        router.post(f"{PREFECT}/deployments/filter").respond(200, json=[])
        async with asgi_client(_remote_app(tmp_path, settings)) as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert "SECRET123" not in response.text and "vllm.internal" not in response.text


async def test_one_probe_serves_every_caller_for_a_few_seconds(
    client: httpx.AsyncClient, embedder: RecordingEmbedder
) -> None:
    for _ in range(5):
        assert (await client.get("/readyz")).status_code == 200
    assert len(embedder.batches) == 1, "unauthenticated callers cannot multiply the probes"
