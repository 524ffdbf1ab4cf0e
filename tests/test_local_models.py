"""The real local models: MiniLM from its package, SmolLM2 on CTranslate2 behind our
OpenAI-compatible server (tests/test_llm_server.py covers that server in depth)."""

from __future__ import annotations

import math

import pytest

from edge.adapters.openai_compatible import OpenAICompatibleGenerator
from edge.local.minilm_embedder import MiniLMEmbedder
from edge.ports import ChatMessage
from tests.local_llm import LocalLLM


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


async def test_minilm_embeds_offline_with_meaningful_similarity(minilm: MiniLMEmbedder) -> None:
    cat, kitten, invoice = await minilm.embed(
        ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly invoice totals."]
    )
    assert minilm.dimensions == len(cat) == 384
    assert math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-4)
    assert cosine(cat, kitten) > cosine(cat, invoice) + 0.3


async def test_minilm_batches_keep_order(minilm: MiniLMEmbedder) -> None:
    texts = [f"sentence number {i}" for i in range(10)]
    batch = await minilm.embed(texts)
    single = await minilm.embed([texts[7]])
    assert cosine(batch[7], single[0]) > 0.999


async def test_smollm2_answers_through_the_openai_compatible_adapter(local_llm: LocalLLM) -> None:
    generator = OpenAICompatibleGenerator(local_llm.base_url, "smollm2", temperature=0.0)
    messages = [
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", "What is the capital of France? Answer in one word."),
    ]
    text = await generator.generate(messages, max_tokens=16)
    assert text.strip()
    pieces = [p async for p in generator.stream(messages, max_tokens=16)]
    assert len(pieces) > 1 and "".join(pieces).strip()
    await generator.aclose()
