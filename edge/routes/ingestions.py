"""`POST /v1/ingestions` and its view, and the executor's signed ingestion calls.

The public routes are keyed like every `/v1` route; the `/v1/internal/ingestions/...`
routes are signed by the executor (`edge.guards.ExecutorSignatureAuth` checked that
before routing), like its job events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from edge.ingestion_schemas import (
    Ingestion,
    IngestionRequest,
    IngestionSource,
    Registered,
    RegisterRequest,
    SourceRequest,
    VectorsRequest,
    VectorsWritten,
)
from edge.ingestions import IngestionClosed, Ingestions, SourceNotVisible, view
from edge.jobs.service import IdempotencyConflict
from edge.ports import VectorRecord
from edge.problems import Problem, problem_responses
from edge.rag.knowledge import IndexedDocument
from edge.routes.deps import (
    JSON_BODY,
    KEYED,
    NOT_FOUND,
    UNAVAILABLE,
    ExecutorMessageId,
    JobIdPath,
    JsonBody,
    Tenant,
)
from edge.routes.jobs import IdempotencyKey, key_reused
from edge.routes.webhook_checks import check_webhook, checked_default


async def ingestions(request: Request) -> Ingestions:
    service: Ingestions = request.app.state.ingestions
    return service


IngestionsDep = Annotated[Ingestions, Depends(ingestions)]
_T = TypeVar("_T")
CONFLICT = problem_responses(409)

router = APIRouter(prefix="/v1/ingestions", tags=["knowledge base"], responses=KEYED)
internal = APIRouter(
    prefix="/v1/internal/ingestions",
    tags=["executor callbacks"],
    responses={**problem_responses(401, 503), **JSON_BODY, **NOT_FOUND, **CONFLICT},
    dependencies=[JsonBody],
)


@router.post(
    "",
    status_code=202,
    response_model=Ingestion,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **UNAVAILABLE},
)
async def submit_ingestion(
    body: IngestionRequest, request: Request, tenant: Tenant, service: IngestionsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:  # fmt: skip
    """Ingest many documents as a job: 202 at once; a worker chunks, embeds and indexes them."""
    documents = [d.model_dump(mode="json") for d in body.documents]
    webhook = None if body.webhook is None else body.webhook.model_dump(mode="json")
    job_request = service.request(documents, webhook, body.metadata)
    jobs = request.app.state.jobs
    try:
        if idempotency_key and (job := await jobs.replay(tenant, job_request, idempotency_key)):
            return _accepted(job)  # a retry gets its job, whatever changed since
        check_webhook(request, body.webhook)
        default = None if body.webhook else await checked_default(request, tenant)
        job = await service.submit(
            tenant, documents, job_request, idempotency_key, default_webhook=default
        )
    except IdempotencyConflict:
        raise key_reused() from None
    return _accepted(job)


@router.get("/{job_id}", response_model=Ingestion, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_ingestion(job_id: JobIdPath, tenant: Tenant, service: IngestionsDep) -> Ingestion:
    """The ingestion now: status, documents done, the counts once it succeeded."""
    job = await service.get(tenant, job_id)
    if job is None:
        raise Problem(404, f"No ingestion {job_id!r}")
    return Ingestion.model_validate(view(job))


def _accepted(job: dict[str, Any]) -> JSONResponse:
    location = {"Location": f"/v1/ingestions/{job['id']}"}
    return JSONResponse(view(job), status_code=202, headers=location)


# --- the executor's calls -------------------------------------------------------------------


@internal.post("/{job_id}/source", response_model=IngestionSource)
async def ingestion_source(
    job_id: JobIdPath, body: SourceRequest, message_id: ExecutorMessageId, service: IngestionsDep
) -> IngestionSource:
    """The documents to ingest, and the chunking and embedding model the edge uses."""
    _bound(message_id, job_id, "source")
    try:
        source = await _open(service.source(body.tenant, job_id))
    except SourceNotVisible:
        raise Problem(503, "The ingestion's documents are not visible here yet; retry",
                      headers={"Retry-After": "5"}) from None  # fmt: skip
    if source is None:
        raise Problem(404, f"No stored documents for ingestion {job_id!r} of {body.tenant!r}")
    return IngestionSource.model_validate(source)


@internal.post("/{job_id}/vectors", response_model=VectorsWritten)
async def ingestion_vectors(
    job_id: JobIdPath, body: VectorsRequest, message_id: ExecutorMessageId, request: Request,
    service: IngestionsDep,
) -> VectorsWritten:  # fmt: skip
    """Chunks the executor embedded, into the edge's own index (local mode's sink)."""
    _bound(message_id, job_id, "vectors")
    dimensions = request.app.state.ports.vectors.dimensions
    if wrong := [i for i, v in enumerate(body.vectors) if len(v.values) != dimensions]:
        errors = [{"loc": ["body", "vectors", i, "values"], "msg": f"must have {dimensions} "
                   "values, as the index"} for i in wrong[:10]]  # fmt: skip
        raise Problem(422, "Vectors of the wrong size for this index", extra={"errors": errors})
    records = [VectorRecord(v.id, v.values, v.metadata) for v in body.vectors]
    written = await _open(service.write_vectors(body.tenant, job_id, records))
    if written is None:
        raise Problem(404, f"No ingestion {job_id!r} for tenant {body.tenant!r}")
    return VectorsWritten(written=written)


@internal.post("/{job_id}/prepare", response_model=Registered)
async def ingestion_prepare(
    job_id: JobIdPath, body: RegisterRequest, message_id: ExecutorMessageId,
    service: IngestionsDep,
) -> Registered:  # fmt: skip
    """Documents whose chunks are about to be written: recorded with room for them first,
    so a run that stops before `documents` leaves nothing that cannot be deleted."""
    return await _record_documents("prepare", job_id, body, message_id, service.prepare)


@internal.post("/{job_id}/documents", response_model=Registered)
async def ingestion_documents(
    job_id: JobIdPath, body: RegisterRequest, message_id: ExecutorMessageId,
    service: IngestionsDep,
) -> Registered:  # fmt: skip
    """Documents whose chunks are written: recorded as `POST /v1/documents` records them."""
    return await _record_documents("documents", job_id, body, message_id, service.register)


async def _record_documents(
    kind: str,
    job_id: str,
    body: RegisterRequest,
    message_id: str,
    write: Callable[[str, str, list[IndexedDocument]], Awaitable[list[dict[str, Any]] | None]],
) -> Registered:
    _bound(message_id, job_id, kind)
    documents = [IndexedDocument(d.id, d.chunks, d.metadata) for d in body.documents]
    recorded = await _open(write(body.tenant, job_id, documents))
    if recorded is None:
        raise Problem(404, f"No ingestion {job_id!r} for tenant {body.tenant!r}")
    return Registered(documents=recorded)


def _bound(message_id: str, job_id: str, kind: str) -> None:
    """The signature covers the message id, not the path: a call signed for one job or
    kind of call must not be replayed to another (the executor names both in its ids)."""
    if not message_id.startswith(f"ingest:{job_id}:{kind}:"):
        raise Problem(401, "This signed message is for another call")


async def _open(pending: Awaitable[_T]) -> _T:
    """Await a write of the ingestion; a 409 once it has ended (say, it was cancelled)."""
    try:
        return await pending
    except IngestionClosed as exc:
        raise Problem(409, str(exc)) from exc
