"""Embedder and TextGenerator adapters: Workers AI over binding doubles, OpenAI-compatible
over respx (the real local LLM server is exercised by tests/test_local_models.py)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from edge.adapters.cloudflare import WorkersAIEmbedder, WorkersAIGenerator
from edge.adapters.openai_compatible import OpenAICompatibleGenerator
from edge.adapters.sse_lines import sse_data
from edge.ports import ChatMessage, DependencyUnavailable
from tests.doubles.cloudflare_bindings import FakeAI
from tests.doubles.models import bag_of_words_vector

MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "hi")]


async def test_workers_ai_embedder_sends_one_batch_and_returns_vectors() -> None:
    ai = FakeAI(bag_of_words_vector)
    embedder = WorkersAIEmbedder(ai, model="@cf/baai/bge-small-en-v1.5", dimensions=384)
    vectors = await embedder.embed(["alpha beta", "gamma"])
    assert ai.calls == [("@cf/baai/bge-small-en-v1.5", {"text": ["alpha beta", "gamma"]})]
    assert [len(v) for v in vectors] == [384, 384]
    assert vectors[0] == bag_of_words_vector("alpha beta")


async def test_workers_ai_embedder_knows_model_dimensions() -> None:
    embedder = WorkersAIEmbedder(
        FakeAI(bag_of_words_vector), model="@cf/baai/bge-base-en-v1.5", dimensions=384
    )
    assert embedder.dimensions == 768  # the model decides, so create_app can refuse a 384 index
    with pytest.raises(DependencyUnavailable, match="not 768-d"):
        await embedder.embed(["text"])  # the double answers 384-d


@pytest.mark.parametrize("chunk_size", [1, 5, 64, 4096])
async def test_workers_ai_stream_reassembles_split_sse_frames(chunk_size: int) -> None:
    ai = FakeAI(bag_of_words_vector, reply="Paris is the capital [1].", chunk_size=chunk_size)
    generator = WorkersAIGenerator(ai, model="@cf/meta/llama-3.1-8b-instruct")
    pieces = [p async for p in generator.stream(MESSAGES, max_tokens=32)]
    assert "".join(pieces).strip() == "Paris is the capital [1]."
    _model, inputs = ai.calls[0]
    assert inputs["stream"] is True and inputs["max_tokens"] == 32
    assert inputs["messages"][1] == {"role": "user", "content": "hi"}


async def test_workers_ai_generate_returns_response_text() -> None:
    generator = WorkersAIGenerator(FakeAI(bag_of_words_vector, reply="ok"), model="m")
    assert await generator.generate(MESSAGES, max_tokens=8) == "ok"


async def test_sse_data_handles_crlf_multiline_and_trailing_frame() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for piece in [b"data: a\r\n\r\nda", b"ta: b\ndata: c\n\n: comment\n\n", b"data: tail"]:
            yield piece

    assert [d async for d in sse_data(chunks())] == ["a", "b\nc", "tail"]


def _openai_stream(*pieces: str) -> bytes:
    frames = [
        "data: " + json.dumps({"choices": [{"delta": {"content": p}}]}) + "\n\n" for p in pieces
    ]
    return ("".join(frames) + "data: [DONE]\n\n").encode()


@respx.mock
async def test_openai_compatible_stream_and_generate() -> None:
    route = respx.post("http://llm.test/v1/chat/completions")
    route.side_effect = [
        httpx.Response(200, content=_openai_stream("Hel", "lo", "")),
        httpx.Response(200, json={"choices": [{"message": {"content": "Hello"}}]}),
    ]
    generator = OpenAICompatibleGenerator("http://llm.test/v1/", "smollm2", api_key="sk-test")
    assert [p async for p in generator.stream(MESSAGES, max_tokens=16)] == ["Hel", "lo"]
    assert await generator.generate(MESSAGES, max_tokens=16) == "Hello"
    sent = json.loads(route.calls[0].request.content)
    assert sent["model"] == "smollm2" and sent["stream"] is True and sent["max_tokens"] == 16
    assert route.calls[0].request.headers["Authorization"] == "Bearer sk-test"


@respx.mock
@pytest.mark.parametrize(
    "reply",
    [httpx.Response(503), httpx.Response(400, text="context too long"), httpx.ConnectError("x")],
)
async def test_openai_compatible_failures_become_dependency_unavailable(reply: object) -> None:
    respx.post("http://llm.test/v1/chat/completions").mock(side_effect=[reply, reply])
    generator = OpenAICompatibleGenerator("http://llm.test/v1", "smollm2")
    with pytest.raises(DependencyUnavailable):
        await generator.generate(MESSAGES, max_tokens=4)
    with pytest.raises(DependencyUnavailable):
        _ = [p async for p in generator.stream(MESSAGES, max_tokens=4)]
