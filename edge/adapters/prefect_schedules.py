"""The CrewScheduler port over Prefect's REST API: each schedule is a deployment.

A schedule's deployment is a copy of its crew's own (`run-crew-job/<pool>`: the same
flow, entrypoint, pull steps, work pool and job variables), with the schedule's cron or
interval, its runs' parameters, and the overlap policy as Prefect's deployment
concurrency: `skip` is a limit of one with `CANCEL_NEW` (Prefect cancels a run due
while the last one is active, before it starts), `queue` a limit of one with
`ENQUEUE` (it waits for the slot), `allow` no limit. Prefect's scheduler makes the
runs; edgecrew keeps no timer of its own. Pausing is Prefect's `pause_deployment`,
which deletes the runs it had scheduled (due ones too, unlike a PATCH of `paused`),
and then the runs left that never started (those waiting for the overlap slot, which
Prefect keeps, and which would outlive even the deployment's deletion) are cancelled.
"""

from __future__ import annotations

from typing import Any

from edge.adapters.prefect import PrefectOrchestrator, _epoch, _state
from edge.ports import (
    OrchestratorRejected,
    ScheduledRunInfo,
    ScheduleRefused,
    ScheduleSpec,
    StartedRun,
)

#: What a schedule's deployment takes over from its crew's deployment.
COPIED = (
    "flow_id", "work_pool_name", "work_queue_name", "entrypoint", "path", "pull_steps",
    "job_variables", "parameter_openapi_schema", "enforce_parameter_schema", "version",
    "storage_document_id", "infrastructure_document_id",
)  # fmt: skip
#: Tagged so that Prefect's UI (and an operator's filter) tells them from job runs.
SCHEDULE_TAG = "edgecrew-schedule"
_OVERLAP: dict[str, dict[str, Any]] = {
    "skip": {"concurrency_limit": 1, "concurrency_options": {"collision_strategy": "CANCEL_NEW"}},
    "queue": {"concurrency_limit": 1, "concurrency_options": {"collision_strategy": "ENQUEUE"}},
    "allow": {"concurrency_limit": None, "concurrency_options": None},
}


#: States of a run that may still run: one holding its deployment's concurrency slot (a
#: lease), or a Scheduled-type one (waiting for that slot, or to retry) the pause left.
_ACTIVE = ("PENDING", "RUNNING", "CANCELLING", "PAUSED", "SCHEDULED")
#: Unstarted runs one pause cancels per page, and pages (a `queue` schedule piles up at
#: most one waiting run per due time while its last run runs).
_CANCEL_PAGE = 100
_CANCEL_PAGES = 5


def deployment_name(schedule_id: str) -> str:
    """The schedule's deployment in Prefect, under the crew's flow."""
    return f"schedule-{schedule_id}"


