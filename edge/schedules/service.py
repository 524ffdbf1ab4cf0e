"""The schedules core: create, read, list, pause, resume, delete; take a run as a job.

A schedule is a Prefect deployment of its crew's flow (`Ports.scheduler`): Prefect's
scheduler makes the runs and its deployment concurrency applies the overlap policy.
Each run, when it starts, registers at the edge (`register_run`, a signed call from
the flow) and from then on is an ordinary job of the schedule's tenant, with the
schedule's webhook and a link back to it. The edge keeps the schedule's record in KV.

Creation touches Prefect before KV: the deployment is made paused, started, and only
then recorded, so a failure part-way leaves no record, and the deployment it made is
removed (or, if Prefect is away for that too, left paused or finding no record: its
runs register nothing and end). A retry under the same Idempotency-Key makes the same
deployment (Prefect upserts it by name) and finishes the job.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from edge.jobs.catalog import get_crew
from edge.jobs.ids import fingerprint, new_schedule_id, schedule_id_for_key, scheduled_job_id
from edge.jobs.service import JobService
from edge.jobs.tenant_webhooks import webhook_for_job
from edge.ports import (
    CrewScheduler,
    DependencyUnavailable,
    InvalidCursor,
    OrchestratorRejected,
    Ports,
    ScheduledRunInfo,
    ScheduleSpec,
)
from edge.schedules.adoption import LostRunAdopter
from edge.schedules.store import ScheduleStore, index_key
from shared.crews import CrewSpec
from shared.jobs import DEFAULT_WEBHOOK_EVENTS
from shared.timestamps import rfc3339

log = logging.getLogger("edgecrew.schedules")

#: How many upcoming runs `GET /v1/schedules/{id}` shows.
NEXT_RUNS_SHOWN = 3
#: `schedule-deleting:{deployment ref}`: a deleted schedule's deployment, paused, that
#: `ScheduleService.sweep` removes once its last run has ended. The value names the
#: schedule (`{"tenant", "id"}`), so the sweep can tell that a schedule made again
#: under the same id (its tombstone expired) owns that deployment once more.
DELETING_PREFIX = "schedule-deleting:"
#: How long a deletion marker is kept at most: a run holding its deployment that long
#: (past any job deadline) is left to an operator, and so is the paused deployment.
MARKER_SECONDS = 7 * 86400
#: A marker this young whose schedule is live is a delete under way, not a failed one.
DELETE_GRACE_SECONDS = 300
SWEEP_CURSOR_KEY = "schedule-sweep:cursor"
#: Deployments one sweep looks at: each costs up to two Prefect calls (3 tries each),
#: two KV reads (its schedule's record; the marker when the listing had no metadata)
#: and a KV delete.
SWEEP_BATCH = 10
SWEEP_COST_PER_MARKER = 2 * 3 + 2 + 1
#: The calls a sweep may make (the cursor's read and write, the listing, the markers):
#: the share of a Cloudflare cron invocation's subrequests the reconciler leaves to it.
SWEEP_BUDGET = 3 + SWEEP_BATCH * SWEEP_COST_PER_MARKER
#: What a run's parameters must look like to name a schedule (as the API's ids and
#: tenants do), before they are used in a key.
_TENANT = re.compile(r"[A-Za-z0-9_-]{1,48}")
SCHEDULE_ID = re.compile(r"sch_[0-9a-z]{26}")
PUBLIC_FIELDS = (
    "id", "crew", "inputs", "cron", "interval_seconds", "timezone", "overlap", "webhook",
    "metadata", "deadline_seconds", "paused", "created_at", "updated_at",
)  # fmt: skip


class ScheduleKeyReused(Exception):
    """The Idempotency-Key made a schedule before, from a different request body."""


class ScheduleKeyDeleted(Exception):
    """The Idempotency-Key made a schedule that was deleted since (within a day)."""


class ScheduleLimitReached(Exception):
    """The tenant has as many live schedules as the edge allows
    (`EDGECREW_MAX_SCHEDULES_PER_TENANT`); `limit` is that number."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the tenant has {limit} schedules, the most allowed")
        self.limit = limit


