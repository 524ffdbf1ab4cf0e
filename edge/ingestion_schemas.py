"""Bodies of `POST /v1/ingestions`, its view, and the executor's ingestion calls."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from edge.jobs.schemas import JobError, WebhookSpec
from edge.schemas import DOCUMENT_ID_PATTERN, DocumentId, DocumentIn, Metadata
from shared.limits import DEFAULT_LIMITS as LIMITS

Tenant = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
#: The most chunks and documents one executor call carries: a vectors call stays under the
#: edge's 1 MiB body (a 384-d vector is ~8 KB as JSON), and a register call within what one
#: Worker invocation may ask of KV (a read and a write per document, and stale chunks).
MAX_VECTORS_PER_CALL = 500
MAX_DOCUMENTS_PER_REGISTER = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class IngestionRequest(_Strict):
    documents: Annotated[
        list[DocumentIn],
        Field(
            min_length=1,
            max_length=LIMITS.max_documents_per_ingestion,
            description="As `POST /v1/documents` takes them; ids unique in the request",
        ),
    ]
    webhook: WebhookSpec | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[DocumentIn]) -> list[DocumentIn]:
        ids = [d.id for d in documents]
        if len(ids) != len(set(ids)):
            raise ValueError("document ids must be unique within one request")
        return documents

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(metadata, ensure_ascii=False).encode()) > LIMITS.max_job_metadata_bytes:
            raise ValueError(f"must be at most {LIMITS.max_job_metadata_bytes} bytes as JSON")
        return metadata


class IngestionProgress(BaseModel):
    documents_done: int
    documents_total: int
    current: str | None = Field(description="What the flow is doing, for people")


class IngestionUrls(BaseModel):
    self: str
    job: str = Field(description="The same job as `GET /v1/jobs/{id}` shows it")
    cancel: str


class Ingestion(BaseModel):
    id: str = Field(description="The job's id")
    status: str
    documents: int
    progress: IngestionProgress
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    result: Any = Field(description="On success: documents, chunks, seconds, sink, embed_model")
    error: JobError | None
    urls: IngestionUrls


# --- the executor's calls ----------------------------------------------------------------


class SourceRequest(_Strict):
    tenant: Tenant


class IngestionSource(BaseModel):
    documents: list[dict[str, Any]]
    chunk_size: int
    chunk_overlap: int
    embed_model: str
    dimensions: int


ChunkId = Annotated[
    str,
    StringConstraints(
        pattern=DOCUMENT_ID_PATTERN.removesuffix("$") + r"#[0-9]{1,6}$",
        max_length=LIMITS.max_document_id_chars + 7,
    ),
]
ChunkMetadata = Annotated[
    dict[
        Annotated[str, StringConstraints(pattern=r"^_?[A-Za-z][A-Za-z0-9_-]*$", max_length=64)],
        Annotated[str, StringConstraints(max_length=16_000)] | bool | int | float,
    ],
    Field(max_length=LIMITS.max_metadata_keys + 3),
]


class ChunkVector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ChunkId
    values: Annotated[list[float], Field(min_length=1, max_length=4096)]
    metadata: ChunkMetadata


class VectorsRequest(_Strict):
    tenant: Tenant
    vectors: Annotated[list[ChunkVector], Field(min_length=1, max_length=MAX_VECTORS_PER_CALL)]


class VectorsWritten(BaseModel):
    written: int


class RegisteredDocument(_Strict):
    id: DocumentId
    chunks: Annotated[int, Field(ge=0, le=100_000)]
    metadata: Metadata = Field(default_factory=dict)


class RegisterRequest(_Strict):
    tenant: Tenant
    documents: Annotated[
        list[RegisteredDocument], Field(min_length=1, max_length=MAX_DOCUMENTS_PER_REGISTER)
    ]


class Registered(BaseModel):
    documents: list[dict[str, Any]] = Field(description="`{id, chunks}` of each, as recorded")
