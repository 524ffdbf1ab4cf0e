from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from edge.jobs import catalog
from edge.jobs.human_input import INPUT_TIMEOUT, NotAnswerable
from edge.jobs.preferences import duration_seconds, preferred_wait
from edge.jobs.schemas import (
    CrewList,
    Job,
    JobAccepted,
    JobAnswer,
    JobList,
    JobRequest,
    WebhookSecret,
)
from edge.jobs.service import IdempotencyConflict, JobService, public
from edge.jobs.webhook_views import shown_webhook
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
from edge.routes.webhook_checks import check_webhook, checked_default
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
CancelAfter = Annotated[
    str | None,
    Header(
        alias="Cancel-After",
        max_length=64,
        description="A deadline for the job, as `90s`, `5m`, `1h30m` or seconds: "
        "the same as the body's `deadline_seconds`",
    ),
]
#: What `Prefer: wait=N` adds to a route's answers (docs/api.md, "Waiting for a job").
_APPLIED = {
    "Preference-Applied": {
        "description": "`wait=N`: the wait applied (N clamped to 60)",
        "schema": {"type": "string"},
    }
}
WAITED = {
    200: {
        "model": Job,
        "description": "`Prefer: wait`: the job ended within the wait",
        "headers": _APPLIED,
    },
    202: {
        "model": Job,
        "description": "`Prefer: wait`: the job as it is when the wait ran out",
        "headers": _APPLIED,
    },
}


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
    responses={200: WAITED[200], **JSON_BODY, **UNAVAILABLE},
)
async def submit_job(
    body: JobRequest, request: Request, tenant: Tenant, jobs: JobsDep,
    idempotency_key: IdempotencyKey = None, cancel_after: CancelAfter = None,
) -> Response:  # fmt: skip
    """Accept a crew job: 202 at once, then poll, stream or wait for the webhook.

    With `Prefer: wait=N` (N ≤ 60) the answer comes once the job ends (`200`, the job)
    or after N seconds (`202`, the job as it is then), with `Preference-Applied`.
    """
    job_request = _job_request(body, cancel_after)
    wait = preferred_wait(request.headers.getlist("prefer"))
    if idempotency_key and (job := await _replayed(jobs, tenant, job_request, idempotency_key)):
        return await _answer(jobs, job, wait)
    crew = await published_crew(request, body.crew)
    if errors := input_errors(crew.inputs, body.inputs):
        errors = [{**e, "loc": ["body", *e["loc"]]} for e in errors]  # as FastAPI's are
        raise Problem(422, "The inputs do not match the crew's schema", extra={"errors": errors})
    check_webhook(request, body.webhook)
    default = None if body.webhook else await checked_default(request, tenant)
    try:
        job, _ = await jobs.submit(
            tenant, job_request, idempotency_key, crew=crew, default_webhook=default
        )
    except IdempotencyConflict:
        raise key_reused() from None
    return await _answer(jobs, job, wait)


def _job_request(body: JobRequest, cancel_after: str | None) -> dict[str, Any]:
    """The request as the job keeps it (and its idempotency fingerprint covers it).

    `Cancel-After` is folded into `deadline_seconds`, so the header and the body field
    are one request, and a retry under one key with another deadline is a key reuse.
    A request with no deadline leaves the field out: its fingerprint is the one it had
    before deadlines existed, so retries across the upgrade still find their job.
    """
    job_request = body.model_dump(mode="json")
    deadline = job_request.pop("deadline_seconds")
    if cancel_after is not None:
        try:
            from_header = duration_seconds(cancel_after)
        except ValueError as exc:
            errors = [{"loc": ["header", "Cancel-After"], "msg": str(exc)}]
            raise Problem(422, f"Unusable Cancel-After: {exc}", extra={"errors": errors}) from exc
        if deadline is not None and deadline != from_header:
            msg = f"says {from_header} s, the body's deadline_seconds {deadline} s"
            errors = [{"loc": ["header", "Cancel-After"], "msg": msg}]
            raise Problem(422, "Two different deadlines", extra={"errors": errors})
        deadline = from_header
    if deadline is not None:
        job_request["deadline_seconds"] = deadline
    return job_request


async def _replayed(
    jobs: JobService, tenant: str, job_request: dict[str, Any], key: str
) -> dict[str, Any] | None:
    try:
        return await jobs.replay(tenant, job_request, key)
    except IdempotencyConflict:
        raise key_reused() from None


def key_reused() -> Problem:
    msg = "already used with a different request body"
    errors = [{"loc": ["header", "Idempotency-Key"], "msg": msg}]
    return Problem(422, f"This Idempotency-Key was {msg}", extra={"errors": errors})


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """The job as its routes show it: `public` (also a webhook's `data`, which never names
    its URL) and where its webhooks go, the URL without its query (tokens)."""
    return {**public(job), "webhook": shown_webhook(job.get("webhook"))}


