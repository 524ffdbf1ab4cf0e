"""The tenant's default webhook: `PUT`, `GET`, `DELETE /v1/webhooks`.

Checked as a job's webhook is (the SSRF guard included); a job submitted without a
webhook records the default as it is then (`edge.jobs.tenant_webhooks`). Answers show
the URL without its query string (`edge.jobs.webhook_views`).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from edge.jobs import tenant_webhooks
from edge.jobs.schemas import WebhookSpec
from edge.jobs.webhook_schemas import DefaultWebhook
from edge.jobs.webhook_views import shown_webhook
from edge.problems import Problem
from edge.routes.deps import JSON_BODY, KEYED, NOT_FOUND, UNAVAILABLE, JsonBody, Tenant
from edge.routes.webhook_checks import check_webhook

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=KEYED)


@router.put(
    "",
    response_model=DefaultWebhook,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **UNAVAILABLE},
)
async def set_default_webhook(
    body: WebhookSpec, request: Request, tenant: Tenant
) -> DefaultWebhook:
    """Set where the webhooks of jobs that name none go (from the next job submitted on)."""
    check_webhook(request, body, loc=("body",))
    kv = request.app.state.ports.kv
    default = await tenant_webhooks.set_default(kv, tenant, body.url, body.events, now=time.time())
    return DefaultWebhook.model_validate(shown_webhook(default))


@router.get("", response_model=DefaultWebhook, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_default_webhook(request: Request, tenant: Tenant) -> DefaultWebhook:
    """The tenant's default webhook; 404 when none is set."""
    default = await tenant_webhooks.get_default(request.app.state.ports.kv, tenant)
    if default is None:
        raise Problem(404, "No default webhook is set (PUT /v1/webhooks sets one)")
    return DefaultWebhook.model_validate(shown_webhook(default))


@router.delete("", status_code=204, responses=UNAVAILABLE)
async def delete_default_webhook(request: Request, tenant: Tenant) -> Response:
    """Remove the default: later jobs that name no webhook get none (accepted ones keep theirs)."""
    await tenant_webhooks.delete_default(request.app.state.ports.kv, tenant)
    return Response(status_code=204)
