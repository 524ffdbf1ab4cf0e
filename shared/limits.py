"""Size limits of the public API, shared so that every caller enforces the same numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """The documented size limits; `docs/api-limits.md` mirrors these defaults."""

    max_body_bytes: int = 1_048_576
    max_documents_per_request: int = 100
    #: A bulk ingestion (`POST /v1/ingestions`) takes more documents, within the same body.
    max_documents_per_ingestion: int = 1_000
    max_document_chars: int = 200_000
    max_document_id_chars: int = 128
    max_metadata_keys: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 256
    max_question_chars: int = 2_000
    max_top_k: int = 20
    max_job_inputs_bytes: int = 65_536
    max_job_metadata_bytes: int = 4_096
    max_idempotency_key_chars: int = 255
    max_webhook_url_chars: int = 2_048


DEFAULT_LIMITS = Limits()
