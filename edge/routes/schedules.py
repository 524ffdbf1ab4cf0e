"""The schedules API: crews on a cron or an interval, each run an ordinary job."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from edge.ports import OrchestratorRejected, ScheduleRefused
from edge.problems import Problem, problem_responses
from edge.routes.deps import (
    JSON_BODY,
    KEYED,
    NOT_FOUND,
    UNAVAILABLE,
    ExecutorMessageId,
    JsonBody,
    Tenant,
)
from edge.routes.jobs import IdempotencyKey, key_reused, published_crew
from edge.routes.webhook_checks import check_webhook
from edge.schedules.schemas import (
    Schedule,
    ScheduledRun,
    ScheduledRunJob,
    ScheduleList,
    ScheduleRequest,
)
from edge.schedules.service import (
    SCHEDULE_ID,
    NotTheSchedulesRun,
    ScheduleGone,
    ScheduleKeyDeleted,
    ScheduleKeyReused,
    ScheduleLimitReached,
    ScheduleService,
    public,
)
from shared.crews import input_errors

log = logging.getLogger("edgecrew.schedules")
router = APIRouter(prefix="/v1", tags=["schedules"], responses=KEYED)
internal = APIRouter(
    prefix="/v1/internal", tags=["executor callbacks"], responses=problem_responses(401, 503)
)


async def schedule_service(request: Request) -> ScheduleService:
    service: ScheduleService = request.app.state.schedules
    return service


async def schedule_id(
    schedule_id: Annotated[str, Path(description="The id `POST /v1/schedules` returned")],
) -> str:
    """The schedule id in the path, or 404 when it cannot name a schedule."""
    if not SCHEDULE_ID.fullmatch(schedule_id):
        raise Problem(404, "No schedule has this id")
    return schedule_id


SchedulesDep = Annotated[ScheduleService, Depends(schedule_service)]
ScheduleIdPath = Annotated[str, Depends(schedule_id)]


@router.post(
    "/schedules",
    status_code=201,
    response_model=Schedule,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **problem_responses(409), **UNAVAILABLE},
)
async def create_schedule(
    body: ScheduleRequest, request: Request, tenant: Tenant, schedules: SchedulesDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:  # fmt: skip
    """Run a crew on a cron (in a time zone) or every `interval_seconds`; each run is a job.

    `201` with the schedule; the same `Idempotency-Key` and body answer the same schedule
    (`409` once that schedule was deleted: a new schedule needs a new key). `409` too,
    making nothing, when the tenant has as many schedules as the edge allows.
    """
    schedule_request = body.model_dump(mode="json")
    if schedule_request["deadline_seconds"] is None:
        # Left out, as a job request leaves it: the fingerprints of schedules made
        # before deadlines existed stay what they were.
        del schedule_request["deadline_seconds"]
    if idempotency_key:
        try:
            replayed = await schedules.replay(tenant, schedule_request, idempotency_key)
        except ScheduleKeyReused:
            raise key_reused() from None
        except ScheduleKeyDeleted as exc:
            raise key_deleted(str(exc)) from None
        if replayed is not None:
            return _created(replayed)
    _check_timing(body, request.app.state.settings.schedule_min_interval_seconds)
    crew = await published_crew(request, body.crew)
    if errors := input_errors(crew.inputs, body.inputs):
        errors = [{**e, "loc": ["body", *e["loc"]]} for e in errors]  # as FastAPI's are
        raise Problem(422, "The inputs do not match the crew's schema", extra={"errors": errors})
    check_webhook(request, body.webhook)
    try:
        schedule, _ = await schedules.create(tenant, schedule_request, idempotency_key, crew=crew)
    except ScheduleKeyReused:
        raise key_reused() from None
    except ScheduleKeyDeleted as exc:
        raise key_deleted(str(exc)) from None
    except ScheduleLimitReached as exc:
        raise too_many(exc.limit) from None
    except ScheduleRefused as exc:
        if exc.field is None:  # not the request's fault
            raise _refused(exc) from exc
        errors = [{"loc": ["body", exc.field], "msg": str(exc)}]
        raise Problem(422, f"Unusable {exc.field}", extra={"errors": errors}) from exc
    except OrchestratorRejected as exc:  # e.g. the crew's deployment is not in Prefect
        raise _refused(exc) from exc
    return _created(schedule)


def key_deleted(schedule_id: str) -> Problem:
    msg = f"made the schedule {schedule_id}, which was deleted; use a new key for a new one"
    errors = [{"loc": ["header", "Idempotency-Key"], "msg": msg}]
    return Problem(409, f"This Idempotency-Key {msg}", extra={"errors": errors})


def too_many(limit: int) -> Problem:
    """The tenant's schedule cap: a state to change (delete one), not a rate to wait out."""
    detail = (
        f"This tenant has {limit} schedules, the most this edge allows "
        "(EDGECREW_MAX_SCHEDULES_PER_TENANT); delete one to make another"
    )
    return Problem(409, detail, extra={"limit": limit})


def _refused(exc: OrchestratorRejected) -> Problem:
    """Prefect refused a call the client's request was fine for: the deployment of the
    crew (or of the schedule) is missing or was changed there. Its answer may echo the
    request, so it goes to the log, not to the client."""
    log.warning("Prefect refused a schedule call: %s", exc)
    status = f" (HTTP {exc.status_code})" if exc.status_code else ""
    detail = f"Prefect refused the call for this schedule's deployment{status}; see the edge log"
    return Problem(503, detail, headers={"Retry-After": "60"})


