"""The same app over the Cloudflare adapters, driven through binding doubles."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from edge.adapters.cloudflare import (
    CloudflareKV,
    JsException,
    OpenAICompatibleGenerator,
    WorkersAIGenerator,
    build_cloudflare_ports,
    env_mapping,
    to_py,
)
from edge.app import create_app
from edge.settings import Settings, SettingsError
from tests.conftest import AUTH_A, AUTH_B, KEY_A, KEY_B
from tests.doubles.cloudflare_bindings import FakeAI, FakeKVNamespace, FakeVectorize
from tests.doubles.models import bag_of_words_vector


def worker_env(**vars: str) -> SimpleNamespace:
    """What `self.env` looks like in the Worker: bindings and vars as attributes."""
    return SimpleNamespace(
        KV=FakeKVNamespace(),
        VECTORIZE=FakeVectorize(384),
        AI=FakeAI(bag_of_words_vector, reply="Grounded reply [1]."),
        EDGECREW_API_KEYS=f"tenant_a:{KEY_A},tenant_b:{KEY_B}",
        **vars,
    )


def worker_app(env: SimpleNamespace) -> FastAPI:
    settings = Settings.from_env(env_mapping(env))
    return create_app(settings, build_cloudflare_ports(env, settings))


async def test_rag_flow_over_cloudflare_bindings(
    make_client: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    env = worker_env()
    async with make_client(worker_app(env)) as client:
        ingest = await client.post(
            "/v1/documents",
            json={"documents": [{"id": "paris", "text": "Paris is on the Seine."}]},
            headers=AUTH_A,
        )
        assert ingest.status_code == 200, ingest.text
        answer = await client.post(
            "/v1/answers", json={"question": "Which river is Paris on?"}, headers=AUTH_A
        )
        body = answer.json()
        assert body["answer"] == "Grounded reply [1]."
        assert body["model"] == "@cf/meta/llama-3.1-8b-instruct"
        assert [c["chunk_id"] for c in body["citations"]] == ["paris#0"]
        streamed = await client.post(
            "/v1/answers", json={"question": "Paris river?", "stream": True}, headers=AUTH_A
        )
        assert "event: done" in streamed.text
        other = await client.post("/v1/search", json={"query": "Seine"}, headers=AUTH_B)
        assert other.json()["matches"] == []

    (upsert,) = [args for name, args in env.VECTORIZE.calls if name == "upsert"]
    assert upsert[0]["namespace"] == "tenant_a" and len(upsert[0]["id"]) <= 64
    query_options = [args for name, args in env.VECTORIZE.calls if name == "query"]
    assert {o["namespace"] for o in query_options} == {"tenant_a", "tenant_b"}
    assert all(o["returnMetadata"] == "all" and o["topK"] <= 20 for o in query_options)
    cache_puts = [a for n, a in env.KV.calls if n == "put" and a[0].startswith("answer:")]
    assert cache_puts and cache_puts[0][2] == {"expirationTtl": 3600}
    embed_models = {model for model, inputs in env.AI.calls if "text" in inputs}
    assert embed_models == {"@cf/baai/bge-small-en-v1.5"}


def test_an_llm_base_url_switches_to_the_openai_compatible_generator() -> None:
    env = worker_env(EDGECREW_LLM_BASE_URL="https://vllm.example.com/v1", EDGECREW_LLM_MODEL="m")
    settings = Settings.from_env(env_mapping(env))
    assert isinstance(build_cloudflare_ports(env, settings).generator, OpenAICompatibleGenerator)
    plain = worker_env()
    plain_settings = Settings.from_env(env_mapping(plain))
    assert isinstance(build_cloudflare_ports(plain, plain_settings).generator, WorkersAIGenerator)


def test_mismatched_embedding_dimensions_fail_at_startup() -> None:
    env = worker_env(EDGECREW_EMBED_MODEL="@cf/baai/bge-base-en-v1.5")
    with pytest.raises(SettingsError, match=r"dimensions disagree.*=768.*=384"):
        worker_app(env)


def test_env_mapping_reads_only_settings_as_strings() -> None:
    env = SimpleNamespace(EDGECREW_CHUNK_SIZE=500, EDGECREW_LLM_MODEL=None, OTHER="x")
    assert env_mapping(env) == {"EDGECREW_CHUNK_SIZE": "500"}


def test_to_py_turns_nested_values_plain() -> None:
    class JsDict(dict):  # the SDK's dict subclass with attribute access
        pass

    value = JsDict(keys=[JsDict(name="a", metadata=None)], list_complete=True)
    converted = to_py(value)
    assert converted == {"keys": [{"name": "a", "metadata": None}], "list_complete": True}
    assert type(converted) is dict and type(converted["keys"][0]) is dict


async def test_kv_adapter_passes_js_option_objects() -> None:
    binding = FakeKVNamespace()
    kv = CloudflareKV(binding)
    await kv.put("a", "1")
    await kv.put("b", "2", ttl_seconds=120, metadata={"m": 1})
    await kv.list(prefix="a", limit=10, cursor="YQ==")
    assert binding.calls[0] == ("put", ("a", "1", None))
    assert binding.calls[1] == ("put", ("b", "2", {"expirationTtl": 120, "metadata": {"m": 1}}))
    assert binding.calls[2] == ("list", ({"prefix": "a", "limit": 10, "cursor": "YQ=="},))


async def test_kv_errors_become_503_not_500(
    make_client: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    env = worker_env()

    async def rate_limited(*args: object) -> None:
        raise JsException("KV PUT failed: 429 Too Many Requests")

    env.KV.put = rate_limited
    async with make_client(worker_app(env)) as client:
        response = await client.post(
            "/v1/documents", json={"documents": [{"id": "a", "text": "x"}]}, headers=AUTH_A
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "429" not in response.text, "platform details stay in the logs"


async def test_kv_rejecting_a_cursor_is_422(
    make_client: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    env = worker_env()

    async def bad_cursor(*args: object) -> None:
        raise JsException("KV LIST failed: 400 Invalid cursor")

    env.KV.list = bad_cursor
    async with make_client(worker_app(env)) as client:
        response = await client.get("/v1/documents?cursor=zzz", headers=AUTH_A)
    assert response.status_code == 422


async def test_readiness_on_cloudflare_asks_kv_and_vectorize_but_not_billed_models(
    make_client: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    env = worker_env()
    async with make_client(worker_app(env)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {
        "kv": "ok", "vectors": "ok", "embedder": "not probed", "generator": "not probed",
    }  # fmt: skip
    assert env.AI.calls == [], "no Workers AI call for a probe"
