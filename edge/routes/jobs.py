from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from edge.jobs import catalog
from edge.jobs.schemas import (
    CrewList,
    Job,
    JobAccepted,
    JobList,
    JobRequest,
    WebhookSecret,
    WebhookSpec,
)
from edge.jobs.service import IdempotencyConflict, JobService, public
from edge.jobs.webhook_urls import UnsafeWebhookUrl, check_webhook_url
from edge.problems import Problem, problem_responses
from edge.routes.deps import (
    JSON_BODY,
    KEYED,
    NOT_FOUND,
    UNAVAILABLE,
    ApiKey,
    JobIdPath,
    JobsDep,
    JsonBody,
    Tenant,
)
from shared.crews import CrewSpec, input_errors
from shared.jobs import JobStatus
from shared.limits import DEFAULT_LIMITS
from shared.signing import derived_secret

router = APIRouter(prefix="/v1", tags=["jobs"], responses=KEYED)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=DEFAULT_LIMITS.max_idempotency_key_chars,
        pattern=r"^[\x21-\x7e]+$",
    ),
]


@router.get("/crews", response_model=CrewList, dependencies=[ApiKey], responses=UNAVAILABLE)
async def list_crews(request: Request) -> CrewList:
    """The crews the workers published, by name, with input schemas, pools and versions."""
    crews = await catalog.list_crews(request.app.state.ports.kv)
    return CrewList.model_validate({"crews": [crew.public() for crew in crews]})


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **UNAVAILABLE},
)
async def submit_job(
    body: JobRequest, request: Request, tenant: Tenant, jobs: JobsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:  # fmt: skip
    """Accept a crew job: 202 at once, then poll, stream or wait for the webhook."""
    if idempotency_key and (job := await _replayed(jobs, tenant, body, idempotency_key)):
        return _accepted(job)
    crew = await _published_crew(request, body.crew)
    if errors := input_errors(crew.inputs, body.inputs):
        errors = [{**e, "loc": ["body", *e["loc"]]} for e in errors]  # as FastAPI's are
        raise Problem(422, "The inputs do not match the crew's schema", extra={"errors": errors})
    check_webhook(request, body.webhook)
    try:
        job, _ = await jobs.submit(tenant, body.model_dump(mode="json"), idempotency_key, crew=crew)
    except IdempotencyConflict:
        raise key_reused() from None
    return _accepted(job)


def check_webhook(request: Request, webhook: WebhookSpec | None) -> None:
    """A 503 when webhooks could not be signed here, a 422 for an unsafe URL."""
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
        errors = [{"loc": ["body", "webhook", "url"], "msg": str(exc)}]
        raise Problem(422, f"Unusable webhook URL: {exc}", extra={"errors": errors}) from exc


async def _replayed(
    jobs: JobService, tenant: str, body: JobRequest, key: str
) -> dict[str, Any] | None:
    try:
        return await jobs.replay(tenant, body.model_dump(mode="json"), key)
    except IdempotencyConflict:
        raise key_reused() from None


def key_reused() -> Problem:
    msg = "already used with a different request body"
    errors = [{"loc": ["header", "Idempotency-Key"], "msg": msg}]
    return Problem(422, f"This Idempotency-Key was {msg}", extra={"errors": errors})


def _accepted(job: dict[str, Any]) -> JSONResponse:
    accepted = {k: job[k] for k in ("id", "status", "crew", "created_at")}
    accepted["urls"] = public(job)["urls"]
    return JSONResponse(accepted, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


async def _published_crew(request: Request, name: str) -> CrewSpec:
    """The catalog's entry for `name`, or a 422 that names the crews there are."""
    kv = request.app.state.ports.kv
    crew = await catalog.get_crew(kv, name)
    if crew is None:
        known = ", ".join(await catalog.crew_names(kv)) or "none are published yet"
        msg = f"unknown crew; GET /v1/crews lists them ({known})"
        errors = [{"loc": ["body", "crew"], "msg": msg}]
        raise Problem(422, f"No crew {name!r} in the catalog", extra={"errors": errors})
    return crew


@router.get("/jobs", response_model=JobList, responses=problem_responses(422, 503))
async def list_jobs(
    tenant: Tenant,
    jobs: JobsDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> JobList:
    """The tenant's jobs, newest first; a status filter can make a page shorter than `limit`."""
    status_value = None if status is None else status.value
    summaries, next_cursor = await jobs.store.list_jobs(
        tenant, status=status_value, limit=limit, cursor=cursor
    )
    return JobList.model_validate({"jobs": summaries, "cursor": next_cursor})


@router.get("/jobs/{job_id}", response_model=Job, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_job(job_id: JobIdPath, tenant: Tenant, jobs: JobsDep) -> Job:
    """The job now: status, progress, result or error, webhook deliveries."""
    job = await jobs.get(tenant, job_id)
    if job is None:
        raise Problem(404, f"No job {job_id!r}")
    return Job.model_validate(public(job))


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=Job,
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def cancel_job(job_id: JobIdPath, tenant: Tenant, jobs: JobsDep) -> JSONResponse:
    """Ask to cancel; the job becomes `cancelled` once the orchestrator confirms."""
    job = await jobs.cancel(tenant, job_id)
    if job is None:
        raise Problem(404, f"No job {job_id!r}")
    return JSONResponse(public(job), status_code=202)


@router.get("/webhooks/secret", response_model=WebhookSecret, responses=UNAVAILABLE)
async def webhook_secret(request: Request, tenant: Tenant) -> WebhookSecret:
    """The `whsec_` secret that signs this tenant's webhooks (Standard Webhooks)."""
    master = request.app.state.settings.secret_key
    if not master:
        raise Problem(503, "EDGECREW_SECRET_KEY is not configured", headers={"Retry-After": "60"})
    return WebhookSecret(secret=derived_secret(master, f"webhooks:{tenant}"))
