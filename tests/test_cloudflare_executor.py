"""The executor's Cloudflare side against Cloudflare's REST shapes (respx): a bulk
ingestion written through langchain-cloudflare (Workers AI embeddings, Vectorize upserts)
into the very index the Worker's adapters query, and Workers AI as the crews' LLM."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from edge.adapters.cloudflare import build_cloudflare_ports, env_mapping
from edge.app import create_app
from edge.settings import Settings
from executor.catalog import crew_for_run
from executor.edge_client import EdgeClient
from executor.flows import run_crew
from executor.ingest import run_ingestion
from executor.settings import ExecutorSettings, ExecutorSettingsError
from executor.sinks import CloudflareSink, SinkError
from executor.workers_ai import WorkersAIError, WorkersAILLM, workers_ai_llm
from shared.documents import document_chunks, vectorize_id
from shared.signing import new_secret
from tests.conftest import AUTH_A, AUTH_B, KEY_A, KEY_B
from tests.doubles.cloudflare_bindings import (
    FakeAI,
    FakeDurableObjectNamespace,
    FakeKVNamespace,
    FakeVectorize,
)
from tests.doubles.models import bag_of_words_vector
from tests.test_executor import FakeEdge, client
from tests.test_ingestions import RecordingOrchestrator, documents

API = "https://api.cloudflare.com/client/v4/accounts/acct-123"
TOKEN = "cf-token-SECRET-value"
EMBED_MODEL = "@cf/baai/bge-small-en-v1.5"
CHAT_MODEL = "@cf/meta/llama-3.1-8b-instruct"
SECRET = new_secret()
CLOUDFLARE = ExecutorSettings(
    edge_url="http://edge.test", executor_secret=SECRET, cloudflare_account_id="acct-123",
    cloudflare_api_token=TOKEN, vectorize_index="edgecrew-docs",
)  # fmt: skip
REPO_CONFIG = Path(__file__).resolve().parents[1] / "edgecrew.toml"


def ok(result: Any) -> httpx.Response:
    """Cloudflare's API envelope."""
    return httpx.Response(200, json={"result": result, "success": True, "errors": [],
                                     "messages": []})  # fmt: skip


def refused(status: int, message: str) -> httpx.Response:
    body = {"result": None, "success": False, "errors": [{"code": 10000, "message": message}],
            "messages": []}  # fmt: skip
    return httpx.Response(status, json=body)