def _check_timing(body: ScheduleRequest, min_interval: int) -> None:
    """Exactly one of `cron` and `interval_seconds`, and an interval not too short."""
    msg = ""
    if body.cron is not None and body.interval_seconds is not None:
        msg = "give either cron or interval_seconds, not both"
    elif body.cron is None and body.interval_seconds is None:
        msg = "give cron or interval_seconds"
    if msg:
        errors = [{"loc": ["body", field], "msg": msg} for field in ("cron", "interval_seconds")]
        raise Problem(422, f"When to run: {msg}", extra={"errors": errors})
    if body.interval_seconds is not None and body.interval_seconds < min_interval:
        msg = f"must be at least {min_interval} seconds on this edge"
        errors = [{"loc": ["body", "interval_seconds"], "msg": msg}]
        raise Problem(422, f"interval_seconds {msg}", extra={"errors": errors})


def _created(schedule: dict[str, Any]) -> JSONResponse:
    view = Schedule.model_validate(public(schedule)).model_dump(mode="json")
    return JSONResponse(view, status_code=201, headers={"Location": view["urls"]["self"]})


@router.get("/schedules", response_model=ScheduleList, responses=problem_responses(422, 503))
async def list_schedules(
    tenant: Tenant,
    schedules: SchedulesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> ScheduleList:
    """The tenant's schedules, newest first."""
    summaries, next_cursor = await schedules.store.list_schedules(
        tenant, limit=limit, cursor=cursor
    )
    return ScheduleList.model_validate({"schedules": summaries, "cursor": next_cursor})


@router.get(
    "/schedules/{schedule_id}", response_model=Schedule, responses={**NOT_FOUND, **UNAVAILABLE}
)
async def get_schedule(
    schedule_id: ScheduleIdPath, tenant: Tenant, schedules: SchedulesDep
) -> Schedule:
    """The schedule, with its next runs as Prefect has them scheduled."""
    schedule = await schedules.get(tenant, schedule_id)
    if schedule is None:
        raise Problem(404, f"No schedule {schedule_id!r}")
    return Schedule.model_validate(public(schedule))


@router.delete("/schedules/{schedule_id}", status_code=204, responses={**NOT_FOUND, **UNAVAILABLE})
async def delete_schedule(
    schedule_id: ScheduleIdPath, tenant: Tenant, schedules: SchedulesDep
) -> Response:
    """Stop and remove the schedule; the jobs its runs made stay (a run under way goes on)."""
    try:
        deleted = await schedules.delete(tenant, schedule_id)
    except OrchestratorRejected as exc:
        raise _refused(exc) from exc
    if not deleted:
        raise Problem(404, f"No schedule {schedule_id!r}")
    return Response(status_code=204)


@router.post(
    "/schedules/{schedule_id}/pause",
    response_model=Schedule,
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def pause_schedule(
    schedule_id: ScheduleIdPath, tenant: Tenant, schedules: SchedulesDep
) -> Schedule:
    """No new runs until resumed (a run already started goes on)."""
    return await _set_paused(schedules, tenant, schedule_id, paused=True)


@router.post(
    "/schedules/{schedule_id}/resume",
    response_model=Schedule,
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def resume_schedule(
    schedule_id: ScheduleIdPath, tenant: Tenant, schedules: SchedulesDep
) -> Schedule:
    """Runs again from the next time due (missed ones are not made up)."""
    return await _set_paused(schedules, tenant, schedule_id, paused=False)


async def _set_paused(
    schedules: ScheduleService, tenant: str, schedule_id: str, *, paused: bool
) -> Schedule:
    try:
        schedule = await schedules.set_paused(tenant, schedule_id, paused)
    except OrchestratorRejected as exc:
        raise _refused(exc) from exc
    if schedule is None:
        raise Problem(404, f"No schedule {schedule_id!r}")
    return Schedule.model_validate(public(schedule))


@internal.post(
    "/schedules/{schedule_id}/runs",
    response_model=ScheduledRunJob,
    dependencies=[JsonBody],
    responses={**JSON_BODY, **problem_responses(404, 409, 410)},
)
async def register_scheduled_run(
    schedule_id: ScheduleIdPath, body: ScheduledRun, message_id: ExecutorMessageId,
    schedules: SchedulesDep,
) -> ScheduledRunJob:  # fmt: skip
    """A schedule's flow run starting (signed): the job it is, made once per run."""
    # The signature covers the message id, not the path: one signed for another
    # schedule's run must not register here.
    if message_id != f"schedule-run:{schedule_id}:{body.flow_run_id}":
        raise Problem(401, "This signed message is for another call")
    try:
        job = await schedules.register_run(body.tenant, schedule_id, body.flow_run_id)
    except ScheduleGone:
        raise Problem(410, f"Schedule {schedule_id!r} was deleted") from None
    except NotTheSchedulesRun:
        detail = f"Prefect has no run {body.flow_run_id!r} of schedule {schedule_id!r}"
        raise Problem(409, detail) from None
    if job is None:
        raise Problem(404, f"No schedule {schedule_id!r} for tenant {body.tenant!r} (yet)")
    return ScheduledRunJob(job_id=job["id"], status=job["status"])
