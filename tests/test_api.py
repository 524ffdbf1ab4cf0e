"""The public API through httpx's ASGI transport with the local adapters."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import AUTH_A, AUTH_B
from tests.doubles.models import RecordingEmbedder, RecordingGenerator, unavailable

PARIS = (
    "Paris is the capital of France. It sits on the Seine river. "
    "The Eiffel Tower was finished in 1889 for the World's Fair."
)
TOKYO = "Tokyo is the capital of Japan. It is the most populous metropolitan area in the world."


async def ingest(client: httpx.AsyncClient, *docs: dict[str, Any], auth: dict[str, str] = AUTH_A):
    response = await client.post("/v1/documents", json={"documents": list(docs)}, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def parse_sse(body: str) -> list[tuple[str, str]]:
    events = []
    for frame in body.strip().split("\n\n"):
        lines = frame.split("\n")
        kind = next(line[7:] for line in lines if line.startswith("event: "))
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((kind, data))
    return events


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/documents", "/v1/search", "/v1/answers", "/healthz"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert (await client.get("/docs")).status_code == 200


async def test_ingest_search_and_answer_with_citations(
    client: httpx.AsyncClient, generator: RecordingGenerator
) -> None:
    result = await ingest(
        client,
        {"id": "paris", "text": PARIS, "metadata": {"source": "atlas"}},
        {"id": "tokyo", "text": TOKYO, "metadata": {"source": "atlas"}},
    )
    assert result == {"documents": [{"id": "paris", "chunks": 1}, {"id": "tokyo", "chunks": 1}]}

    search = (
        await client.post(
            "/v1/search", json={"query": "capital of Japan", "top_k": 1}, headers=AUTH_A
        )
    ).json()
    (match,) = search["matches"]
    assert (match["document_id"], match["chunk_id"]) == ("tokyo", "tokyo#0")
    assert match["metadata"] == {"source": "atlas"} and match["text"] == TOKYO
    assert set(search["timings_ms"]) == {"embed", "search", "total"}

    response = await client.post(
        "/v1/answers", json={"question": "When was the Eiffel Tower finished?"}, headers=AUTH_A
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == generator.reply
    assert body["citations"][0]["chunk_id"] == "paris#0"
    assert body["citations"][0]["text"] == PARIS
    assert body["model"] == "fake-llm" and body["cached"] is False
    assert set(body["timings_ms"]) == {"embed", "search", "generate", "total"}
    (prompt,) = generator.calls
    assert "[1] (from paris)" in prompt[1].content
    assert "Question: When was the Eiffel Tower finished?" in prompt[1].content


async def test_answer_streams_server_sent_events(client: httpx.AsyncClient) -> None:
    await ingest(client, {"id": "paris", "text": PARIS})
    for request in [
        {"json": {"question": "Eiffel Tower?", "stream": True}},
        {"json": {"question": "Eiffel Tower??"}, "headers": {"Accept": "text/event-stream"}},
    ]:
        headers = {**AUTH_A, **request.get("headers", {})}
        response = await client.post("/v1/answers", json=request["json"], headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "done" and set(kinds[:-1]) == {"token"}
        done = json.loads(events[-1][1])
        streamed = "".join(data for kind, data in events if kind == "token")
        assert streamed.strip() == done["answer"]
        assert done["citations"][0]["document_id"] == "paris"


async def test_answer_cache_hits_until_the_corpus_changes(
    client: httpx.AsyncClient, generator: RecordingGenerator, embedder: RecordingEmbedder
) -> None:
    await ingest(client, {"id": "paris", "text": PARIS})
    question = {"question": "What river is Paris on?"}
    first = (await client.post("/v1/answers", json=question, headers=AUTH_A)).json()
    embeds_before = len(embedder.batches)
    again = (
        await client.post(
            "/v1/answers", json={"question": "  what river is PARIS on "}, headers=AUTH_A
        )
    ).json()
    assert again["cached"] is True and again["answer"] == first["answer"]
    assert again["citations"] == first["citations"]
    assert len(generator.calls) == 1 and len(embedder.batches) == embeds_before

    await ingest(client, {"id": "tokyo", "text": TOKYO})
    after_ingest = (await client.post("/v1/answers", json=question, headers=AUTH_A)).json()
    assert after_ingest["cached"] is False and len(generator.calls) == 2

    assert (await client.delete("/v1/documents/tokyo", headers=AUTH_A)).status_code == 204
    after_delete = (await client.post("/v1/answers", json=question, headers=AUTH_A)).json()
    assert after_delete["cached"] is False and len(generator.calls) == 3


async def test_reingest_replaces_chunks_and_delete_removes_them(
    client: httpx.AsyncClient,
) -> None:
    long_text = " ".join(f"Fact {i} about the long document." for i in range(40))
    first = await ingest(client, {"id": "doc", "text": long_text})
    assert first["documents"][0]["chunks"] > 3
    await ingest(client, {"id": "doc", "text": "Now the document is short."})
    search = (
        await client.post(
            "/v1/search",
            json={"query": "fact about the long document", "top_k": 20},
            headers=AUTH_A,
        )
    ).json()
    assert [m["chunk_id"] for m in search["matches"]] == ["doc#0"]
    assert search["matches"][0]["text"] == "Now the document is short."

    assert (await client.delete("/v1/documents/doc", headers=AUTH_A)).status_code == 204
    search = (await client.post("/v1/search", json={"query": "document"}, headers=AUTH_A)).json()
    assert search["matches"] == []
    missing = await client.delete("/v1/documents/doc", headers=AUTH_A)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_filter_narrows_search_and_answers(
    client: httpx.AsyncClient, generator: RecordingGenerator
) -> None:
    await ingest(
        client,
        {"id": "paris", "text": PARIS, "metadata": {"source": "atlas"}},
        {"id": "tokyo", "text": TOKYO, "metadata": {"source": "travel"}},
    )
    body = {"query": "capital of France", "filter": {"source": "travel"}}
    search = (await client.post("/v1/search", json=body, headers=AUTH_A)).json()
    assert [m["document_id"] for m in search["matches"]] == ["tokyo"]
    answer = (
        await client.post(
            "/v1/answers",
            json={"question": "capital of France?", "filter": {"source": "nothing"}},
            headers=AUTH_A,
        )
    ).json()
    assert answer["citations"] == [] and "don't know" in answer["answer"]
    assert generator.calls == [], "no sources: the LLM is not asked to make something up"


async def test_min_score_threshold_drops_weak_matches(client: httpx.AsyncClient, app: Any) -> None:
    await ingest(client, {"id": "paris", "text": PARIS})
    app.state.knowledge._settings = app.state.settings.__class__(
        **{**_fields(app.state.settings), "min_score": 0.99}
    )
    search = (await client.post("/v1/search", json={"query": "Seine"}, headers=AUTH_A)).json()
    assert search["matches"] == []


def _fields(settings: Any) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


async def test_tenants_never_see_each_other(client: httpx.AsyncClient) -> None:
    await ingest(client, {"id": "secret", "text": "Tenant A's launch code is 1234."})
    await ingest(client, {"id": "public", "text": "Tenant B's own note."}, auth=AUTH_B)
    search_b = (
        await client.post("/v1/search", json={"query": "launch code", "top_k": 20}, headers=AUTH_B)
    ).json()
    assert [m["document_id"] for m in search_b["matches"]] == ["public"]
    answer_b = (
        await client.post(
            "/v1/answers", json={"question": "What is the launch code?"}, headers=AUTH_B
        )
    ).json()
    assert all(c["document_id"] == "public" for c in answer_b["citations"])
    cross_delete = await client.delete("/v1/documents/secret", headers=AUTH_B)
    assert cross_delete.status_code == 404
    still_there = (
        await client.post("/v1/search", json={"query": "launch code"}, headers=AUTH_A)
    ).json()
    assert [m["document_id"] for m in still_there["matches"]] == ["secret"]


async def test_same_question_is_cached_per_tenant(
    client: httpx.AsyncClient, generator: RecordingGenerator
) -> None:
    await ingest(client, {"id": "paris", "text": PARIS})
    await ingest(client, {"id": "paris", "text": PARIS}, auth=AUTH_B)
    await client.post("/v1/answers", json={"question": "Seine?"}, headers=AUTH_A)
    b = (await client.post("/v1/answers", json={"question": "Seine?"}, headers=AUTH_B)).json()
    assert b["cached"] is False and len(generator.calls) == 2


async def test_llm_down_is_503_with_retry_after_and_changes_nothing(
    client: httpx.AsyncClient, generator: RecordingGenerator
) -> None:
    await ingest(client, {"id": "paris", "text": PARIS})
    generator.fail_with = unavailable()
    for body in [{"question": "Seine?"}, {"question": "Seine?", "stream": True}]:
        response = await client.post("/v1/answers", json=body, headers=AUTH_A)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 503
    generator.fail_with = None
    fresh = (await client.post("/v1/answers", json={"question": "Seine?"}, headers=AUTH_A)).json()
    assert fresh["cached"] is False, "a failed answer is never cached"


async def test_documents_list_in_pages_and_read_one(client: httpx.AsyncClient) -> None:
    for name in ["c", "a", "b"]:
        await ingest(client, {"id": name, "text": f"Document {name}.", "metadata": {"n": name}})
    await ingest(client, {"id": "other", "text": "Tenant B's."}, auth=AUTH_B)
    first = (await client.get("/v1/documents?limit=2", headers=AUTH_A)).json()
    assert [d["id"] for d in first["documents"]] == ["a", "b"]
    assert first["documents"][0]["chunks"] == 1 and first["documents"][0]["updated_at"]
    assert first["cursor"]
    rest = await client.get(
        "/v1/documents", params={"limit": 2, "cursor": first["cursor"]}, headers=AUTH_A
    )
    assert [d["id"] for d in rest.json()["documents"]] == ["c"]
    assert rest.json()["cursor"] is None

    one = (await client.get("/v1/documents/b", headers=AUTH_A)).json()
    assert (one["id"], one["chunks"], one["metadata"]) == ("b", 1, {"n": "b"})
    assert (await client.get("/v1/documents/other", headers=AUTH_A)).status_code == 404
    b_docs = (await client.get("/v1/documents", headers=AUTH_B)).json()["documents"]
    assert [d["id"] for d in b_docs] == ["other"]
    await client.delete("/v1/documents/b", headers=AUTH_A)
    left = (await client.get("/v1/documents", headers=AUTH_A)).json()["documents"]
    assert [d["id"] for d in left] == ["a", "c"]
