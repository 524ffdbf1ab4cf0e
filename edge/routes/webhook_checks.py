"""Whether a job's webhook can be used, checked before the job is accepted: a 202 is a
promise that its webhooks will be sent.

The same checks for a webhook the request names and for the tenant's default one a job
takes when it names none (`PUT /v1/webhooks`): that default was checked when it was set,
but the edge's settings may have changed since (loopback no longer allowed, the signing
key gone), so it is checked again each time a job takes it.
"""

from __future__ import annotations

from fastapi import Request

from edge.jobs import tenant_webhooks
from edge.jobs.records import Webhook
from edge.jobs.schemas import WebhookSpec
from edge.jobs.webhook_urls import UnsafeWebhookUrl, check_webhook_url
from edge.problems import Problem

_UNSIGNED = "EDGECREW_SECRET_KEY is not set on this edge: webhooks cannot be signed"
_DEFAULT = "The tenant's default webhook is not usable"


def check_webhook(
    request: Request, webhook: WebhookSpec | None, loc: tuple[str, ...] = ("body", "webhook")
) -> None:
    """A 503 when webhooks could not be signed here, a 422 for an unsafe URL (at `loc`)."""
    if webhook is None:
        return
    settings = request.app.state.settings
    if not settings.secret_key:  # webhooks could not be signed
        raise Problem(
            503, "Webhooks need EDGECREW_SECRET_KEY on this edge", headers={"Retry-After": "60"}
        )
    try:
        check_webhook_url(webhook.url, allow_loopback_http=settings.allow_loopback_webhooks)
    except UnsafeWebhookUrl as exc:
        errors = [{"loc": [*loc, "url"], "msg": str(exc)}]
        raise Problem(422, f"Unusable webhook URL: {exc}", extra={"errors": errors}) from exc


async def checked_default(request: Request, tenant: str) -> Webhook | None:
    """The tenant's default webhook for a job that names none (None when none is set),
    refused as a named one would be: 503 without a signing key, 422 for a URL the SSRF
    guard refuses now. The problem says it is the default, and how to get past it."""
    default = await tenant_webhooks.webhook_for_job(request.app.state.ports.kv, tenant)
    if default is None:
        return None
    settings = request.app.state.settings
    if not settings.secret_key:
        raise Problem(503, f"{_DEFAULT}: {_UNSIGNED}", headers={"Retry-After": "60"})
    try:
        check_webhook_url(default["url"], allow_loopback_http=settings.allow_loopback_webhooks)
    except UnsafeWebhookUrl as exc:
        reason = f"{_DEFAULT}: its URL {exc}"
        errors = [{"loc": ["body", "webhook"], "msg": reason}]
        how = "set another with PUT /v1/webhooks (or delete it), or name a webhook here"
        raise Problem(422, f"{reason}; {how}", extra={"errors": errors}) from exc
    return default