def _accepted(job: dict[str, Any]) -> JSONResponse:
    accepted = {k: job[k] for k in ("id", "status", "crew", "created_at")}
    accepted["urls"] = public(job)["urls"]
    return JSONResponse(accepted, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


async def _answer(jobs: JobService, job: dict[str, Any], wait: int | None) -> JSONResponse:
    """The answer to a submit: at once (`202`, accepted), or after `Prefer: wait`.

    A wait answers the full job view either way, a superset of the accepted body: `200`
    once the job ended, `202` when the wait ran out first.
    """
    if wait is None:
        return _accepted(job)
    waited = await _waited(jobs, job, wait)
    waited.headers["Location"] = f"/v1/jobs/{job['id']}"
    return waited


async def _waited(jobs: JobService, job: dict[str, Any], wait: int) -> JSONResponse:
    """The job once it ends or `wait` seconds pass, as RFC 7240 answers a `wait`."""
    found = await jobs.wait(job, wait)
    status = 200 if JobStatus(found["status"]).terminal else 202
    headers = {"Preference-Applied": f"wait={wait}", "Vary": "Prefer"}
    view = Job.model_validate(job_view(found)).model_dump(mode="json")
    return JSONResponse(view, status_code=status, headers=headers)


async def published_crew(request: Request, name: str) -> CrewSpec:
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
    schedule_id: Annotated[
        str | None, Query(max_length=64, description="Only the runs of this schedule")
    ] = None,
) -> JobList:
    """The tenant's jobs, newest first; a filter can make a page shorter than `limit`."""
    status_value = None if status is None else status.value
    summaries, next_cursor = await jobs.store.list_jobs(
        tenant, status=status_value, limit=limit, cursor=cursor, schedule_id=schedule_id
    )
    return JobList.model_validate({"jobs": summaries, "cursor": next_cursor})


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    responses={202: WAITED[202], **NOT_FOUND, **UNAVAILABLE},
)
async def get_job(job_id: JobIdPath, request: Request, tenant: Tenant, jobs: JobsDep) -> Response:
    """The job now: status, progress, result or error, webhook deliveries.

    With `Prefer: wait=N` (N ≤ 60) a job that has not ended is answered once it ends
    (`200`) or after N seconds (`202`, the job as it is then), with `Preference-Applied`.
    """
    job = await jobs.get(tenant, job_id)
    if job is None:
        raise Problem(404, f"No job {job_id!r}")
    wait = preferred_wait(request.headers.getlist("prefer"))
    if wait is not None:
        return await _waited(jobs, job, wait)
    return JSONResponse(Job.model_validate(job_view(job)).model_dump(mode="json"))


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
    return JSONResponse(job_view(job), status_code=202)


@router.post(
    "/jobs/{job_id}/input",
    status_code=202,
    response_model=Job,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **NOT_FOUND, **problem_responses(409), **UNAVAILABLE},
)
async def answer_job(
    job_id: JobIdPath, body: JobAnswer, tenant: Tenant, jobs: JobsDep
) -> JSONResponse:
    """Answer a `waiting` job's question: approve the output, or give feedback to redo it.

    202 once the answer is taken: the job is `running` again (and may ask again). 409 if
    it waits for no answer, or for another question than `question` names.
    """
    try:
        job = await jobs.answer(tenant, job_id, body.model_dump(exclude_none=True))
    except NotAnswerable as exc:
        raise Problem(
            409, f"Not answerable: {exc.reason}", extra={"job_status": exc.job["status"]}
        ) from None
    if job is None:
        raise Problem(404, f"No job {job_id!r}")
    if (job.get("error") or {}).get("kind") == INPUT_TIMEOUT:
        raise Problem(409, "Not answerable: the question expired before the answer came",
                      extra={"job_status": job["status"]})  # fmt: skip
    return JSONResponse(Job.model_validate(public(job)).model_dump(mode="json"), status_code=202)


@router.get("/webhooks/secret", response_model=WebhookSecret, responses=UNAVAILABLE)
async def webhook_secret(request: Request, tenant: Tenant) -> WebhookSecret:
    """The `whsec_` secret that signs this tenant's webhooks (Standard Webhooks)."""
    master = request.app.state.settings.secret_key
    if not master:
        raise Problem(503, "EDGECREW_SECRET_KEY is not configured", headers={"Retry-After": "60"})
    return WebhookSecret(secret=derived_secret(master, f"webhooks:{tenant}"))
