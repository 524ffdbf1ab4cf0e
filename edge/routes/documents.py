from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from edge.problems import Problem, problem_responses
from edge.rag.knowledge import Document
from edge.routes.deps import (
    JSON_BODY,
    KEYED,
    NOT_FOUND,
    UNAVAILABLE,
    DocumentIdPath,
    JsonBody,
    Knowledge,
    Tenant,
)
from edge.schemas import (
    DocumentList,
    DocumentRecord,
    IngestedDocument,
    IngestRequest,
    IngestResponse,
)

router = APIRouter(
    prefix="/v1/documents", tags=["knowledge base"], responses={**KEYED, **UNAVAILABLE}
)


@router.post("", response_model=IngestResponse, dependencies=[JsonBody], responses=JSON_BODY)
async def ingest_documents(body: IngestRequest, tenant: Tenant, kb: Knowledge) -> IngestResponse:
    """Chunk, embed and index documents; re-ingesting an id replaces its chunks."""
    documents = [Document(d.id, d.text, d.metadata) for d in body.documents]
    ingested = await kb.ingest(tenant, documents)
    return IngestResponse(documents=[IngestedDocument(**d) for d in ingested])


@router.delete("/{document_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_document(tenant: Tenant, kb: Knowledge, document_id: DocumentIdPath) -> Response:
    """Remove a document and its chunks."""
    if not await kb.delete(tenant, document_id):
        raise Problem(404, f"No document {document_id!r}")
    return Response(status_code=204)


@router.get("", response_model=DocumentList, responses=problem_responses(422))
async def list_documents(
    tenant: Tenant,
    kb: Knowledge,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> DocumentList:
    """The tenant's documents in id order, a page at a time."""
    documents, next_cursor = await kb.list_documents(tenant, limit=limit, cursor=cursor)
    return DocumentList.model_validate({"documents": documents, "cursor": next_cursor})


@router.get("/{document_id}", response_model=DocumentRecord, responses=NOT_FOUND)
async def get_document(
    tenant: Tenant, kb: Knowledge, document_id: DocumentIdPath
) -> DocumentRecord:
    """One document's record: chunk count, metadata, last ingest time."""
    record = await kb.document(tenant, document_id)
    if record is None:
        raise Problem(404, f"No document {document_id!r}")
    return DocumentRecord.model_validate(record)