class ScheduleGone(Exception):
    """The schedule was deleted: a run that started before that makes no job."""


class NotTheSchedulesRun(Exception):
    """The flow run named is not a run of this schedule's deployment (for this tenant)."""


class ScheduleService:
    def __init__(
        self, ports: Ports, jobs: JobService, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._ports = ports
        self._jobs = jobs
        self._clock = clock
        self.store = ScheduleStore(ports.kv)
        self.adopter = LostRunAdopter(self, jobs, ports.kv, clock=lambda: self._clock())

    @property
    def scheduler(self) -> CrewScheduler:
        if self._ports.scheduler is None:
            raise DependencyUnavailable("scheduler", "EDGECREW_PREFECT_API_URL is not set", 60)
        return self._ports.scheduler

    async def create(
        self, tenant: str, request: Mapping[str, Any], idempotency_key: str | None,
        *, crew: CrewSpec,
    ) -> tuple[dict[str, Any], bool]:  # fmt: skip
        """Make the schedule in Prefect, then record it; (schedule, created).
        ScheduleLimitReached, making nothing, when the tenant has its most already."""
        if idempotency_key and (existing := await self.replay(tenant, request, idempotency_key)):
            return existing, False
        await self._check_cap(tenant)
        now = self._clock()
        schedule_id = (
            schedule_id_for_key(tenant, idempotency_key) if idempotency_key else new_schedule_id()
        )
        spec = ScheduleSpec(
            schedule_id=schedule_id,
            tenant=tenant,
            crew=crew.name,
            deployment=crew.deployment,
            parameters=run_parameters(tenant, crew.name, request["inputs"], schedule_id),
            cron=request.get("cron"),
            interval_seconds=request.get("interval_seconds"),
            timezone=request["timezone"],
            overlap=request["overlap"],
        )
        ref = await self.scheduler.create(spec, paused=True)
        # Prefect upserts by name: the deployment may be one a delete of a schedule of
        # this id left for the sweep (the same key, its tombstone expired). Ours now.
        await self._ports.kv.delete(DELETING_PREFIX + ref)
        record = {
            "id": schedule_id,
            "tenant": tenant,
            "crew": crew.name,
            "pool": crew.pool,
            "flow": crew.flow,
            "inputs": request["inputs"],
            "cron": spec.cron,
            "interval_seconds": spec.interval_seconds,
            "timezone": spec.timezone,
            "overlap": spec.overlap,
            "webhook": _webhook(request.get("webhook")),
            "metadata": request.get("metadata") or {},
            "deadline_seconds": request.get("deadline_seconds"),
            "paused": False,
            "created_at": rfc3339(now),
            "updated_at": rfc3339(now),
            "fingerprint": fingerprint(request),
            "deployment_ref": ref,
            "index_key": index_key(tenant, int(now * 1000), schedule_id),
        }
        try:
            await self.scheduler.set_paused(ref, False)
            await self.store.save(record)
        except (DependencyUnavailable, OrchestratorRejected):
            await self._discard(ref)
            await self.store.forget_entry(record)
            raise
        return record, True

    async def _check_cap(self, tenant: str) -> None:
        """Refuse a new schedule past the tenant's cap. Counted from the KV index, so two
        creates at once (or at two Cloudflare locations within KV's minute) may both
        pass it: a bound on what a tenant piles up in Prefect, not an exact quota."""
        cap = self._jobs.settings.max_schedules_per_tenant
        if cap and await self.store.count(tenant, up_to=cap) >= cap:
            raise ScheduleLimitReached(cap)

    async def replay(
        self, tenant: str, request: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, Any] | None:
        """The schedule this key made already, if any (ScheduleKeyReused for another body,
        ScheduleKeyDeleted when that schedule was deleted: the key's answer was a schedule
        that is gone, and a new one needs a new key)."""
        found = await self.store.get(tenant, schedule_id_for_key(tenant, idempotency_key))
        if found is None:
            return None
        if found.get("deleted_at"):
            raise ScheduleKeyDeleted(found["id"])
        if found["fingerprint"] != fingerprint(request):
            raise ScheduleKeyReused(found["id"])
        return found

    async def get(self, tenant: str, schedule_id: str) -> dict[str, Any] | None:
        """The schedule with its next runs (None in `next_runs` when Prefect did not say)."""
        schedule = await self._live(tenant, schedule_id)
        if schedule is None:
            return None
        try:
            due = await self.scheduler.next_runs(schedule["deployment_ref"], NEXT_RUNS_SHOWN)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("next runs of %s unknown: %s", schedule_id, exc)
            return {**schedule, "next_runs": None}
        return {**schedule, "next_runs": [rfc3339(moment) for moment in due]}

    async def set_paused(
        self, tenant: str, schedule_id: str, paused: bool
    ) -> dict[str, Any] | None:
        """Pause (Prefect drops the runs it had scheduled) or resume; None if unknown,
        deleted, or (for a resume) being deleted."""
        schedule = await self._live(tenant, schedule_id)
        if schedule is None:
            return None
        ref = schedule["deployment_ref"]
        if not paused and await self._deleting(ref):
            return None  # a resume must not start a deployment a delete has stopped
        await self.scheduler.set_paused(ref, paused)
        # KV has no compare-and-set: a delete may have landed while Prefect was asked.
        # Read again just before writing, so that the tombstone is not overwritten, and
        # undo a resume that raced it (the delete's pause may have come first).
        current = await self._live(tenant, schedule_id)
        if current is None or await self._deleting(ref):
            if not paused:
                await self._repause(ref)
            return None
        if current["paused"] != paused:
            current = {**current, "paused": paused, "updated_at": rfc3339(self._clock())}
            await self.store.save(current)
        return current

    async def delete(self, tenant: str, schedule_id: str) -> bool:
        """Stop the schedule and remove its deployment (and the runs it scheduled), then
        its record.

        A deployment with a run under way is only paused now and removed by a later
        `sweep`, once that run has ended: Prefect 3.9 cannot end a run whose deployment
        (and so its concurrency limit) was deleted while the run held a slot of it
        (every state change is a 500: "Failed to release concurrency slots for lease").
        """
        schedule = await self._live(tenant, schedule_id)
        if schedule is None:
            return False
        ref = schedule["deployment_ref"]
        # The marker first: from now on a resume refuses, and one racing this undoes
        # itself; a run starting now makes no job. The sweep finishes what this leaves.
        marker = DELETING_PREFIX + ref
        owner = {"tenant": tenant, "id": schedule_id, "since": self._clock()}
        await self._ports.kv.put(
            marker, json.dumps(owner), ttl_seconds=MARKER_SECONDS, metadata=owner
        )
        try:
            await self._stop(ref)
        except (DependencyUnavailable, OrchestratorRejected):
            # Not deleted (a 503, to retry): the schedule is live, so is its runs'
            # registration (the sweep would drop a marker left here, after its grace).
            await self._ports.kv.delete(marker)
            raise
        now = self._clock()
        await self.store.bury({**schedule, "deleted_at": rfc3339(now), "updated_at": rfc3339(now)})
        return True

    async def sweep(self, *, limit: int = SWEEP_BATCH) -> int:
        """Remove the deployments of deleted schedules whose last runs have ended (the
        reconciler's timer calls this); how many it removed.

        One page of markers per call, from a cursor kept in KV: markers whose runs go on
        stay, and must not hold back the ones after them.
        """
        kv = self._ports.kv
        cursor = await kv.get(SWEEP_CURSOR_KEY) or None
        try:
            page = await kv.list(prefix=DELETING_PREFIX, limit=limit, cursor=cursor)
        except InvalidCursor:  # expired, or from another listing: start over
            page = await kv.list(prefix=DELETING_PREFIX, limit=limit)
        removed = 0
        for key in page.keys:
            if await self._sweep_one(key.name, key.metadata):
                removed += 1
        if page.cursor is None:
            await kv.delete(SWEEP_CURSOR_KEY)
        else:
            await kv.put(SWEEP_CURSOR_KEY, page.cursor, ttl_seconds=86400)
        return removed

    async def _sweep_one(self, marker: str, metadata: Mapping[str, object] | None) -> bool:
        ref = marker.removeprefix(DELETING_PREFIX)
        owner = await self._owner(marker, metadata)
        if owner is not None and await self._owns(owner, ref):
            if self._clock() - owner["since"] < DELETE_GRACE_SECONDS:
                return False  # a delete under way (it writes the marker first)
            # A delete that failed part-way (the client got a 503), or a schedule made
            # again under the same id: the deployment is a live schedule's.
            log.info("deployment %s belongs to a live schedule; kept", ref)
            await self._ports.kv.delete(marker)
            return False
        try:
            if await self.scheduler.has_active_runs(ref):
                return False
            await self.scheduler.delete(ref)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("deployment %s of a deleted schedule stays for now: %s", ref, exc)
            return False
        await self._ports.kv.delete(marker)
        return True

    async def register_run(
        self, tenant: str, schedule_id: str, flow_run_id: str
    ) -> dict[str, Any] | None:
        """The job a starting run of the schedule is (made now, or found: once per run).

        None when the schedule is not known here (yet: KV may not show a new one for a
        minute); ScheduleGone when it was deleted.
        """
        schedule = await self.store.get(tenant, schedule_id)
        if schedule is None:
            return None
        if await self.gone(schedule):
            raise ScheduleGone(schedule_id)
        # The signature says the executor sent this, not that the run is the schedule's:
        # the orchestrator does (else any run could be attached to, and cancelled as, a
        # job of this tenant).
        run = await self.scheduler.run_info(flow_run_id)
        if run is None or not is_run_of(run, schedule):
            raise NotTheSchedulesRun(flow_run_id)
        return await self.take_run(schedule, flow_run_id)

    async def adopt_lost_runs(self, **options: int) -> int:
        """Make jobs of the runs whose registration was lost (`edge.schedules.adoption`);
        nothing to look for on an edge without Prefect."""
        if self._ports.scheduler is None:
            return 0
        return await self.adopter.run(**options)

    def owner_of(self, run: ScheduledRunInfo) -> tuple[str, str] | None:
        """(tenant, schedule id) as a run's parameters name them, if they can."""
        tenant, schedule_id = run.parameters.get("tenant"), run.parameters.get("schedule_id")
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            return None
        if not isinstance(schedule_id, str) or not SCHEDULE_ID.fullmatch(schedule_id):
            return None
        return tenant, schedule_id

    async def schedule_of(self, run: ScheduledRunInfo) -> dict[str, Any] | None:
        """The live schedule the orchestrator shows the run as a run of; None when there
        is none (unknown here, deleted, being deleted, or not the run's deployment)."""
        owner = self.owner_of(run)
        schedule = None if owner is None else await self.store.get(*owner)
        if schedule is None or await self.gone(schedule) or not is_run_of(run, schedule):
            return None
        return schedule

    async def gone(self, schedule: Mapping[str, Any]) -> bool:
        """Deleted, or being deleted (the deployment paused, awaiting the sweep): its
        runs make no job."""
        if schedule.get("deleted_at"):
            return True
        return await self._deleting(schedule["deployment_ref"])

    async def take_run(self, schedule: Mapping[str, Any], flow_run_id: str) -> dict[str, Any]:
        """The job of a run of the live `schedule` (checked to be its run), made once:
        the registration's, and the reconciler's for a run whose registration was lost
        (`edge.schedules.adoption`)."""
        tenant, schedule_id = schedule["tenant"], schedule["id"]
        # The catalog's entry now, for the version; the schedule's own pool and flow
        # when the crew left the catalog (the run exists: it is a job all the same).
        crew = await get_crew(self._ports.kv, schedule["crew"]) or CrewSpec(
            name=schedule["crew"], description="", pool=schedule["pool"],
            inputs={"type": "object"}, flow=schedule["flow"],
        )  # fmt: skip
        request = {
            "crew": schedule["crew"],
            "inputs": schedule["inputs"],
            "webhook": schedule["webhook"],
            "metadata": schedule["metadata"],
        }
        if schedule.get("deadline_seconds"):  # from the run's start: when the job is made
            request["deadline_seconds"] = schedule["deadline_seconds"]
        job_id = scheduled_job_id(tenant, flow_run_id)
        # A schedule that names no webhook: its runs get the tenant's default as it is
        # now, as a submitted job would (not refused here, unlike at submit: the run is
        # under way, and a default the guard now refuses is logged on its deliveries).
        default = None if schedule["webhook"] else await webhook_for_job(self._ports.kv, tenant)
        return await self._jobs.adopt_run(
            tenant, job_id, request, crew=crew, run_id=flow_run_id, schedule_id=schedule_id,
            default_webhook=default,
        )  # fmt: skip

    async def _stop(self, ref: str) -> None:
        """Pause the deployment, and remove it now unless a run is under way (the
        marker then stays, for the sweep)."""
        try:
            await self.scheduler.set_paused(ref, True)
        except OrchestratorRejected as exc:
            if exc.status_code != 404:
                raise
            # Removed in Prefect already (by hand, say): nothing left to stop there.
        else:
            if await self.scheduler.has_active_runs(ref):
                return
            await self.scheduler.delete(ref)
        await self._ports.kv.delete(DELETING_PREFIX + ref)

    async def _deleting(self, ref: str) -> bool:
        return await self._ports.kv.get(DELETING_PREFIX + ref) is not None

    async def _owner(
        self, marker: str, metadata: Mapping[str, object] | None = None
    ) -> dict[str, Any] | None:
        """The schedule a deletion marker names (`{"tenant", "id", "since"}`: its KV
        metadata, which the listing brings, or else its value)."""
        owner: Any = dict(metadata) if metadata else None
        if owner is None:
            raw = await self._ports.kv.get(marker)
            try:
                owner = json.loads(raw) if raw else None
            except ValueError:
                return None
        if not isinstance(owner, dict):
            return None
        since = owner.get("since")
        return {"tenant": str(owner.get("tenant")), "id": str(owner.get("id")),
                "since": float(since) if isinstance(since, int | float) else 0.0}  # fmt: skip

    async def _owns(self, owner: Mapping[str, Any], ref: str) -> bool:
        """Whether the schedule is live and its deployment is `ref`."""
        live = await self._live(owner["tenant"], owner["id"])
        return live is not None and live.get("deployment_ref") == ref

    async def _repause(self, ref: str) -> None:
        try:
            await self.scheduler.set_paused(ref, True)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("could not pause again the deployment %s a delete stopped: %s", ref, exc)

    async def _live(self, tenant: str, schedule_id: str) -> dict[str, Any] | None:
        found = await self.store.get(tenant, schedule_id)
        return None if found is None or found.get("deleted_at") else found

    async def _discard(self, ref: str) -> None:
        """Best effort: a half-made schedule's deployment goes (a paused one makes no runs)."""
        try:
            await self.scheduler.delete(ref)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("could not remove the deployment %s of a failed create: %s", ref, exc)


def is_run_of(run: ScheduledRunInfo, schedule: Mapping[str, Any]) -> bool:
    """Whether the orchestrator shows the run as one of the schedule's deployment, with
    its tenant and schedule id."""
    return bool(
        run.deployment_ref == schedule["deployment_ref"]
        and run.parameters.get("tenant") == schedule["tenant"]
        and run.parameters.get("schedule_id") == schedule["id"]
    )


def run_parameters(
    tenant: str, crew: str, inputs: Mapping[str, Any], schedule_id: str
) -> dict[str, Any]:
    """The flow parameters of every run: no job id (the run gets one when it registers)."""
    return {"job_id": "", "tenant": tenant, "crew": crew, "inputs": dict(inputs),
            "schedule_id": schedule_id}  # fmt: skip


def public(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule as the API shows it: no tenant, fingerprint or Prefect internals."""
    view = {field: schedule.get(field) for field in PUBLIC_FIELDS}
    view["next_runs"] = schedule.get("next_runs")
    base = f"/v1/schedules/{schedule['id']}"
    view["urls"] = {"self": base, "pause": f"{base}/pause", "resume": f"{base}/resume",
                    "jobs": f"/v1/jobs?schedule_id={schedule['id']}"}  # fmt: skip
    return view


def _webhook(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    return {"url": raw["url"], "events": list(raw.get("events") or DEFAULT_WEBHOOK_EVENTS)}
