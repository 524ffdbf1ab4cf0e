"""Where a bulk ingestion's chunks go: embedded, then written to the tenant's vectors.

Two sinks behind one method, `write(namespace, chunks)`:

- `CloudflareSink`: Workers AI embeddings and the Vectorize index over Cloudflare's REST
  API, through langchain-cloudflare (`CloudflareWorkersAIEmbeddings`,
  `CloudflareVectorize`): straight into the index the Worker queries, without sending
  the vectors through the Worker (1 MiB a request, and its CPU time).
- `EdgeIndexSink`: local mode. The local index is a numpy matrix held in the edge's
  process (persisted in SQLite, but read into memory once): a second process writing the
  file would never be seen. So the chunks are embedded here, with the same local model
  the edge uses, and the vectors go to the edge's own index through a signed call.

Either way a chunk is the record `shared.documents` defines: the same id, namespace and
metadata as one written by `POST /v1/documents`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from executor.cloudflare_api import cloudflare_error
from shared.documents import VECTORIZE_ID_FIELD, ChunkRecord, vectorize_id

#: Workers AI's bge models take at most 100 texts per call; one Vectorize upsert per batch.
CLOUDFLARE_BATCH = 100
LOCAL_EMBED_BATCH = 64
#: A vectors call to the edge stays well under its 1 MiB body limit.
EDGE_CALL_BYTES = 768 * 1024
EDGE_CALL_VECTORS = 500


class SinkError(RuntimeError):
    """The vector store or the embedding model refused or failed; never quotes a token."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


#: Tries of one batch against Cloudflare: a timeout (langchain-cloudflare's client waits
#: 5 s), a 429 (Workers AI at capacity) or a 5xx must not restart a whole ingestion.
CLOUDFLARE_ATTEMPTS = 4


class ChunkSink(Protocol):
    name: str  # "cloudflare" or "edge", for the job's result

    @property
    def model(self) -> str:
        """The embedding model the chunks are embedded with."""
        ...

    def write(self, namespace: str, chunks: Sequence[ChunkRecord]) -> None:
        """Embed the chunks and upsert them into the namespace (by id: a rerun overwrites)."""
        ...


class CloudflareSink:
    name = "cloudflare"

    def __init__(
        self, *, account_id: str, api_token: str, index_name: str, model: str,
        batch_size: int = CLOUDFLARE_BATCH, sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        from langchain_cloudflare import CloudflareVectorize, CloudflareWorkersAIEmbeddings

        # The edge embeds chunk text as it is: so must we (langchain strips newlines by
        # default, which would give a chunk another vector than POST /v1/documents does).
        embeddings = CloudflareWorkersAIEmbeddings(
            account_id=account_id, api_token=api_token, model_name=model,
            batch_size=batch_size, strip_new_lines=False,
        )  # fmt: skip
        self._store = CloudflareVectorize(
            embedding=embeddings, account_id=account_id, api_token=api_token,
            index_name=index_name,
        )  # fmt: skip
        self._model = model
        self._batch = batch_size
        self._sleep = sleep

    @property
    def model(self) -> str:
        return self._model

    def write(self, namespace: str, chunks: Sequence[ChunkRecord]) -> None:
        for batch in _batches(chunks, self._batch):
            for attempt in range(CLOUDFLARE_ATTEMPTS):
                try:
                    asyncio.run(self._upsert(namespace, batch))
                    break
                except SinkError as exc:  # upserts by id: a retry writes the same records
                    if not exc.retryable or attempt == CLOUDFLARE_ATTEMPTS - 1:
                        raise
                    self._sleep(2.0**attempt)

    async def _upsert(self, namespace: str, batch: Sequence[ChunkRecord]) -> None:
        import httpx

        try:
            # Vectorize ids are digests of (namespace, id), the chunk id rides in the
            # metadata: exactly what the Worker's Vectorize adapter writes and reads.
            await self._store.aadd_texts(
                [c.text for c in batch],
                metadatas=[{**c.metadata, VECTORIZE_ID_FIELD: c.id} for c in batch],
                ids=[vectorize_id(namespace, c.id) for c in batch],
                namespaces=[namespace] * len(batch),
                upsert=True,
                include_d1=False,
            )
        except httpx.HTTPStatusError as exc:
            service = "Workers AI" if "/ai/run/" in str(exc.request.url) else "Vectorize"
            said = cloudflare_error(exc.response)
            status = exc.response.status_code
            raise SinkError(
                f"{service} answered {status}{said}", retryable=status == 429 or status >= 500
            ) from exc
        except httpx.TransportError as exc:
            message = f"Cloudflare's API unreachable: {type(exc).__name__}"
            raise SinkError(message, retryable=True) from exc


class EdgeIndexSink:
    name = "edge"

    def __init__(
        self, embedder: Any, post: Callable[[list[dict[str, Any]]], int], *,
        batch_size: int = LOCAL_EMBED_BATCH,
    ) -> None:  # fmt: skip
        """`embedder` is an `edge.ports.Embedder` (async `embed`); `post` sends a list of
        `{id, values, metadata}` to the edge (`EdgeClient.write_vectors` for one job)."""
        self._embedder = embedder
        self._post = post
        self._batch = batch_size

    @property
    def model(self) -> str:
        return str(self._embedder.model)

    def write(self, namespace: str, chunks: Sequence[ChunkRecord]) -> None:
        for batch in _batches(chunks, self._batch):
            vectors = asyncio.run(self._embedder.embed([c.text for c in batch]))
            records = [
                {"id": c.id, "values": _compact(v), "metadata": c.metadata}
                for c, v in zip(batch, vectors, strict=True)
            ]
            for call in packed(records, most=EDGE_CALL_VECTORS):
                self._post(call)


def _batches(items: Sequence[ChunkRecord], size: int) -> Iterator[Sequence[ChunkRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def packed(records: list[dict[str, Any]], *, most: int) -> Iterator[list[dict[str, Any]]]:
    """Records in calls to the edge of at most EDGE_CALL_BYTES (as the edge client sends
    them: UTF-8 JSON) and `most` records each."""
    call: list[dict[str, Any]] = []
    size = 0
    for record in records:
        length = len(json.dumps(record, ensure_ascii=False).encode()) + 2
        if call and (size + length > EDGE_CALL_BYTES or len(call) == most):
            yield call
            call, size = [], 0
        call.append(record)
        size += length
    if call:
        yield call


def _compact(vector: Sequence[float]) -> list[float]:
    """Nine significant digits: exact for float32 (what both indexes keep), half the JSON."""
    return [float(f"{x:.9g}") for x in vector]
