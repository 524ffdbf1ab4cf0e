"""The executor's routes: job events, knowledge searches and the crew catalog, signed
instead of keyed.

`edge.guards.ExecutorSignatureAuth` has verified the signature before routing, so an
unsigned or stale call is 401 whatever its path or body; these handlers only parse.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from edge.jobs import catalog
from edge.jobs.schemas import CrewPublish, CrewsPublished, EventAck, ExecutorEvent, ExecutorSearch
from edge.problems import Problem, problem_responses
from edge.routes.deps import (
    JSON_BODY,
    NOT_FOUND,
    ExecutorMessageId,
    JobIdPath,
    JobsDep,
    JsonBody,
    Knowledge,
)
from edge.schemas import Match, SearchResponse
from shared.crews import CatalogError, specs_from_publish
from shared.signing import TOLERANCE_SECONDS

# Signed, not keyed: no API key and no rate limit, so 401 but never 429.
router = APIRouter(
    prefix="/v1/internal", tags=["executor callbacks"], responses=problem_responses(401, 503)
)


@router.post(
    "/jobs/{job_id}/events",
    response_model=EventAck,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **NOT_FOUND},
)
async def executor_event(
    job_id: JobIdPath, event: ExecutorEvent, message_id: ExecutorMessageId,
    request: Request, jobs: JobsDep,
) -> EventAck:  # fmt: skip
    """A signed event from the executor (Standard Webhooks, EDGECREW_EXECUTOR_SECRET)."""
    seen_key = f"seen:{message_id}"
    kv = request.app.state.ports.kv
    if await kv.get(seen_key) is not None:
        return EventAck(status="duplicate")  # the executor retried; applied already
    job = await jobs.apply_event(event.tenant, job_id, event.model_dump(exclude_none=True))
    if job is None:
        raise Problem(404, f"No job {job_id!r} for tenant {event.tenant!r}")
    # Kept past the signature window, after which a replay fails verification anyway.
    await kv.put(seen_key, "1", ttl_seconds=2 * TOLERANCE_SECONDS)
    return EventAck(status=job["status"])


@router.post("/search", dependencies=[JsonBody], response_model=SearchResponse, responses=JSON_BODY)
async def executor_search(
    body: ExecutorSearch, _: ExecutorMessageId, kb: Knowledge
) -> SearchResponse:
    """A tenant's knowledge-base search on behalf of a crew (signed like callbacks)."""
    matches, timings = await kb.search(body.tenant, body.query, top_k=body.top_k)
    return SearchResponse(matches=[Match(**m) for m in matches], timings_ms=timings)


@router.post("/crews", dependencies=[JsonBody], response_model=CrewsPublished, responses=JSON_BODY)
async def publish_crews(
    body: CrewPublish, _: ExecutorMessageId, request: Request
) -> CrewsPublished:
    """A worker's crews, published into the catalog `GET /v1/crews` lists (last one wins)."""
    try:
        worker, _pool, specs = specs_from_publish(body.model_dump())
    except CatalogError as exc:
        errors = [{"loc": ["body"], "msg": str(exc)}]
        raise Problem(422, f"Unusable crew catalog: {exc}", extra={"errors": errors}) from exc
    kv = request.app.state.ports.kv
    names = await catalog.publish(kv, worker, specs, now=time.time())
    return CrewsPublished(crews=names)