class FakeCloudflareAPI:
    """Workers AI's `/ai/run/{model}` and Vectorize's v2 `upsert`, over the same Vectorize
    double the Worker's binding reads, so what the executor writes is what the edge finds."""

    def __init__(self, router: respx.MockRouter, vectorize: FakeVectorize) -> None:
        self.vectorize = vectorize
        self.embed_calls: list[dict[str, Any]] = []
        self.upserts: list[httpx.Request] = []
        self.fail_embeddings: httpx.Response | None = None
        router.post(f"{API}/ai/run/{EMBED_MODEL}").mock(side_effect=self.embed)
        router.post(f"{API}/vectorize/v2/indexes/edgecrew-docs/upsert").mock(
            side_effect=self.upsert
        )

    def embed(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        body = json.loads(request.content)
        self.embed_calls.append(body)
        if self.fail_embeddings is not None:
            return self.fail_embeddings
        assert len(body["text"]) <= 100, "bge models take at most 100 texts a call"
        data = [bag_of_words_vector(text) for text in body["text"]]
        return ok({"shape": [len(data), 384], "data": data, "pooling": "mean"})

    async def upsert(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/x-ndjson"
        self.upserts.append(request)
        vectors = [json.loads(line) for line in request.content.decode().splitlines()]
        result = await self.vectorize.upsert(vectors)  # its checks: size, id, metadata
        return ok({"mutationId": result["mutationId"]})


@pytest.fixture
def worker() -> Iterator[tuple[TestClient, SimpleNamespace, RecordingOrchestrator]]:
    """The edge over the Cloudflare adapters (binding doubles), with an orchestrator."""
    env = SimpleNamespace(
        KV=FakeKVNamespace(), VECTORIZE=FakeVectorize(384), JOBS=FakeDurableObjectNamespace(),
        AI=FakeAI(bag_of_words_vector, reply="Grounded reply [1]."),
        EDGECREW_API_KEYS=f"tenant_a:{KEY_A},tenant_b:{KEY_B}",
        EDGECREW_EXECUTOR_SECRET=SECRET,
    )  # fmt: skip
    settings = Settings.from_env(env_mapping(env))
    orchestrator = RecordingOrchestrator()
    ports = dataclasses.replace(build_cloudflare_ports(env, settings), orchestrator=orchestrator)
    with TestClient(create_app(settings, ports), base_url="http://edge.test") as http:
        yield http, env, orchestrator


def test_a_bulk_ingestion_on_cloudflare_answers_through_the_workers_bindings(
    worker: tuple[TestClient, SimpleNamespace, RecordingOrchestrator],
) -> None:
    http, env, _ = worker
    batch = documents(250)
    batch[0]["text"] = "Runbook.\n\nStep one: page the on-call.\nStep two: " + batch[0]["text"]
    accepted = http.post("/v1/ingestions", json={"documents": batch}, headers=AUTH_A).json()
    edge = EdgeClient(CLOUDFLARE, client=http, sleep=lambda _: None)
    with respx.mock(assert_all_called=True) as router:
        api = FakeCloudflareAPI(router, env.VECTORIZE)
        result = run_ingestion(accepted["id"], "tenant_a", settings=CLOUDFLARE, edge=edge)
    assert result["sink"] == "cloudflare" and result["embed_model"] == EMBED_MODEL
    assert result["documents"] == 250
    assert sum(len(call["text"]) for call in api.embed_calls) == result["chunks"]
    first = document_chunks(batch[0]["id"], batch[0]["text"], batch[0]["metadata"],
                            size=800, overlap=120)  # fmt: skip
    # Embedded as the Worker embeds a chunk: as it is, newlines included.
    assert api.embed_calls[0]["text"][: len(first)] == [c.text for c in first]
    assert "\n" in api.embed_calls[0]["text"][0]

    listed = http.get("/v1/documents?limit=1000", headers=AUTH_A).json()["documents"]
    assert len(listed) == 250
    found = http.post("/v1/search", json={"query": "zq201x 201", "top_k": 1}, headers=AUTH_A)
    assert found.json()["matches"][0]["document_id"] == "note-201"
    answer = http.post("/v1/answers", json={"question": "What is zq201x (201)?"}, headers=AUTH_A)
    assert answer.json()["citations"][0]["chunk_id"].startswith("note-201#")
    assert http.post("/v1/search", json={"query": "zq201x"}, headers=AUTH_B).json()["matches"] == []

    # The same document posted by another tenant is the same record but for its namespace.
    http.post("/v1/documents", json={"documents": [batch[7]]}, headers=AUTH_B)
    for chunk in document_chunks("note-7", batch[7]["text"], batch[7]["metadata"],
                                 size=800, overlap=120):  # fmt: skip
        bulk = env.VECTORIZE.vectors[vectorize_id("tenant_a", chunk.id)]
        posted = env.VECTORIZE.vectors[vectorize_id("tenant_b", chunk.id)]
        assert (bulk["namespace"], posted["namespace"]) == ("tenant_a", "tenant_b")
        assert bulk["metadata"] == posted["metadata"] and bulk["metadata"]["_id"] == chunk.id
        assert bulk["values"] == pytest.approx(posted["values"])
    # A Worker's DELETE removes a bulk-ingested document's chunks from Vectorize.
    assert http.delete("/v1/documents/note-201", headers=AUTH_A).status_code == 204
    left = [v["metadata"]["_document_id"] for v in env.VECTORIZE.vectors.values()]
    assert "note-201" not in left and "note-200" in left


def test_a_refused_embedding_fails_the_sink_naming_the_service_not_the_token() -> None:
    sink = CloudflareSink(account_id="acct-123", api_token=TOKEN, index_name="edgecrew-docs",
                          model=EMBED_MODEL)  # fmt: skip
    chunks = document_chunks("a", "Some text.", {}, size=800, overlap=120)
    with respx.mock(assert_all_called=False) as router:
        api = FakeCloudflareAPI(router, FakeVectorize(384))
        api.fail_embeddings = refused(401, "Authentication error")
        with pytest.raises(SinkError) as failed:
            sink.write("tenant_a", chunks)
    assert str(failed.value) == "Workers AI answered 401: Authentication error"
    assert TOKEN not in repr(failed.value) and api.upserts == []


def test_an_upsert_vectorize_refuses_is_a_sink_error() -> None:
    sink = CloudflareSink(account_id="acct-123", api_token=TOKEN, index_name="edgecrew-docs",
                          model=EMBED_MODEL)  # fmt: skip
    with respx.mock() as router:
        FakeCloudflareAPI(router, FakeVectorize(384))
        router.routes[-1].mock(return_value=refused(400, "vector dimension mismatch"))
        with pytest.raises(SinkError, match="Vectorize answered 400: vector dimension mismatch"):
            sink.write("tenant_a", document_chunks("a", "Some text.", {}, size=800, overlap=120))


# --- Workers AI as the crews' LLM ---------------------------------------------------------


def chat_route(router: respx.MockRouter, reply: str) -> respx.Route:
    return router.post(f"{API}/ai/run/{CHAT_MODEL}").mock(
        return_value=ok({"response": reply, "usage": {"total_tokens": 12}})
    )


def test_the_workers_ai_llm_speaks_the_run_api_and_applies_crewais_stop_words() -> None:
    llm = workers_ai_llm(dataclasses.replace(CLOUDFLARE, llm_model=CHAT_MODEL, llm_max_tokens=64))
    llm.stop = ["\nObservation:"]
    with respx.mock() as router:
        route = chat_route(router, "Thought: done\nFinal Answer: Paris\nObservation: extra")
        text = llm.call([{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Capital of France?"}])  # fmt: skip
    assert text == "Thought: done\nFinal Answer: Paris"
    sent = json.loads(route.calls.last.request.content)
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Capital of France?"}]  # fmt: skip
    assert sent["max_tokens"] == 64
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(llm) and TOKEN not in json.dumps(llm.to_config_dict(), default=str)


def test_a_refused_call_names_the_model_and_status_never_the_token() -> None:
    llm = WorkersAILLM(model=CHAT_MODEL, account_id="acct-123", api_token=TOKEN)
    with respx.mock() as router:
        router.post(f"{API}/ai/run/{CHAT_MODEL}").mock(
            return_value=refused(403, "Authentication error")
        )
        with pytest.raises(WorkersAIError) as failed:
            llm.call("hello")
    assert str(failed.value) == f"Workers AI answered 403 for {CHAT_MODEL}: Authentication error"
    assert TOKEN not in str(failed.value)


def test_a_crew_runs_on_workers_ai_when_the_executor_is_told_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGECREW_CONFIG", str(REPO_CONFIG))
    monkeypatch.delenv("EDGECREW_CREW_LLM_FACTORY", raising=False)
    crew_for_run.cache_clear()
    settings = ExecutorSettings.from_env({
        "EDGECREW_EDGE_URL": "http://edge.test", "EDGECREW_EXECUTOR_SECRET": SECRET,
        "EDGECREW_CREW_LLM_PROVIDER": "workers-ai", "EDGECREW_CF_ACCOUNT_ID": "acct-123",
        "EDGECREW_CF_API_TOKEN": TOKEN,
    })  # fmt: skip
    assert settings.llm_model == CHAT_MODEL  # Workers AI's default model, not smollm2
    edge = FakeEdge()
    try:
        with respx.mock() as router:
            route = chat_route(router, "Thought: I now know the final answer\n"
                                       "Final Answer: Heron-7 lives in Oslo.")  # fmt: skip
            result = run_crew("job_wai", "tenant_a", "summarize",
                              {"text": "Heron-7 is the staging database in Oslo."},
                              settings=settings, edge=client(edge))  # fmt: skip
    finally:
        crew_for_run.cache_clear()
    assert result["output"] == "Heron-7 lives in Oslo."
    prompt = json.loads(route.calls.last.request.content)["messages"]
    assert "Heron-7 is the staging database in Oslo." in json.dumps(prompt)


def test_workers_ai_settings_need_an_account_and_a_token_and_hide_the_token() -> None:
    base = {"EDGECREW_EDGE_URL": "http://edge.test", "EDGECREW_EXECUTOR_SECRET": SECRET}
    with pytest.raises(ExecutorSettingsError, match="EDGECREW_CF_ACCOUNT_ID and EDGECREW_CF"):
        ExecutorSettings.from_env({**base, "EDGECREW_CREW_LLM_PROVIDER": "workers-ai"})
    with pytest.raises(ExecutorSettingsError, match="needs EDGECREW_CF_API_TOKEN"):
        ExecutorSettings.from_env({**base, "EDGECREW_VECTORIZE_INDEX": "docs",
                                   "EDGECREW_CF_ACCOUNT_ID": "acct"})  # fmt: skip
    with pytest.raises(ExecutorSettingsError, match="one of openai, workers-ai"):
        ExecutorSettings.from_env({**base, "EDGECREW_CREW_LLM_PROVIDER": "bedrock"})
    assert TOKEN not in repr(CLOUDFLARE)


def test_a_busy_or_slow_cloudflare_is_retried_per_batch_not_the_whole_ingestion() -> None:
    """Workers AI at capacity (429) twice: the batch is tried again after 1 s and 2 s and
    goes in; a service that stays down ends the write after four tries."""
    slept: list[float] = []
    sink = CloudflareSink(account_id="acct-123", api_token=TOKEN, index_name="edgecrew-docs",
                          model=EMBED_MODEL, sleep=slept.append)  # fmt: skip
    chunks = document_chunks("a", "Some text.", {}, size=800, overlap=120)
    with respx.mock(assert_all_called=False) as router:
        vectorize = FakeVectorize(384)
        api = FakeCloudflareAPI(router, vectorize)
        busy = iter([refused(429, "Capacity temporarily exceeded")] * 2)
        embed = api.embed
        router.routes[0].mock(side_effect=lambda request: next(busy, None) or embed(request))
        sink.write("tenant_a", chunks)
        assert slept == [1.0, 2.0] and len(api.upserts) == 1

        slept.clear()
        api.fail_embeddings = refused(503, "Service unavailable")
        router.routes[0].mock(side_effect=api.embed)
        with pytest.raises(SinkError, match="Workers AI answered 503"):
            sink.write("tenant_a", chunks)
    assert slept == [1.0, 2.0, 4.0], "four tries, then the run's own retry decides"
