"""A job's webhook deliveries: the log (`GET .../deliveries`) and redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from edge.jobs.redelivery import (
    NothingToRedeliver,
    RedeliveredTooSoon,
    Redeliveries,
    UnknownWebhook,
)
from edge.jobs.webhook_schemas import DeliveryLog, RedeliverRequest, Redelivery
from edge.problems import Problem, problem_responses
from edge.routes.deps import (
    JSON_BODY,
    KEYED,
    NOT_FOUND,
    UNAVAILABLE,
    JobIdPath,
    OptionalJsonBody,
    Tenant,
)


def redeliveries(request: Request) -> Redeliveries:
    service: Redeliveries = request.app.state.redeliveries
    return service


RedeliveriesDep = Annotated[Redeliveries, Depends(redeliveries)]
router = APIRouter(prefix="/v1/jobs/{job_id}/deliveries", tags=["jobs"], responses=KEYED)


@router.get("", response_model=DeliveryLog, responses={**NOT_FOUND, **UNAVAILABLE})
async def delivery_log(job_id: JobIdPath, tenant: Tenant, service: RedeliveriesDep) -> DeliveryLog:
    """Every recent delivery attempt (why it failed, when the next is due), and what was sent."""
    log = await service.log(tenant, job_id)
    if log is None:
        raise Problem(404, f"No job {job_id!r}")
    return DeliveryLog.model_validate(log)


@router.post(
    "/redeliver",
    status_code=202,
    response_model=Redelivery,
    dependencies=[OptionalJsonBody],
    responses={**JSON_BODY, **NOT_FOUND, **problem_responses(409), **UNAVAILABLE},
)
async def redeliver(
    job_id: JobIdPath,
    request: Request,
    tenant: Tenant,
    service: RedeliveriesDep,
    body: RedeliverRequest | None = None,
) -> JSONResponse:
    """Send a webhook again now, with its original `webhook-id` and body, signed afresh:
    the last one the job sent, or the one named by `message_id` or `event`. Tried once."""
    if not request.app.state.settings.secret_key:
        raise Problem(
            503, "Webhooks need EDGECREW_SECRET_KEY on this edge", headers={"Retry-After": "60"}
        )
    wanted = body or RedeliverRequest()
    try:
        queued = await service.redeliver(
            tenant, job_id, message_id=wanted.message_id, event=wanted.event
        )
    except UnknownWebhook as exc:
        raise Problem(404, f"Nothing to redeliver: {exc}") from None
    except NothingToRedeliver as exc:
        raise Problem(409, f"Nothing to redeliver: {exc}") from None
    except RedeliveredTooSoon as exc:
        retry = str(exc.retry_after)
        detail = f"This job's webhook was redelivered moments ago; retry in {retry} s"
        raise Problem(429, detail, headers={"Retry-After": retry}) from None
    if queued is None:
        raise Problem(404, f"No job {job_id!r}")
    return JSONResponse(Redelivery.model_validate(queued).model_dump(mode="json"), status_code=202)
