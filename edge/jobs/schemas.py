"""Bodies of the jobs API and of executor callbacks."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.crews import CREWS
from shared.jobs import WEBHOOK_EVENTS
from shared.limits import DEFAULT_LIMITS as LIMITS

WebhookEvent = Literal[
    "job.running", "job.progress", "job.succeeded", "job.failed", "job.cancelled"
]
assert set(WebhookEvent.__args__) == set(WEBHOOK_EVENTS)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookSpec(_Strict):
    url: Annotated[str, Field(min_length=1, max_length=LIMITS.max_webhook_url_chars)]
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=5)] | None = None


def _inputs_per_crew(schema: dict[str, Any]) -> None:
    """Document each crew's own input schema (from the manifest) in the request's schema."""
    schema["properties"]["crew"]["enum"] = sorted(CREWS)
    schema["oneOf"] = [
        {"properties": {"crew": {"const": name}, "inputs": dict(spec.inputs)}}
        for name, spec in sorted(CREWS.items())
    ]


class JobRequest(_Strict):
    model_config = ConfigDict(json_schema_extra=_inputs_per_crew)

    crew: str = Field(description="A crew `GET /v1/crews` lists; `inputs` follow its schema")
    inputs: dict[str, Any]
    webhook: WebhookSpec | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("crew")
    @classmethod
    def _known_crew(cls, crew: str) -> str:
        if crew not in CREWS:
            raise ValueError(f"unknown crew; GET /v1/crews lists them ({', '.join(sorted(CREWS))})")
        return crew

    @field_validator("inputs")
    @classmethod
    def _small_inputs(cls, inputs: dict[str, Any]) -> dict[str, Any]:
        return _bounded(inputs, LIMITS.max_job_inputs_bytes)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        return _bounded(metadata, LIMITS.max_job_metadata_bytes)


class JobUrls(BaseModel):
    self: str
    cancel: str


class JobAccepted(BaseModel):
    id: str
    status: str
    crew: str
    created_at: str
    urls: JobUrls


class Progress(BaseModel):
    completed_tasks: int
    total_tasks: int
    current_task: str | None = None


class JobError(BaseModel):
    kind: str
    message: str


class Delivery(BaseModel):
    event: str
    attempt: int
    status_code: int | None
    at: str


class Job(BaseModel):
    id: str
    crew: str
    status: str
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    progress: Progress | None
    result: Any
    error: JobError | None
    deliveries: list[Delivery]
    urls: JobUrls


class JobSummary(BaseModel):
    id: str
    crew: str
    status: str
    created_at: str


class JobList(BaseModel):
    jobs: list[JobSummary]
    cursor: str | None


class Crew(BaseModel):
    name: str
    description: str
    inputs: dict[str, Any]
    pool: str


class CrewList(BaseModel):
    crews: list[Crew]


class WebhookSecret(BaseModel):
    secret: str


class ExecutorEvent(_Strict):
    type: Literal["running", "progress", "succeeded", "failed", "cancelled"]
    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None


class EventAck(BaseModel):
    status: str = Field(description="The job's status now, or `duplicate` for a repeated event")


class ExecutorSearch(_Strict):
    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
    query: Annotated[str, Field(min_length=1, max_length=LIMITS.max_question_chars)]
    top_k: Annotated[int, Field(ge=1, le=LIMITS.max_top_k)] = 5


def _bounded(value: dict[str, Any], limit: int) -> dict[str, Any]:
    if len(json.dumps(value, ensure_ascii=False).encode()) > limit:
        raise ValueError(f"must be at most {limit} bytes as JSON")
    return value
