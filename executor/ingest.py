"""The Prefect flow of a bulk ingestion (`POST /v1/ingestions`), on the `cpu` pool.

Thin like `run-crew-job`: fetch the documents from the edge, then group by group chunk
them (`shared.documents`, as the edge does), embed and write the chunks (`executor.sinks`)
and register the group's documents at the edge, which drops stale chunks, writes the
document records and moves the tenant's corpus version on. Registering after each group
keeps the knowledge base consistent whenever the run stops (a cancel, a crash): every
listed document has its chunks. Progress goes to the edge after each group, the counts are
the result. A retry reruns everything: chunks are upserted by id, registering is
idempotent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from executor.edge_client import EdgeClient
from executor.settings import ExecutorSettings
from executor.sinks import ChunkSink, CloudflareSink, EdgeIndexSink, packed
from shared.documents import INGESTION_FLOW, document_chunks

RETRIES = 1
#: A group is registered in one call (at most 100 documents: KV operations per Worker
#: invocation) and written in a few sink batches.
GROUP_DOCUMENTS = 100
GROUP_CHUNKS = 256
#: Progress at most this often: each event rewrites the job record (KV: 1 write/s a key).
PROGRESS_SECONDS = 1.0


class IngestError(RuntimeError):
    """The ingestion cannot run as configured; the message says what to change."""


@flow(
    name=INGESTION_FLOW, retries=RETRIES, retry_delay_seconds=5, log_prints=True,
    persist_result=False,
)  # fmt: skip
def ingest_documents(job_id: str, tenant: str, crew: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Ingest the documents of `tenant`'s ingestion job `job_id` (the edge hands every job
    over with these four parameters; `crew` is the ingestion's marker, `inputs` its counts)."""
    logger = get_run_logger()
    settings = ExecutorSettings.from_env(os.environ)
    edge = EdgeClient(settings)
    attempt = int(flow_run.run_count or 1)
    try:
        edge.notify(job_id, tenant, f"running:{attempt}", {"type": "running"})
        result = run_ingestion(job_id, tenant, settings=settings, edge=edge)
    except Exception as exc:
        logger.exception("ingestion %s failed (attempt %d)", job_id, attempt)
        if attempt > RETRIES:  # the last try: the job ends here
            error = {"kind": type(exc).__name__, "message": str(exc)[:1000]}
            edge.event(job_id, tenant, "failed", {"type": "failed", "error": error})
        raise
    edge.event(job_id, tenant, "succeeded", {"type": "succeeded", "result": result})
    logger.info("ingestion %s succeeded: %s", job_id, result)
    return result


def run_ingestion(
    job_id: str,
    tenant: str,
    *,
    settings: ExecutorSettings,
    edge: EdgeClient,
    local_embedder: Any = None,
) -> dict[str, Any]:
    """Fetch the job's documents from the edge and ingest them into the configured sink."""
    source = edge.ingestion_source(job_id, tenant)
    sink = build_sink(
        settings,
        source,
        lambda vectors: edge.write_vectors(job_id, tenant, vectors),
        local_embedder=local_embedder,
    )
    return ingest(
        source,
        sink,
        tenant=tenant,
        prepare=lambda documents: edge.prepare_documents(job_id, tenant, documents),
        register=lambda documents: edge.register_documents(job_id, tenant, documents),
        progress=ProgressReporter(edge, job_id, tenant),
    )


