from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from edge.jobs.schemas import ExecutorEvent
from edge.problems import Problem
from edge.routes.deps import JobsDep, JsonBody
from shared.signing import TOLERANCE_SECONDS, SignatureError, verify

router = APIRouter(prefix="/v1/internal", tags=["executor callbacks"])
JobId = Annotated[str, Path(pattern=r"^job_[0-9a-z]{26}$")]

_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ExecutorEvent.model_json_schema()}},
    }
}


@router.post("/jobs/{job_id}/events", dependencies=[JsonBody], openapi_extra=_BODY_SCHEMA)
async def executor_event(job_id: JobId, request: Request, jobs: JobsDep) -> dict[str, str]:
    """A signed event from the executor (Standard Webhooks, EDGECREW_EXECUTOR_SECRET)."""
    secret = request.app.state.settings.executor_secret
    body = await request.body()
    if not secret:
        raise Problem(401, "Executor callbacks are not configured on this edge")
    try:
        message_id = verify(secret, request.headers, body, now=int(time.time()))
    except SignatureError as exc:
        raise Problem(401, f"Bad executor signature: {exc}") from None
    try:
        event = ExecutorEvent.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
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
