"""Bulk ingestion as a job: the documents wait at the edge, a Prefect flow on the `cpu`
pool chunks, embeds and writes them, then registers them here.

An ingestion *is* a job (`shared.documents.INGESTION_CREW`, run by the flow
`ingest-documents`): `GET /v1/jobs/{id}`, webhooks, cancel, idempotency and the reconciler
are the job machinery's, unchanged; `GET /v1/ingestions/{id}` is a view of that job.

Where the documents travel: they are stored in the key-value store under a key derived
from their digest, and the flow fetches them through a signed internal route; the job's
`inputs` only carry their count and digest. Not as Prefect parameters, because
- the job record echoes its inputs in every `GET /v1/jobs/{id}`, every webhook body and
  every delivery-queue message (Cloudflare Queues take 128 KB), and is rewritten on each
  progress event: it must stay small while an ingestion may be 1 MiB;
- Prefect would keep a copy of the tenant's text in its database and show it in its UI
  and logs; here it stays where the tenant's data already lives, for as long as the job.
The digest is part of the job's fingerprint, so an `Idempotency-Key` reused with other
documents is a 422, and a retried request writes the same key again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from edge.jobs.records import Webhook
from edge.jobs.service import JobService, public
from edge.ports import Ports, VectorRecord
from edge.rag.knowledge import IndexedDocument, KnowledgeBase
from edge.settings import Settings
from shared.crews import CrewSpec
from shared.documents import INGESTION_CREW, INGESTION_FLOW, INGESTION_POOL
from shared.jobs import JobStatus

INGESTION = CrewSpec(
    name=INGESTION_CREW,
    description="Bulk ingestion of documents into the tenant's knowledge base",
    pool=INGESTION_POOL,
    inputs={"type": "object"},
    flow=INGESTION_FLOW,
)


class IngestionClosed(Exception):
    """The ingestion has ended (cancelled, failed, done): nothing more may be written."""


class SourceNotVisible(Exception):
    """The ingestion is open but its stored documents are not visible here yet."""


class Ingestions:
    def __init__(
        self, jobs: JobService, knowledge: KnowledgeBase, ports: Ports, settings: Settings
    ) -> None:
        self._jobs = jobs
        self._knowledge = knowledge
        self._ports = ports
        self._settings = settings

    def request(
        self,
        documents: Sequence[Mapping[str, Any]],
        webhook: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The job request an ingestion makes (what its idempotency fingerprint covers)."""
        return {
            "crew": INGESTION_CREW,
            "inputs": {"documents": len(documents), "digest": documents_digest(documents)},
            "webhook": None if webhook is None else dict(webhook),
            "metadata": dict(metadata),
        }

    async def submit(
        self,
        tenant: str,
        documents: Sequence[Mapping[str, Any]],
        request: Mapping[str, Any],
        idempotency_key: str | None,
        *,
        default_webhook: Webhook | None = None,
    ) -> dict[str, Any]:
        """Store the documents, then submit the job (which is then recorded, as any job).
        `default_webhook` is the tenant's, checked, for a request that names none."""
        # Stored first: the flow may start the moment the job reaches Prefect. Kept as long
        # as the job record, so a job the reconciler hands over late still finds them.
        await self._ports.kv.put(
            _batch_key(tenant, request["inputs"]["digest"]),
            json.dumps(list(documents)),
            ttl_seconds=self._jobs.store.ttl_seconds,
        )
        job, _ = await self._jobs.submit(
            tenant, request, idempotency_key, crew=INGESTION, default_webhook=default_webhook
        )
        return job

    async def get(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The ingestion job (refreshed as `GET /v1/jobs/{id}` would), or None."""
        job = await self._jobs.get(tenant, job_id)
        return job if job is not None and job["crew"] == INGESTION_CREW else None

    async def source(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """What the flow needs: the documents and how the edge chunks and embeds.

        Chunking and the embedding model are the edge's settings, handed over here so that
        the executor cuts and embeds exactly as `POST /v1/documents` does (one source).
        """
        job = await self._open(tenant, job_id)
        if job is None:
            return None
        raw = await self._ports.kv.get(_batch_key(tenant, job["inputs"]["digest"]))
        if raw is None:
            # Written before the job was, but KV may not show it yet where the executor's
            # call lands (up to ~60 s at another location): a 503, which the executor
            # retries for longer than that, not a 404 that would fail the ingestion.
            raise SourceNotVisible(job_id)
        return {
            "documents": json.loads(raw),
            "chunk_size": self._settings.chunk_size,
            "chunk_overlap": self._settings.chunk_overlap,
            "embed_model": self._ports.embedder.model,
            "dimensions": self._ports.vectors.dimensions,
        }

    async def write_vectors(
        self, tenant: str, job_id: str, records: Sequence[VectorRecord]
    ) -> int | None:
        """Upsert chunks the executor embedded into the edge's own index (the local sink);
        None when there is no such ingestion."""
        if await self._open(tenant, job_id) is None:
            return None
        await self._ports.vectors.upsert(tenant, records)
        return len(records)

    async def prepare(
        self, tenant: str, job_id: str, documents: Sequence[IndexedDocument]
    ) -> list[dict[str, Any]] | None:
        """Before a group's chunks are written: record each document with at least as many
        chunks as it may soon have, so that whatever the run leaves behind if it stops
        half-way (cancelled, crashed) is listed and deletable, never an orphan."""
        if await self._open(tenant, job_id) is None:
            return None
        return await self._knowledge.prepare(tenant, documents)

    async def register(
        self, tenant: str, job_id: str, documents: Sequence[IndexedDocument]
    ) -> list[dict[str, Any]] | None:
        """Record documents whose chunks the executor wrote, as `POST /v1/documents` does."""
        if await self._open(tenant, job_id) is None:
            return None
        return await self._knowledge.register(tenant, documents)

    async def _open(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The ingestion job if it may still write; IngestionClosed once it has ended."""
        job = await self._jobs.current(tenant, job_id)
        if job is None or job["crew"] != INGESTION_CREW:
            return None
        if JobStatus(job["status"]).terminal:
            raise IngestionClosed(f"the ingestion is {job['status']}; nothing more is written")
        return job


def view(job: Mapping[str, Any]) -> dict[str, Any]:
    """An ingestion as `GET /v1/ingestions/{id}` shows it: its job, in documents."""
    shown = public(job)
    progress = shown["progress"] or {}
    total = int(job["inputs"]["documents"])
    return {
        "id": shown["id"],
        "status": shown["status"],
        "documents": total,
        "progress": {
            "documents_done": int(progress.get("completed_tasks") or 0),
            "documents_total": total,
            "current": progress.get("current_task"),
        },
        "metadata": shown["metadata"],
        "created_at": shown["created_at"],
        "updated_at": shown["updated_at"],
        "result": shown["result"],
        "error": shown["error"],
        "urls": {
            "self": f"/v1/ingestions/{job['id']}",
            "job": shown["urls"]["self"],
            "cancel": shown["urls"]["cancel"],
        },
    }


def documents_digest(documents: Sequence[Mapping[str, Any]]) -> str:
    """A digest of the documents that ignores key order and spacing."""
    canonical = json.dumps(list(documents), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _batch_key(tenant: str, digest: str) -> str:
    return f"ingest:{tenant}:{digest}"
