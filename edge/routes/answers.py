from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse, format_sse_event

from edge.ports import DependencyUnavailable
from edge.problems import problem_body
from edge.rag.knowledge import AnswerEvent
from edge.routes.deps import JSON_BODY, KEYED, UNAVAILABLE, JsonBody, Knowledge, Tenant
from edge.schemas import AnswerRequest, AnswerResponse

router = APIRouter(prefix="/v1", tags=["answers"], responses={**KEYED, **UNAVAILABLE})


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"event": {"const": name}, "data": data},
        "required": ["event", "data"],
    }


def _json_of(model: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model}"}
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": ref}


# Each event of the stream, as FastAPI documents its own SSE routes (`itemSchema`).
_STREAM_DOC = {
    "text/event-stream": {
        "itemSchema": {
            "oneOf": [
                _event("token", {"type": "string", "description": "The next piece of text"}),
                _event("done", _json_of("AnswerResponse")),
                _event("error", _json_of("ProblemDetails")),  # the LLM failed mid-stream
            ]
        },
    }
}


@router.post(
    "/answers",
    response_model=AnswerResponse,
    dependencies=[JsonBody],
    responses={200: {"content": _STREAM_DOC}, **JSON_BODY},
)
async def answer(body: AnswerRequest, request: Request, tenant: Tenant, kb: Knowledge) -> Response:
    """A grounded answer with citations (SSE with `stream` or `Accept: text/event-stream`)."""
    wants_stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    if not wants_stream:
        return JSONResponse(
            await kb.answer(tenant, body.question, top_k=body.top_k, filter=body.filter)
        )
    events = kb.answer_events(tenant, body.question, top_k=body.top_k, filter=body.filter)
    # Pull the first event before answering, so that a dependency that is down still gets
    # a real 503 status rather than an error inside a 200 stream.
    first = await anext(events)
    return EventSourceResponse(_sse(first, events), headers={"Cache-Control": "no-store"})


async def _sse(first: AnswerEvent, rest: AsyncIterator[AnswerEvent]) -> AsyncIterator[bytes]:
    yield _encode(first)
    try:
        async for event in rest:
            yield _encode(event)
    except DependencyUnavailable as exc:
        problem = problem_body(503, f"{exc.dependency} failed mid-stream; retry later")
        yield format_sse_event(event="error", data_str=json.dumps(problem))


def _encode(event: AnswerEvent) -> bytes:
    data = event.data if isinstance(event.data, str) else json.dumps(event.data)
    return format_sse_event(event=event.kind, data_str=data)
