"""The reconciler: a pass over the jobs that have not ended, within a subrequest budget.

Callbacks carry a job forward; the reconciler catches what they missed. Each pass it
hands over jobs Prefect never took, cancels jobs past their deadline, and reads the runs
of jobs nobody heard of for a while (batched), ending those whose run ended, crashed or
vanished and unsticking runs whose worker is gone. On Cloudflare it runs from the cron
trigger; locally, from a background loop (`edge/local/background.py`).

The per-job moves are `JobService`'s (they are job changes like any other); this module
decides which job needs which, and what a pass may spend.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edge.ports import DependencyUnavailable, InvalidCursor, OrchestratorRejected
from shared.jobs import JobStatus
from shared.timestamps import parse_rfc3339

if TYPE_CHECKING:
    from edge.jobs.service import JobService

log = logging.getLogger("edgecrew.reconciler")

#: Of the 1,000 subrequests (KV calls, Durable Object calls and fetches alike) a Worker
#: invocation may make, what one reconciler pass may spend, and the worst case of each
#: thing it does: read a job record; change a job (the ledger change, the delivery queue,
#: record + index + active-list writes, the ledger read that confirms the copy and the
#: same writes again if a newer change landed meanwhile; or, when it changed nothing,
#: the read of KV's copy and that copy's repair; plus, once, the adoption of a record
#: from before the ledger); hand a job to Prefect (its crew's pool from the catalog for a
#: record older than the catalog, deployment lookup, create, then two changes); one
#: Prefect request (each is tried up to 3 times); unstick a run (read it, read its pool's
#: workers, re-read it, set its state, read it).
RECONCILE_BUDGET = 800
PREFECT_ATTEMPTS = 3
COST_READ = 1
COST_CHANGE = 14
COST_HAND_OVER = COST_READ + 2 * PREFECT_ATTEMPTS + 2 * COST_CHANGE
COST_PREFECT_READ = PREFECT_ATTEMPTS
COST_RECOVER = 5 * PREFECT_ATTEMPTS
#: A stale job whose run is suspended for a person: an answer Prefect did not get handed
#: over (the ledger read it is decided on, the resume, the change that clears it), or a
#: question whose `waiting` was lost read from the run and applied (`edge.jobs.human_input`).
COST_HAND_ANSWER = COST_READ + COST_PREFECT_READ + COST_CHANGE
COST_LOST_QUESTION = COST_PREFECT_READ + COST_CHANGE
#: A stale job at its worst: a change and an unstick (or one of the moves above), and its
#: own read if the batched one is refused.
COST_STALE = (
    max(COST_CHANGE + COST_RECOVER, COST_HAND_ANSWER, COST_LOST_QUESTION) + COST_PREFECT_READ
)
#: A job past its deadline at its worst: the change that records why it is cancelled, a
#: cancel of a job not handed over that finds it handed over meanwhile (a change that
#: changes nothing), the run's cancel (read, set state, read), an unstick of a run whose
#: cancel no live worker confirms, and the change that ends the job. (A job cancelled
#: before Prefect's answer came costs less: a catalog read, a run lookup and a cancel.)
COST_DEADLINE = 3 * COST_CHANGE + 3 * PREFECT_ATTEMPTS + COST_RECOVER
#: What a pass keeps room for before it reads the next job: it cannot tell which of
#: these the job needs until it has read it.
COST_WORST_JOB = max(COST_HAND_OVER, COST_STALE, COST_DEADLINE)
RECONCILE_CURSOR_KEY = "reconciler:cursor"


class Reconciler:
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    async def run(self, *, batch: int = 50, budget: int = RECONCILE_BUDGET) -> dict[str, int]:
        """One pass over non-terminal jobs, within `budget` storage and network calls.

        A Worker invocation may make 1,000 subrequests (KV calls and fetches alike): with
        thousands of active jobs an unbounded pass would fail part-way every minute and
        never reach the jobs at the end. So each action is charged its worst-case cost
        up front, a pass stops when the next one may not fit, and the next pass resumes
        from a cursor kept in KV (saved after every page). Stale runs are read from
        Prefect in batches, not one by one. Returns counts for logs and tests.
        """
        kv = self._jobs.store.kv
        counts = {"checked": 0, "changed": 0}
        pass_ = _Budget(budget - 1)
        cursor = await kv.get(RECONCILE_CURSOR_KEY) or None
        while pass_.allows(1 + batch * COST_READ + COST_CHANGE + 1):
            page_start = cursor
            pass_.charge(1)
            try:
                pairs, cursor = await self._jobs.store.active(limit=batch, cursor=cursor)
            except InvalidCursor:  # expired or from another listing: start over
                page_start = None
                pairs, cursor = await self._jobs.store.active(limit=batch, cursor=None)
            if not await self._page(pairs, counts, pass_):
                cursor = page_start  # ran out mid-page: this page again next time
            pass_.charge(1)
            if cursor is None:
                await kv.delete(RECONCILE_CURSOR_KEY)
                break
            await kv.put(RECONCILE_CURSOR_KEY, cursor, ttl_seconds=86400)
            if cursor == page_start:
                break
        return counts

    async def _page(
        self, pairs: list[tuple[str, str]], counts: dict[str, int], pass_: _Budget
    ) -> bool:
        """Reconcile one page of active jobs; False if the budget ran out part-way."""
        jobs = self._jobs
        stale: list[dict[str, Any]] = []
        complete = True
        for tenant, job_id in pairs:
            if not pass_.allows(COST_READ + COST_WORST_JOB + COST_PREFECT_READ):
                complete = False
                break
            pass_.charge(COST_READ)
            job = await jobs.store.get(tenant, job_id)
            if job is None or JobStatus(job["status"]).terminal:
                continue
            if self._past_deadline(job):
                pass_.charge(COST_DEADLINE)
                counts["checked"] += 1
                ended = await jobs.exceed_deadline(job)
                counts["changed"] += ended["status"] != job["status"]
            elif job["flow_run_id"] is None:  # never reached Prefect: hand it over now
                pass_.charge(COST_HAND_OVER)
                counts["checked"] += 1
                handed = await jobs.hand_over(job)
                counts["changed"] += handed["status"] != job["status"]
            elif jobs.quiet_for(job) >= jobs.settings.stale_after_seconds:
                pass_.charge(COST_STALE)  # its run may have moved on, or be stuck
                stale.append(job)
        if stale:
            pass_.charge(COST_PREFECT_READ)
            counts["checked"] += len(stale)
            for job, refreshed in zip(stale, await self._refresh_stale(stale), strict=True):
                counts["changed"] += refreshed["status"] != job["status"]
        return complete

    def _past_deadline(self, job: dict[str, Any]) -> bool:
        deadline = job.get("deadline_at")
        return deadline is not None and parse_rfc3339(deadline) <= self._jobs.now()

    async def _refresh_stale(self, stale: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bring jobs up to date from one batched read of their runs."""
        jobs = self._jobs
        try:
            states = await jobs.orchestrator.read_many([job["flow_run_id"] for job in stale])
        except DependencyUnavailable as exc:
            log.warning("reconciler could not read %d runs: %s", len(stale), exc)
            return stale
        except OrchestratorRejected as exc:  # the batch refused: one run at a time
            log.warning("batched read refused (%s); reading runs one by one", exc)
            return [await jobs.refresh(job, unstick=True) for job in stale]
        refreshed = []
        for job in stale:
            state = states.get(job["flow_run_id"])
            if state is None:  # not in Prefect's answer: it no longer has the run
                refreshed.append(await jobs.lost(job, "not found"))
            else:
                refreshed.append(await jobs.apply_run_state(job, state, unstick=True))
        return refreshed


class _Budget:
    """Calls left to a reconciler pass."""

    def __init__(self, calls: int) -> None:
        self.left = calls

    def allows(self, cost: int) -> bool:
        return self.left >= cost

    def charge(self, cost: int) -> None:
        self.left -= cost