class PrefectCrewScheduler:
    """Shares the orchestrator's client (its connection pool, key and retries)."""

    def __init__(self, prefect: PrefectOrchestrator) -> None:
        self._prefect = prefect

    async def create(self, spec: ScheduleSpec, *, paused: bool) -> str:
        base = await self._prefect.call("GET", f"deployments/name/{spec.deployment}")
        body: dict[str, Any] = {key: base.get(key) for key in COPIED if key in base}
        body.update(
            name=deployment_name(spec.schedule_id),
            description=f"edgecrew schedule {spec.schedule_id}: crew {spec.crew}, "
            f"tenant {spec.tenant}",
            parameters=dict(spec.parameters),
            tags=[*base.get("tags", []), SCHEDULE_TAG, *_tags(spec)],
            schedules=[{"schedule": _schedule(spec), "active": True, "slug": "edgecrew"}],
            paused=paused,
        )
        body.update(_OVERLAP[spec.overlap])
        try:
            # Prefect upserts by flow and name: asked twice, it keeps one deployment.
            made = await self._prefect.call("POST", "deployments/", body)
        except OrchestratorRejected as exc:
            if exc.status_code == 422:
                raise _refusal(exc) from exc
            raise
        return str(made["id"])

    async def set_paused(self, ref: str, paused: bool) -> None:
        action = "pause_deployment" if paused else "resume_deployment"
        await self._prefect.call("POST", f"deployments/{ref}/{action}")
        if paused:
            await self._cancel_unstarted(ref)

    async def _cancel_unstarted(self, ref: str) -> None:
        """Cancel the runs Prefect's pause left that never ran: those waiting for the
        overlap slot (`AwaitingConcurrencySlot`) and any made by hand. Not forced:
        Prefect's rules decide if one started meanwhile. A run waiting to retry
        (`AwaitingRetry`, `run_count` > 0) has started: it goes on, as a run under way does.
        """
        body = {
            "flow_runs": {
                "deployment_id": {"any_": [ref]},
                "state": {"type": {"any_": ["SCHEDULED"]}},
            },
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": _CANCEL_PAGE,
        }
        cancelled = {"type": "CANCELLED", "message": "The edgecrew schedule was paused"}
        for _ in range(_CANCEL_PAGES):
            runs = await self._prefect.call("POST", "flow_runs/filter", body) or []
            unstarted = [run["id"] for run in runs if not run.get("run_count")]
            for run_id in unstarted:
                await self._prefect.call("POST", f"flow_runs/{run_id}/set_state",
                                         {"state": cancelled})  # fmt: skip
            if len(runs) < _CANCEL_PAGE or not unstarted:
                return

    async def delete(self, ref: str) -> None:
        try:
            await self._prefect.call("DELETE", f"deployments/{ref}")
        except OrchestratorRejected as exc:
            if exc.status_code != 404:  # gone already: what was asked
                raise

    async def has_active_runs(self, ref: str) -> bool:
        body = {
            "flow_runs": {
                "deployment_id": {"any_": [ref]},
                "state": {"type": {"any_": list(_ACTIVE)}},
            },
            "limit": 1,
        }
        return bool(await self._prefect.call("POST", "flow_runs/filter", body))

    async def next_runs(self, ref: str, limit: int) -> list[float]:
        body = {
            "flow_runs": {
                "deployment_id": {"any_": [ref]},
                "state": {"type": {"any_": ["SCHEDULED"]}},
            },
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": limit,
        }
        runs = await self._prefect.call("POST", "flow_runs/filter", body)
        due = (_epoch(run.get("expected_start_time")) for run in runs or [])
        return [moment for moment in due if moment is not None]

    async def run_info(self, run_id: str) -> ScheduledRunInfo | None:
        try:
            run = await self._prefect.call("GET", f"flow_runs/{run_id}")
        except OrchestratorRejected as exc:
            if exc.status_code in (404, 422):  # no such run; 422: not even a UUID
                return None
            raise
        return _info(run)

    async def started_runs(self, *, after: str, before: str, limit: int) -> list[StartedRun]:
        """By the runs' `start_time`, which Prefect also gives a run that ends without
        running (a skipped or cancelled one: its `run_count` stays 0). The deployments
        are told by the tag every schedule's deployment has."""
        body = {
            "flow_runs": {"start_time": {"after_": after, "before_": before, "is_null_": False}},
            "deployments": {"tags": {"all_": [SCHEDULE_TAG]}},
            "sort": "START_TIME_ASC",
            "limit": limit,
        }
        runs = await self._prefect.call("POST", "flow_runs/filter", body) or []
        return [
            StartedRun(info=_info(run), state=_state(run), started_at=str(run["start_time"]),
                       run_count=int(run.get("run_count") or 0))
            for run in runs
            if run.get("start_time")
        ]  # fmt: skip


def _info(run: dict[str, Any]) -> ScheduledRunInfo:
    deployment = run.get("deployment_id")
    parameters = run.get("parameters")
    return ScheduledRunInfo(
        deployment_ref=str(deployment) if deployment else None,
        parameters=parameters if isinstance(parameters, dict) else {},
    )


def _tags(spec: ScheduleSpec) -> list[str]:
    return [f"tenant:{spec.tenant}", f"crew:{spec.crew}", f"schedule:{spec.schedule_id}"]


def _schedule(spec: ScheduleSpec) -> dict[str, Any]:
    if spec.cron is not None:
        return {"cron": spec.cron, "timezone": spec.timezone}
    return {"interval": spec.interval_seconds, "timezone": spec.timezone}


def _refusal(exc: OrchestratorRejected) -> ScheduleRefused:
    """Prefect's 422, naming the request field it refused when it says which."""
    errors = exc.detail.get("exception_detail") if isinstance(exc.detail, dict) else None
    # By the message, not the location: the schedule is a union, and Prefect reports
    # each member's complaints (a cron body is "missing interval" to IntervalSchedule).
    for error in errors if isinstance(errors, list) else []:
        msg = str(error.get("msg") or "") if isinstance(error, dict) else ""
        for field, says in (("timezone", "invalid timezone"), ("cron", "invalid cron")):
            if says in msg.lower():
                return ScheduleRefused(f"Prefect refused the {field}: {msg}", field=field)
    return ScheduleRefused(f"Prefect refused the schedule: {exc}", field=None)
