from __future__ import annotations

import time
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from edge.jobs.schemas import ExecutorEvent, ExecutorSearch
from edge.problems import Problem
from edge.routes.deps import JobsDep, JsonBody, Knowledge
from edge.schemas import Match, SearchResponse
from shared.signing import TOLERANCE_SECONDS, SignatureError, verify

router = APIRouter(prefix="/v1/internal", tags=["executor callbacks"])
JobId = Annotated[str, Path(pattern=r"^job_[0-9a-z]{26}$")]

_Body = TypeVar("_Body", bound=BaseModel)

_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ExecutorEvent.model_json_schema()}},
    }
}


@router.post("/jobs/{job_id}/events", dependencies=[JsonBody], openapi_extra=_BODY_SCHEMA)
async def executor_event(job_id: JobId, request: Request, jobs: JobsDep) -> dict[str, str]:
    """A signed event from the executor (Standard Webhooks, EDGECREW_EXECUTOR_SECRET)."""
    message_id, event = await _verified(request, ExecutorEvent)
    seen_key = f"seen:{message_id}"
    kv = request.app.state.ports.kv
    if await kv.get(seen_key) is not None:
        return {"status": "duplicate"}  # the executor retried; applied already
    job = await jobs.apply_event(event.tenant, job_id, event.model_dump(exclude_none=True))
    if job is None:
        raise Problem(404, f"No job {job_id!r} for tenant {event.tenant!r}")
    # Kept past the signature window, after which a replay fails verification anyway.
    await kv.put(seen_key, "1", ttl_seconds=2 * TOLERANCE_SECONDS)
    return {"status": job["status"]}


@router.post(
    "/search",
    dependencies=[JsonBody],
    response_model=SearchResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ExecutorSearch.model_json_schema()}},
        }
    },
)
async def executor_search(request: Request, kb: Knowledge) -> SearchResponse:
    """A tenant's knowledge-base search on behalf of a crew (signed like callbacks)."""
    _, body = await _verified(request, ExecutorSearch)
    matches, timings = await kb.search(body.tenant, body.query, top_k=body.top_k)
    return SearchResponse(matches=[Match(**m) for m in matches], timings_ms=timings)


async def _verified(request: Request, model: type[_Body]) -> tuple[str, _Body]:
    """(message id, body) of a request signed with EDGECREW_EXECUTOR_SECRET; else 401/422."""
    secret = request.app.state.settings.executor_secret
    raw = await request.body()
    if not secret:
        raise Problem(401, "Executor calls are not configured on this edge")
    try:
        message_id = verify(secret, request.headers, raw, now=int(time.time()))
    except SignatureError as exc:
        raise Problem(401, f"Bad executor signature: {exc}") from None
    try:
        return message_id, model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
