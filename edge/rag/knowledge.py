"""The knowledge base service: ingest, delete, search and answer, per tenant, over the ports."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edge.ports import Metadata, Ports, VectorMatch, VectorRecord
from edge.rag.cache import answer_cache_key
from edge.rag.prompt import NO_SOURCES_ANSWER, Source, build_messages
from edge.settings import Settings
from shared.documents import DOCUMENT_FIELD, TEXT_FIELD, document_chunks
from shared.timestamps import rfc3339


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IndexedDocument:
    """A document whose `chunks` chunks are in the index already, to be recorded."""

    id: str
    chunks: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(slots=True)
class Timings:
    """Milliseconds per stage; `total` is set by `finish`."""

    started: float = field(default_factory=time.perf_counter, repr=False)
    stages: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.stages[stage] = round((now - since) * 1000, 2)
        return now

    def finish(self) -> dict[str, float]:
        return {**self.stages, "total": round((time.perf_counter() - self.started) * 1000, 2)}


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """One step of a streamed answer: a `token` with text, then `done` with the full answer."""

    kind: str
    data: Any


class KnowledgeBase:
    """Per-tenant RAG over the ports; a tenant is a vector namespace and a KV key prefix."""

    def __init__(self, ports: Ports, settings: Settings) -> None:
        self._ports = ports
        self._settings = settings

    async def ingest(self, tenant: str, documents: Sequence[Document]) -> list[dict[str, Any]]:
        """Chunk, embed and index documents; re-ingesting an id replaces its chunks."""
        results = [await self._ingest_one(tenant, document) for document in documents]
        if documents:
            await self._bump_corpus_version(tenant)
        return results

    async def register(
        self, tenant: str, documents: Sequence[IndexedDocument]
    ) -> list[dict[str, Any]]:
        """Record documents whose chunks someone else wrote (a bulk ingestion's executor),
        exactly as `ingest` records its own: stale chunks go, the record is written, the
        corpus version moves on (so cached answers are not served from before)."""
        results = [await self._record(tenant, document) for document in documents]
        if documents:
            await self._bump_corpus_version(tenant)
        return results

    async def prepare(
        self, tenant: str, documents: Sequence[IndexedDocument]
    ) -> list[dict[str, Any]]:
        """Before someone else writes documents' chunks: give each record room for them
        (`max(chunks it has, chunks to come)`), so that `delete`, or the next ingest of
        the id, reaches every chunk id a writer that stops half-way may leave. A record
        with more room than chunks is what `_record` trims once they are written."""
        results = []
        for document in documents:
            previous = await self.document(tenant, document.id)
            if previous is None or previous["chunks"] < document.chunks:
                # A document there already keeps its metadata until the new chunks are in.
                metadata = document.metadata if previous is None else previous["metadata"]
                roomy = IndexedDocument(document.id, document.chunks, metadata)
                await self._write_record(tenant, roomy)
            results.append({"id": document.id, "chunks": document.chunks})
        if documents:
            await self._bump_corpus_version(tenant)  # the index is about to change
        return results

    async def delete(self, tenant: str, document_id: str) -> bool:
        """Remove a document's chunks; False when the tenant has no such document."""
        record = await self.document(tenant, document_id)
        if record is None:
            return False
        await self._delete_chunks(tenant, document_id, range(record["chunks"]))
        await self._ports.kv.delete(_doc_key(tenant, document_id))
        await self._bump_corpus_version(tenant)
        return True

    async def document(self, tenant: str, document_id: str) -> dict[str, Any] | None:
        """A document's record (id, chunks, metadata, updated_at), or None."""
        record = await self._ports.kv.get(_doc_key(tenant, document_id))
        return None if record is None else dict(json.loads(record))

    async def list_documents(
        self, tenant: str, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the tenant's documents in id order, and the cursor of the next page."""
        prefix = _doc_key(tenant, "")
        page = await self._ports.kv.list(prefix=prefix, limit=limit, cursor=cursor)
        documents = [{"id": key.name[len(prefix) :], **(key.metadata or {})} for key in page.keys]
        return documents, page.cursor

    async def search(
        self, tenant: str, query: str, *, top_k: int, filter: Metadata | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Matches best first, above the score threshold, with per-stage timings."""
        timings = Timings()
        sources = await self._retrieve(tenant, query, top_k, filter, timings)
        return [_match_json(s) for s in sources], timings.finish()

    async def answer(
        self, tenant: str, question: str, *, top_k: int, filter: Metadata | None = None
    ) -> dict[str, Any]:
        """A grounded answer with citations (served from the cache when nothing changed)."""
        final: dict[str, Any] = {}
        async for event in self.answer_events(tenant, question, top_k=top_k, filter=filter):
            if event.kind == "done":
                final = event.data
        return final

    async def answer_events(
        self, tenant: str, question: str, *, top_k: int, filter: Metadata | None = None
    ) -> AsyncIterator[AnswerEvent]:
        """Stream the answer as `token` events, then one `done` event with the full answer."""
        timings = Timings()
        cache_key = await self._cache_key(tenant, question, top_k, filter)
        cached = await self._ports.kv.get(cache_key) if cache_key else None
        if cached is not None:
            payload = json.loads(cached)
            timings.stages.update(embed=0.0, search=0.0, generate=0.0)
            yield AnswerEvent("token", payload["answer"])
            yield AnswerEvent("done", {**payload, "cached": True, "timings_ms": timings.finish()})
            return

        sources = await self._retrieve(tenant, question, top_k, filter, timings)
        messages, used = build_messages(
            question, sources, max_context_chars=self._settings.max_context_chars
        )
        started = time.perf_counter()
        pieces: list[str] = []
        if used:
            stream = self._ports.generator.stream(
                messages, max_tokens=self._settings.max_answer_tokens
            )
            async for piece in stream:
                pieces.append(piece)
                yield AnswerEvent("token", piece)
        else:
            pieces.append(NO_SOURCES_ANSWER)
            yield AnswerEvent("token", NO_SOURCES_ANSWER)
        timings.mark("generate", started)
        payload = {
            "answer": "".join(pieces).strip(),
            "citations": [_citation_json(s) for s in used],
            "model": self._ports.generator.model,
        }
        if cache_key:
            await self._ports.kv.put(
                cache_key, json.dumps(payload), ttl_seconds=self._settings.answer_cache_ttl
            )
        yield AnswerEvent("done", {**payload, "cached": False, "timings_ms": timings.finish()})

    # --- helpers ----------------------------------------------------------------------------

    async def _ingest_one(self, tenant: str, document: Document) -> dict[str, Any]:
        chunks = document_chunks(
            document.id,
            document.text,
            document.metadata,
            size=self._settings.chunk_size,
            overlap=self._settings.chunk_overlap,
        )
        vectors = await self._embed([c.text for c in chunks])
        records = [
            VectorRecord(id=chunk.id, values=vector, metadata=chunk.metadata)
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        await self._ports.vectors.upsert(tenant, records)
        return await self._record(
            tenant, IndexedDocument(document.id, len(records), document.metadata)
        )

    async def _record(self, tenant: str, document: IndexedDocument) -> dict[str, Any]:
        """Write a document's record once its chunks are in the index."""
        previous = await self.document(tenant, document.id)
        # Chunks past the new count belong to the old version; the record is written last,
        # so a retry after a crash here still knows how many there were.
        stale = range(document.chunks, previous["chunks"] if previous else 0)
        await self._delete_chunks(tenant, document.id, stale)
        return await self._write_record(tenant, document)

    async def _write_record(self, tenant: str, document: IndexedDocument) -> dict[str, Any]:
        updated_at = rfc3339(timespec="seconds")
        record = {
            "id": document.id,
            "chunks": document.chunks,
            "metadata": dict(document.metadata),
            "updated_at": updated_at,
        }
        # The summary rides along as KV metadata, so a listing needs no extra reads.
        await self._ports.kv.put(
            _doc_key(tenant, document.id),
            json.dumps(record),
            metadata={"chunks": document.chunks, "updated_at": updated_at},
        )
        return {"id": document.id, "chunks": document.chunks}

    async def _retrieve(
        self,
        tenant: str,
        query: str,
        top_k: int,
        filter: Metadata | None,
        timings: Timings,
    ) -> list[Source]:
        started = time.perf_counter()
        (vector,) = await self._embed([query])
        started = timings.mark("embed", started)
        matches = await self._ports.vectors.query(tenant, vector, top_k=top_k, filter=filter)
        timings.mark("search", started)
        return [_source_of(match) for match in matches if match.score >= self._settings.min_score]

    async def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        batch = self._settings.embed_batch_size
        vectors: list[list[float]] = []
        for offset in range(0, len(texts), batch):
            vectors.extend(await self._ports.embedder.embed(texts[offset : offset + batch]))
        return vectors

    async def _delete_chunks(self, tenant: str, document_id: str, indexes: range) -> None:
        if indexes:
            await self._ports.vectors.delete(tenant, [f"{document_id}#{i}" for i in indexes])

    async def _bump_corpus_version(self, tenant: str) -> None:
        await self._ports.kv.put(_corpus_key(tenant), secrets.token_hex(8))

    async def _cache_key(
        self, tenant: str, question: str, top_k: int, filter: Mapping[str, object] | None
    ) -> str | None:
        if not self._settings.answer_cache_ttl:
            return None
        version = await self._ports.kv.get(_corpus_key(tenant)) or "empty"
        return answer_cache_key(
            tenant=tenant,
            question=question,
            corpus_version=version,
            model=self._ports.generator.model,
            top_k=top_k,
            min_score=self._settings.min_score,
            filter=filter,
        )


def _doc_key(tenant: str, document_id: str) -> str:
    return f"doc:{tenant}:{document_id}"


def _corpus_key(tenant: str) -> str:
    return f"corpus:{tenant}"


def _source_of(match: VectorMatch) -> Source:
    return Source(
        document_id=str(match.metadata.get(DOCUMENT_FIELD, match.id.rsplit("#", 1)[0])),
        chunk_id=match.id,
        score=round(match.score, 4),
        text=str(match.metadata.get(TEXT_FIELD, "")),
        metadata={k: v for k, v in match.metadata.items() if not k.startswith("_")},
    )


def _citation_json(source: Source) -> dict[str, Any]:
    citation = asdict(source)
    del citation["metadata"]
    return citation


def _match_json(source: Source) -> dict[str, Any]:
    return {**asdict(source), "metadata": dict(source.metadata)}
