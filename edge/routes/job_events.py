"""`GET /v1/jobs/{id}/events`: a job's events as server-sent events, or as a JSON page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse

from edge.jobs import events
from edge.jobs.schemas import JobEventPage
from edge.problems import Problem, problem_responses
from edge.routes.deps import KEYED, JobIdPath, JobsDep, Tenant

router = APIRouter(prefix="/v1", tags=["jobs"], responses=KEYED)

_EVENT_ID = r"^[0-9]{1,15}$"  # ids are revisions: far below 10**15
_STREAM_DOC = {
    "text/event-stream": {
        "itemSchema": {
            "type": "object",
            "properties": {
                "event": {"type": "string", "description": "The event's `type`"},
                "id": {"type": "string", "description": "The event's `id`"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/JobEvent"},
                },
                "retry": {"type": "integer", "description": "Sent when the stream ends early"},
            },
        }
    }
}


@router.get(
    "/jobs/{job_id}/events",
    response_model=JobEventPage,
    responses={200: {"content": _STREAM_DOC}, **problem_responses(404, 422, 503)},
)
async def job_events(
    job_id: JobIdPath,
    request: Request,
    tenant: Tenant,
    jobs: JobsDep,
    after: Annotated[
        int | None, Query(ge=0, le=10**15, description="Events with larger ids than this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="JSON pages only")] = events.PAGE_LIMIT,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=_EVENT_ID,
            description="What EventSource sends on reconnect; wins over `after`",
        ),
    ] = None,
) -> Response:
    """The job's events, then new ones as they happen (SSE), or a page of the log (JSON)."""
    job = await jobs.current(tenant, job_id)
    if job is None:
        raise Problem(404, f"No job {job_id!r}")
    start, loc = (int(last_event_id), "header") if last_event_id else (after or 0, "query")
    if start > int(job["revision"]):
        msg = f"the job's latest event is {job['revision']}"
        name = "Last-Event-ID" if loc == "header" else "after"
        raise Problem(422, f"No event {start} yet: {msg}", extra={"errors": [
            {"loc": [loc, name], "msg": msg}]})  # fmt: skip
    if _wants_json(request.headers.get("accept", "")):
        return JSONResponse(events.page(job, start, limit), headers={"Cache-Control": "no-store"})
    if events.ended(job, start):
        # Nothing will ever come: a browser's EventSource reconnects after any stream that
        # closes with 200, and stops only on 204 (or an error status).
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    settings = request.app.state.settings

    async def changed(seconds: float) -> None:
        await jobs.changes.wait(tenant, job_id, seconds)

    async def read() -> dict[str, Any] | None:
        return await jobs.current(tenant, job_id)

    body = events.stream(
        read, changed, job, start,
        poll_seconds=settings.job_events_poll_seconds,
        heartbeat_seconds=settings.job_events_heartbeat_seconds,
        max_seconds=settings.job_events_max_seconds,
    )  # fmt: skip
    # `X-Accel-Buffering: no`: nginx-style proxies would otherwise hold events back.
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return EventSourceResponse(body, headers=headers)


def _wants_json(accept: str) -> bool:
    """JSON only when asked for and the stream is not: SSE is what the route is for."""
    accept = accept.lower()
    return "application/json" in accept and "text/event-stream" not in accept
