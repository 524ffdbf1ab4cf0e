"""Dependencies shared by the routes: the caller's tenant, the knowledge base, JSON bodies."""

from __future__ import annotations

import json
import re
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPBearer

from edge.jobs.service import JobService
from edge.problems import Problem, problem_responses
from edge.rag.knowledge import KnowledgeBase
from edge.schemas import DOCUMENT_ID_PATTERN
from shared.limits import DEFAULT_LIMITS

# Every dependency here is `async def` though none awaits: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per dependency per request (measured: a
# tenth of POST /v1/jobs' time in-process), for code that only reads request state.

# Declares the scheme in OpenAPI; `edge.guards.ApiKeyAuth` has already checked the key.
_bearer = HTTPBearer(auto_error=False, description="An API key from EDGECREW_API_KEYS")


async def current_tenant(request: Request, _: object = Security(_bearer)) -> str:
    tenant = request.scope.get("state", {}).get("tenant")
    if not isinstance(tenant, str):  # only reachable if a route is mounted outside /v1
        raise Problem(401, "Send a valid API key as `Authorization: Bearer <key>`")
    return tenant


async def executor_message_id(request: Request) -> str:
    """The `webhook-id` that `edge.guards.ExecutorSignatureAuth` verified."""
    message_id = request.scope.get("state", {}).get("executor_message_id")
    if not isinstance(message_id, str):  # only reachable if a route is mounted elsewhere
        raise Problem(401, "Executor calls must be signed")
    return message_id


async def knowledge_base(request: Request) -> KnowledgeBase:
    kb: KnowledgeBase = request.app.state.knowledge
    return kb


async def job_service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


# Ids are opaque to clients: one of a shape this API never issues names nothing, so it is
# 404 like any unknown id (never 422), and it is refused before any store is asked.
_JOB_ID = re.compile(r"job_[0-9a-z]{26}")
_DOCUMENT_ID = re.compile(DOCUMENT_ID_PATTERN.removeprefix("^").removesuffix("$"))


JobIdParam = Annotated[str, Path(description="The id `POST /v1/jobs` returned")]


async def job_id(job_id: JobIdParam) -> str:
    """The job id in the path, or 404 when it cannot name a job."""
    if not _JOB_ID.fullmatch(job_id):
        raise Problem(404, "No job has this id")
    return job_id


async def document_id(document_id: Annotated[str, Path(description="The document's id")]) -> str:
    """The document id in the path, or 404 when it cannot name a document."""
    too_long = len(document_id) > DEFAULT_LIMITS.max_document_id_chars
    if too_long or not _DOCUMENT_ID.fullmatch(document_id):
        raise Problem(404, "No document has this id")
    return document_id


async def json_body(request: Request) -> None:
    """Refuse bodies that are not JSON before FastAPI tries to read them as such.

    Python's parser (FastAPI's) takes `NaN` and `Infinity`, which JSON does not have:
    accepted, they would come back out as a 500 (no JSON encoder writes them) or travel
    on to Prefect and the index. Refused here, for every route with a body.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(415, f"Send the body as application/json, not {media_type or 'nothing'!r}")
    try:
        json.loads(await request.body(), parse_constant=_not_json)  # cached for FastAPI
    except _NotJson as exc:
        msg = f"{exc} is not a JSON number"
        raise Problem(
            422, f"Invalid JSON: {msg}", extra={"errors": [{"loc": ["body"], "msg": msg}]}
        ) from None
    except ValueError:
        pass  # malformed: FastAPI's own 400 says where


async def optional_json_body(request: Request) -> None:
    """`json_body` for a route whose body may be left out: an empty body passes."""
    if await request.body():
        await json_body(request)


class _NotJson(ValueError):
    pass


def _not_json(constant: str) -> object:
    raise _NotJson(constant)


#: What every API-key route can answer besides its own errors (the guards run first).
KEYED = problem_responses(401, 429)
#: What a route with a JSON body can answer about it: malformed, not JSON, off-schema.
JSON_BODY = problem_responses(400, 415, 422)
NOT_FOUND = problem_responses(404)
#: A route that calls a port (store, index, models, Prefect) answers 503 when it is down.
UNAVAILABLE = problem_responses(503)

#: Declares the API key on a route that does not need the tenant (the guard checks it).
ApiKey = Security(_bearer)
Tenant = Annotated[str, Depends(current_tenant)]
JobIdPath = Annotated[str, Depends(job_id)]
DocumentIdPath = Annotated[str, Depends(document_id)]
ExecutorMessageId = Annotated[str, Depends(executor_message_id)]
Knowledge = Annotated[KnowledgeBase, Depends(knowledge_base)]
JobsDep = Annotated[JobService, Depends(job_service)]
JsonBody = Depends(json_body)
OptionalJsonBody = Depends(optional_json_body)
