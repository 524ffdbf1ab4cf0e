"""`POST /v1/ingestions` and its view, and the executor's signed ingestion calls.

The public routes are keyed like every `/v1` route; the `/v1/internal/ingestions/...`
routes are signed by the executor (`edge.guards.ExecutorSignatureAuth` checked that
before routing), like its job events.
"""

from __future__ import annotations

from collections.abc import Awaitable
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
from edge.ingestions import IngestionClosed, Ingestions, view
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
from edge.routes.jobs import IdempotencyKey, check_webhook, key_reused


def ingestions(request: Request) -> Ingestions:
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
        job = await service.submit(tenant, documents, job_request, idempotency_key)
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
    job_id: JobIdPath, body: SourceRequest, _: ExecutorMessageId, service: IngestionsDep
) -> IngestionSource:
    """The documents to ingest, and the chunking and embedding model the edge uses."""
    source = await _open(service.source(body.tenant, job_id))
    if source is None:
        raise Problem(404, f"No stored documents for ingestion {job_id!r} of {body.tenant!r}")
    return IngestionSource.model_validate(source)


@internal.post("/{job_id}/vectors", response_model=VectorsWritten)
async def ingestion_vectors(
    job_id: JobIdPath, body: VectorsRequest, _: ExecutorMessageId, request: Request,
    service: IngestionsDep,
) -> VectorsWritten:  # fmt: skip
    """Chunks the executor embedded, into the edge's own index (local mode's sink)."""
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


@internal.post("/{job_id}/documents", response_model=Registered)
async def ingestion_documents(
    job_id: JobIdPath, body: RegisterRequest, _: ExecutorMessageId, service: IngestionsDep
) -> Registered:
    """Documents whose chunks are written: recorded as `POST /v1/documents` records them."""
    documents = [IndexedDocument(d.id, d.chunks, d.metadata) for d in body.documents]
    registered = await _open(service.register(body.tenant, job_id, documents))
    if registered is None:
        raise Problem(404, f"No ingestion {job_id!r} for tenant {body.tenant!r}")
    return Registered(documents=registered)


async def _open(pending: Awaitable[_T]) -> _T:
    """Await a write of the ingestion; a 409 once it has ended (say, it was cancelled)."""
    try:
        return await pending
    except IngestionClosed as exc:
        raise Problem(409, str(exc)) from exc
