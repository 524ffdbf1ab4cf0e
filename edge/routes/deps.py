"""Dependencies shared by the routes: the caller's tenant, the knowledge base, JSON bodies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from edge.jobs.service import JobService
from edge.problems import Problem
from edge.rag.knowledge import KnowledgeBase

# Declares the scheme in OpenAPI; `edge.guards.ApiKeyAuth` has already checked the key.
_bearer = HTTPBearer(auto_error=False, description="An API key from EDGECREW_API_KEYS")


def current_tenant(request: Request, _: object = Security(_bearer)) -> str:
    tenant = request.scope.get("state", {}).get("tenant")
    if not isinstance(tenant, str):  # only reachable if a route is mounted outside /v1
        raise Problem(401, "Send a valid API key as `Authorization: Bearer <key>`")
    return tenant


def executor_message_id(request: Request) -> str:
    """The `webhook-id` that `edge.guards.ExecutorSignatureAuth` verified."""
    message_id = request.scope.get("state", {}).get("executor_message_id")
    if not isinstance(message_id, str):  # only reachable if a route is mounted elsewhere
        raise Problem(401, "Executor calls must be signed")
    return message_id


def knowledge_base(request: Request) -> KnowledgeBase:
    kb: KnowledgeBase = request.app.state.knowledge
    return kb


def job_service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def json_body(request: Request) -> None:
    """Refuse bodies that are not JSON before FastAPI tries to read them as such."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(415, f"Send the body as application/json, not {media_type or 'nothing'!r}")


Tenant = Annotated[str, Depends(current_tenant)]
ExecutorMessageId = Annotated[str, Depends(executor_message_id)]
Knowledge = Annotated[KnowledgeBase, Depends(knowledge_base)]
JobsDep = Annotated[JobService, Depends(job_service)]
JsonBody = Depends(json_body)