def ingest(
    source: Mapping[str, Any],
    sink: ChunkSink,
    *,
    tenant: str,
    prepare: Callable[[list[dict[str, Any]]], object],
    register: Callable[[list[dict[str, Any]]], object],
    progress: Callable[[int, int, int], None],
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Chunk, embed, write and register every document; the counts for the job's result.

    Each group is prepared at the edge before its chunks are written (its records make
    room for them), so a run stopped between the write and the register (a cancel, a
    crash) leaves documents that are listed and deletable, never chunks nothing reaches.
    """
    documents = list(source["documents"])
    started = last_report = clock()
    done = chunks_written = 0
    for group in _groups(documents, source):
        chunks = [chunk for _, cut in group for chunk in cut]
        records = [{"id": d["id"], "chunks": len(cut), "metadata": d.get("metadata") or {}}
                   for d, cut in group]  # fmt: skip
        for call in packed(records, most=GROUP_DOCUMENTS):
            prepare(call)
        sink.write(tenant, chunks)
        for call in packed(records, most=GROUP_DOCUMENTS):
            register(call)
        done += len(group)
        chunks_written += len(chunks)
        if done < len(documents) and clock() - last_report >= PROGRESS_SECONDS:
            progress(done, len(documents), chunks_written)
            last_report = clock()
    seconds = max(clock() - started, 1e-6)
    return {
        "documents": len(documents),
        "chunks": chunks_written,
        "seconds": round(seconds, 3),
        "documents_per_second": round(len(documents) / seconds, 1),
        "sink": sink.name,
        "embed_model": sink.model,
    }


def build_sink(
    settings: ExecutorSettings,
    source: Mapping[str, Any],
    post_vectors: Callable[[list[dict[str, Any]]], int],
    *,
    local_embedder: Any = None,
) -> ChunkSink:
    """Vectorize when `EDGECREW_VECTORIZE_INDEX` is set, else the edge's own index with
    `local_embedder` (an `edge.ports.Embedder`; the local MiniLM unless given).

    The edge says which model its queries are embedded with; chunks embedded with any
    other would never match them, so a mismatch stops the ingestion before any write.
    """
    model, dimensions = str(source["embed_model"]), int(source["dimensions"])
    if settings.vectorize_index:
        if not model.startswith("@cf/"):
            raise IngestError(
                f"the edge embeds with {model!r}, not a Workers AI model: unset "
                "EDGECREW_VECTORIZE_INDEX to write to that edge's own index"
            )
        return CloudflareSink(
            account_id=settings.cloudflare_account_id,
            api_token=settings.cloudflare_api_token,
            index_name=settings.vectorize_index,
            model=model,
        )
    embedder = local_embedder
    if embedder is None:  # local mode's extra: imported only where it is used
        from edge.local.minilm_embedder import MiniLMEmbedder

        embedder = MiniLMEmbedder()
    if (embedder.model, embedder.dimensions) != (model, dimensions):
        raise IngestError(
            f"the edge embeds with {model!r} ({dimensions} dimensions); this executor embeds "
            f"locally with {embedder.model!r}: set EDGECREW_VECTORIZE_INDEX, "
            "EDGECREW_CF_ACCOUNT_ID and EDGECREW_CF_API_TOKEN to ingest through Workers AI"
        )
    return EdgeIndexSink(embedder, post_vectors)


class ProgressReporter:
    """Posts `progress` (best effort): documents done of the total, chunks so far."""

    def __init__(self, edge: EdgeClient, job_id: str, tenant: str) -> None:
        self._edge = edge
        self._job_id = job_id
        self._tenant = tenant

    def __call__(self, done: int, total: int, chunks: int) -> None:
        progress = {"completed_tasks": done, "total_tasks": total,
                    "current_task": f"{chunks} chunks written"}  # fmt: skip
        body = {"type": "progress", "progress": progress}
        self._edge.notify(self._job_id, self._tenant, f"progress:{done}", body)


def _groups(
    documents: Sequence[Mapping[str, Any]], source: Mapping[str, Any]
) -> Iterator[list[tuple[Mapping[str, Any], list[Any]]]]:
    """Documents with their chunks, in groups of at most GROUP_DOCUMENTS documents and
    (unless one document alone has more) GROUP_CHUNKS chunks."""
    size, overlap = int(source["chunk_size"]), int(source["chunk_overlap"])
    group: list[tuple[Mapping[str, Any], list[Any]]] = []
    chunks = 0
    for document in documents:
        cut = document_chunks(
            document["id"], document["text"], document.get("metadata") or {},
            size=size, overlap=overlap,
        )  # fmt: skip
        if group and (len(group) == GROUP_DOCUMENTS or chunks + len(cut) > GROUP_CHUNKS):
            yield group
            group, chunks = [], 0
        group.append((document, cut))
        chunks += len(cut)
    if group:
        yield group
