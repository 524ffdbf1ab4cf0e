"""Runs of schedules whose registration was lost: found in Prefect and made jobs.

A schedule's run becomes a job when it registers at the edge (`ScheduleService.
register_run`, a signed call from the flow). If the edge does not answer then (down, or
unreachable from the worker, through every retry of the executor and of the flow), the
flow fails before its crew runs (`executor/flows.py`: the crew never runs without a
job), and Prefect has a failed run nobody was told of. After each reconciler pass this
looks, from a watermark kept in KV, at the runs of schedules' deployments that started
since, and adopts those that ran, did not complete, and have no job: the same
`take_run` the registration uses, so a run adopted twice, or adopted and registered, is
one job. The run's state is then applied at once, so a failed run's job fails and its
webhook goes.

A run is looked at once, when it started `EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS` (180)
ago: a registration waits out KV's minute, so one under way is not raced for nothing
(one raced anyway finds the job this made). Passed over without a read, as needing none:
- a run that never ran (`run_count` 0: skipped by `overlap: skip`, cancelled by a pause
  or a delete), as at registration, which such a run never reaches;
- a completed run: it registered (its job has its result) or the edge told it to do
  nothing (its schedule was deleted, or unknown after the flow's wait).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.jobs.ids import scheduled_job_id
from edge.jobs.reconciler import COST_CHANGE, COST_PREFECT_READ, COST_READ
from edge.ports import (
    DependencyUnavailable,
    KeyValueStore,
    OrchestratorRejected,
    RunPhase,
    StartedRun,
)
from shared.timestamps import rfc3339

if TYPE_CHECKING:
    from edge.jobs.service import JobService
    from edge.schedules.service import ScheduleService

log = logging.getLogger("edgecrew.schedules")

#: Where the next pass starts: the start time (Prefect's own RFC 3339) of the last run
#: looked at, or the end of the last window that had no more runs; kept a month.
WATERMARK_KEY = "schedule-adopt:since"
WATERMARK_SECONDS = 30 * 86400
#: With no watermark (the first pass ever, or none for a month): how far back to look.
FIRST_LOOK_SECONDS = 86400
#: Runs one Prefect call lists.
PAGE = 50
#: What one run can cost: the ledger read that finds its job (and the read of KV's copy
#: when the ledger has none); its schedule's record and deletion marker; its adoption
#: (the catalog and the tenant's default webhook, the ledger's create and KV's copy, the
#: change to `queued`) and the change its run's state makes.
COST_JOB_LOOKUP = 2 * COST_READ
COST_SCHEDULE = 2 * COST_READ
COST_ADOPT = 2 * COST_READ + 3 * COST_CHANGE
COST_WORST_RUN = COST_JOB_LOOKUP + COST_SCHEDULE + COST_ADOPT
#: A pass's share of the cron invocation's subrequests (the watermark's read and write,
#: one page, three adoptions at their worst); `edge.handlers.reconcile` leaves it aside.
ADOPT_BUDGET = 2 + COST_PREFECT_READ + 3 * COST_WORST_RUN


class LostRunAdopter:
    def __init__(
        self,
        schedules: ScheduleService,
        jobs: JobService,
        kv: KeyValueStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._schedules = schedules
        self._jobs = jobs
        self._kv = kv
        self._clock = clock

    async def run(self, *, budget: int = ADOPT_BUDGET, page: int = PAGE) -> int:
        """One pass, within `budget` calls; how many runs it made jobs of. Prefect away:
        the watermark stays where it was."""
        left = budget - 2  # the watermark's read and write
        now = self._clock()
        since = await self._kv.get(WATERMARK_KEY) or _stamp(now - FIRST_LOOK_SECONDS)
        until = _stamp(now - self._jobs.settings.schedule_adopt_after_seconds)
        adopted = 0
        while left >= COST_PREFECT_READ + COST_WORST_RUN:
            left -= COST_PREFECT_READ
            try:
                runs = await self._schedules.scheduler.started_runs(
                    after=since, before=until, limit=page
                )
            except (DependencyUnavailable, OrchestratorRejected) as exc:
                log.warning("could not look for schedule runs without a job: %s", exc)
                break
            start, looked = since, 0
            for run in runs:
                if left < COST_WORST_RUN:  # what it needs is known once it is read
                    break  # the rest next pass, from the last one looked at
                made, spent = await self._look_at(run)
                adopted, left = adopted + made, left - spent
                since, looked = run.started_at, looked + 1
            if looked == len(runs) < page:
                since = until  # the window is seen to its end
            # `since` is inclusive (the last run is looked at again: it has its job by
            # then); a full page of runs that all started at one moment would give no
            # way on, and is left for the next pass.
            if looked < page or since == start:
                break
        await self._kv.put(WATERMARK_KEY, since, ttl_seconds=WATERMARK_SECONDS)
        return adopted

    async def _look_at(self, run: StartedRun) -> tuple[int, int]:
        """Adopt the run if it needs a job and has none: (runs adopted, 0 or 1; the
        calls it may have taken, as charged)."""
        if run.run_count == 0 or run.state.phase is RunPhase.SUCCEEDED:
            return 0, 0
        owner = self._schedules.owner_of(run.info)
        if owner is None:
            return 0, 0
        tenant, run_id = owner[0], run.state.run_id
        if await self._jobs.current(tenant, scheduled_job_id(tenant, run_id)) is not None:
            return 0, COST_JOB_LOOKUP  # it registered: a job like any other
        schedule = await self._schedules.schedule_of(run.info)
        if schedule is None:  # unknown, deleted or being deleted: no job, as at registration
            return 0, COST_JOB_LOOKUP + COST_SCHEDULE
        job = await self._schedules.take_run(schedule, run_id)
        log.warning(
            "run %s of schedule %s never registered (%s in Prefect): adopted as job %s",
            run_id, schedule["id"], run.state.name, job["id"],
        )  # fmt: skip
        await self._jobs.apply_run_state(job, run.state)
        return 1, COST_WORST_RUN


def _stamp(moment: float) -> str:
    return rfc3339(moment, timespec="microseconds")
