"""What a document becomes in the vector index, and the bulk-ingestion job's names.

Both sides write chunks: the edge for `POST /v1/documents`, the executor for a bulk
ingestion (`POST /v1/ingestions`). A chunk written by either must be the same vector
record (same id, same metadata) so that search, answers and `DELETE /v1/documents/{id}`
cannot tell them apart; this module is the one definition of that record.
Pyodide-safe: standard library only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.chunking import chunk_text

#: Reserved vector-metadata keys (client metadata keys may not start with "_").
DOCUMENT_FIELD = "_document_id"
TEXT_FIELD = "_text"
#: Where the Vectorize adapters keep a record's own id (Vectorize ids are digests).
VECTORIZE_ID_FIELD = "_id"

#: The bulk ingestion is a job like a crew's: its record names this flow and pool, so the
#: edge hands it to the deployment `ingest-documents/cpu`. Its `crew` is a name no
#: published crew can have (crew names start with a letter).
INGESTION_FLOW = "ingest-documents"
INGESTION_POOL = "cpu"
INGESTION_CREW = "@ingestion"

MetadataValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One chunk as the vector index stores it (before embedding)."""

    id: str  # "<document id>#<n>"
    text: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


def chunk_id(document_id: str, index: int) -> str:
    return f"{document_id}#{index}"


def document_chunks(
    document_id: str,
    text: str,
    metadata: Mapping[str, MetadataValue],
    *,
    size: int,
    overlap: int,
) -> list[ChunkRecord]:
    """The chunks of one document, with the metadata every chunk of it carries."""
    return [
        ChunkRecord(
            id=chunk_id(document_id, chunk.index),
            text=chunk.text,
            metadata={**metadata, DOCUMENT_FIELD: document_id, TEXT_FIELD: chunk.text},
        )
        for chunk in chunk_text(text, size=size, overlap=overlap)
    ]


def vectorize_id(namespace: str, record_id: str) -> str:
    """A Vectorize id (<= 64 bytes) unique to this namespace and record id.

    Vectorize ids are unique across the whole index, so two tenants' `doc#0` must not
    collide, and a 128-character document id would not fit Vectorize's 64 bytes.
    """
    return hashlib.sha256(f"{namespace}\x00{record_id}".encode()).hexdigest()[:48]
