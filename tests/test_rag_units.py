"""The pure parts of RAG: chunking, the prompt, the cache key."""

from __future__ import annotations

import itertools

import pytest

from edge.rag.cache import answer_cache_key, normalize_question
from edge.rag.prompt import SYSTEM_PROMPT, Source, build_messages
from shared.chunking import chunk_text

TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(60))


def test_short_text_is_one_chunk() -> None:
    (chunk,) = chunk_text("  Hello world.  ", size=100, overlap=10)
    assert (chunk.index, chunk.text) == (0, "Hello world.")


def test_chunks_respect_size_and_overlap() -> None:
    chunks = chunk_text(TEXT, size=200, overlap=50)
    assert len(chunks) > 5
    assert all(len(c.text) <= 200 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "consecutive chunks overlap"
        assert before.end - after.start <= 50 + 1
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert covered >= {i for i, ch in enumerate(TEXT) if not ch.isspace()}, "nothing is dropped"


def test_chunks_end_at_sentence_boundaries_when_possible() -> None:
    chunks = chunk_text(TEXT, size=200, overlap=0)
    assert all(c.text.endswith(".") for c in chunks)


def test_chunks_do_not_start_mid_word() -> None:
    for c in chunk_text(TEXT, size=150, overlap=40)[1:]:
        assert TEXT[c.start - 1].isspace()


def test_text_without_spaces_is_cut_hard() -> None:
    chunks = chunk_text("x" * 450, size=200, overlap=20)
    assert [len(c.text) for c in chunks] == [200, 200, 90]


def test_chunking_is_deterministic() -> None:
    assert chunk_text(TEXT, size=300, overlap=60) == chunk_text(TEXT, size=300, overlap=60)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_bad_chunk_settings_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("abc", size=size, overlap=overlap)


def _source(n: int, text: str) -> Source:
    return Source(document_id=f"doc{n}", chunk_id=f"doc{n}#0", score=0.9 - n / 10, text=text)


def test_prompt_numbers_sources_and_asks_for_citations() -> None:
    messages, used = build_messages(
        "Why?", [_source(1, "Because A."), _source(2, "Because B.")], max_context_chars=1000
    )
    assert messages[0].role == "system" and messages[0].content == SYSTEM_PROMPT
    assert "[1] (from doc1)\nBecause A." in messages[1].content
    assert "[2] (from doc2)\nBecause B." in messages[1].content
    assert messages[1].content.rstrip().endswith("Question: Why?\nAnswer with citations:")
    assert [s.chunk_id for s in used] == ["doc1#0", "doc2#0"]


def test_prompt_stops_at_the_context_budget() -> None:
    # The budget holds the question (1 byte), each "[n] (from docN)\n" header (16 bytes),
    # the blank line between sources (2) and their text: 1 + 16 + 60 + 2 + 16 + 5 = 100.
    sources = [_source(1, "a" * 60), _source(2, "b" * 60), _source(3, "c" * 60)]
    messages, used = build_messages("q", sources, max_context_chars=100)
    assert [s.chunk_id for s in used] == ["doc1#0", "doc2#0"]
    assert "b" * 5 in messages[1].content and "b" * 6 not in messages[1].content
    assert "doc3" not in messages[1].content


@pytest.mark.parametrize(
    "variant",
    ["What is edgecrew?", "  what   is EDGECREW ", "What is edgecrew?!", "\uff37hat is edgecrew"],
)
def test_question_normalization(variant: str) -> None:
    assert normalize_question(variant) == "what is edgecrew"


def _key(**changes: object) -> str:
    base: dict[str, object] = {
        "tenant": "t",
        "question": "What is it?",
        "corpus_version": "v1",
        "model": "m",
        "top_k": 5,
        "min_score": 0.0,
        "filter": None,
    }
    return answer_cache_key(**{**base, **changes})  # type: ignore[arg-type]


def test_cache_key_is_stable_for_equivalent_questions() -> None:
    assert _key() == _key(question="  what IS it ")
    assert _key(filter={"a": 1, "b": 2}) == _key(filter={"b": 2, "a": 1})
    assert _key().startswith("answer:t:")


@pytest.mark.parametrize(
    "change",
    [
        {"tenant": "other"},
        {"question": "What is that?"},
        {"corpus_version": "v2"},
        {"model": "m2"},
        {"top_k": 6},
        {"min_score": 0.5},
        {"filter": {"source": "x"}},
    ],
)
def test_cache_key_changes_with_anything_that_changes_the_answer(change: dict[str, object]) -> None:
    assert _key(**change) != _key()
