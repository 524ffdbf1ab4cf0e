"""Request and response bodies of the public API, with the documented size limits."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from edge.rag.prompt import MAX_QUESTION_CHARS
from shared.limits import DEFAULT_LIMITS as LIMITS

DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
DocumentId = Annotated[
    str, StringConstraints(pattern=DOCUMENT_ID_PATTERN, max_length=LIMITS.max_document_id_chars)
]
# No "." (Vectorize reads it as nesting); "_" first is reserved for our own metadata.
MetadataKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=LIMITS.max_metadata_key_chars
    ),
]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=LIMITS.max_metadata_value_chars)]
    | bool
    | int
    | float
)


def _every_key_matches(schema: dict[str, Any]) -> None:
    """Document "every key matches the pattern", as validation does.

    Pydantic writes `patternProperties`, which in JSON Schema leaves keys that do not
    match the pattern unconstrained.
    """
    ((pattern, values),) = schema.pop("patternProperties").items()
    schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
    schema["additionalProperties"] = values


Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(max_length=LIMITS.max_metadata_keys, json_schema_extra=_every_key_matches),
]
TopK = Annotated[int, Field(ge=1, le=LIMITS.max_top_k)]
# Not blank, said as a pattern (rather than stripped before counting) so that the
# documented schema and validation agree on every string.
Query = Annotated[
    str, StringConstraints(min_length=1, max_length=LIMITS.max_question_chars, pattern=r"\S")
]
# Shorter than a search query: a question also goes into the LLM's prompt, and its
# length must leave room for sources there (edge/rag/prompt.py).
Question = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\S")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DocumentIn(_Strict):
    id: DocumentId
    text: Annotated[str, StringConstraints(min_length=1, max_length=LIMITS.max_document_chars)]
    metadata: Metadata = Field(default_factory=dict)


class IngestRequest(_Strict):
    documents: Annotated[
        list[DocumentIn], Field(min_length=1, max_length=LIMITS.max_documents_per_request)
    ]

    @model_validator(mode="after")
    def _unique_ids(self) -> IngestRequest:
        ids = [d.id for d in self.documents]
        if len(ids) != len(set(ids)):
            raise ValueError("document ids must be unique within one request")
        return self


class IngestedDocument(BaseModel):
    id: str
    chunks: int


class IngestResponse(BaseModel):
    documents: list[IngestedDocument]


class DocumentSummary(BaseModel):
    id: str
    chunks: int
    updated_at: str


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    cursor: str | None = Field(
        description="Pass back as `cursor` for the next page; null at the end"
    )


class DocumentRecord(DocumentSummary):
    metadata: dict[str, str | bool | int | float]


class SearchRequest(_Strict):
    query: Query
    top_k: TopK = 5
    filter: Metadata | None = None


class Match(BaseModel):
    document_id: str
    chunk_id: str
    score: float
    text: str
    metadata: dict[str, str | bool | int | float]


class SearchResponse(BaseModel):
    matches: list[Match]
    timings_ms: dict[str, float]


class AnswerRequest(_Strict):
    question: Question
    top_k: TopK = 5
    filter: Metadata | None = None
    stream: bool = False


class Citation(BaseModel):
    document_id: str
    chunk_id: str
    score: float
    text: str


class AnswerResponse(BaseModel):
    answer: str
    citations: list[Citation]
    model: str
    cached: bool = Field(description="True when served from the answer cache")
    timings_ms: dict[str, float] = Field(
        description="embed, search, generate and total, in milliseconds"
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # "ready"
    checks: dict[str, str]  # dependency -> "ok"
