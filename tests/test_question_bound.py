"""What reaches the model is bounded: the question's length, and the prompt's size."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.rag.prompt import MAX_QUESTION_CHARS, SYSTEM_PROMPT, Source, build_messages
from tests.conftest import AUTH_A
from tests.doubles.models import RecordingGenerator

PROBLEM = "application/problem+json"
FIXED = "Sources:\n\n\nQuestion: \nAnswer with citations:"


def utf8(text: str) -> int:
    return len(text.encode())


def source(n: int, text: str, document_id: str | None = None) -> Source:
    return Source(document_id or f"doc{n}", f"doc{n}#0", 0.9, text)


def test_a_longer_question_leaves_less_room_for_sources() -> None:
    sources = [source(n, "x" * 800) for n in range(10)]
    _, short = build_messages("Why?", sources, max_context_chars=6000)
    _, long = build_messages("W" * MAX_QUESTION_CHARS, sources, max_context_chars=6000)
    assert (len(short), len(long)) == (8, 7)  # the last one of each cut to fit


def test_the_budget_counts_utf8_bytes_so_it_caps_tokens() -> None:
    # A byte-level BPE tokenizer makes at most one token per byte: 🙂 is 4 bytes.
    messages, used = build_messages("🙂" * 10, [source(1, "🙂" * 100)], max_context_chars=100)
    question_and_sources = utf8(messages[1].content) - utf8(FIXED)
    assert question_and_sources <= 100
    assert "🙂" * 10 in messages[1].content and len(used) == 1
    assert "\ufffd" not in messages[1].content, "never half a character"


@given(
    question=st.text(min_size=1, max_size=50),
    texts=st.lists(st.text(max_size=300), max_size=8),
    document_id=st.text(max_size=40),
    budget=st.integers(min_value=0, max_value=2000),
)
def test_nothing_past_the_budget_reaches_the_model(
    question: str, texts: list[str], document_id: str, budget: int
) -> None:
    sources = [source(n, text, document_id) for n, text in enumerate(texts)]
    messages, _ = build_messages(question, sources, max_context_chars=budget)
    assert messages[0].content == SYSTEM_PROMPT
    assert utf8(messages[1].content) <= budget + utf8(FIXED)


async def ingest(client: httpx.AsyncClient) -> None:
    document = {"id": "paris", "text": "Paris is on the Seine. The Eiffel Tower is in Paris."}
    response = await client.post("/v1/documents", json={"documents": [document]}, headers=AUTH_A)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("extra", "headers"),
    [({}, {}), ({"stream": True}, {}), ({}, {"Accept": "text/event-stream"})],
    ids=["json", "stream-field", "accept-header"],
)
async def test_a_question_over_the_limit_is_422_before_the_model_is_called(
    client: httpx.AsyncClient,
    generator: RecordingGenerator,
    extra: dict[str, bool],
    headers: dict[str, str],
) -> None:
    await ingest(client)
    body = {"question": "Paris? " * 200, **extra}  # 1,400 characters
    response = await client.post("/v1/answers", json=body, headers={**AUTH_A, **headers})
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "question"] and "1000" in error["msg"]
    assert generator.calls == []


async def test_a_question_at_the_limit_is_answered(
    client: httpx.AsyncClient, generator: RecordingGenerator
) -> None:
    await ingest(client)
    question = ("Paris? " * 200)[:MAX_QUESTION_CHARS]
    response = await client.post("/v1/answers", json={"question": question}, headers=AUTH_A)
    assert response.status_code == 200, response.text
    (messages,) = generator.calls
    assert utf8(messages[1].content) <= 6000 + utf8(FIXED)


async def test_search_queries_keep_their_own_limit(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/search", json={"query": "Paris " * 300}, headers=AUTH_A)
    assert response.status_code == 200
