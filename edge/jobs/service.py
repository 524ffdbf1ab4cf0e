"""The jobs core: submit, read, list, cancel, apply executor events, reconcile.

Prefect is the source of truth for execution; the job ledger (`Ports.ledger`: a Durable
Object per job on Cloudflare, SQLite locally) holds the edge's view of it, and every
change to a job is one atomic ledger change (`shared.jobs.apply_change`), so writers
that race (two first requests under one key, a callback and a reconciler pass) never
undo each other. Workers KV keeps a copy for reads and listings, written after the
ledger (docs/reliability.md says what a reader sees). A `202` is a promise: the job is
recorded before anything else happens, and a job Prefect did not take yet stays
`submitting` until the reconciler submits it with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from edge.jobs.catalog import get_crew
from edge.jobs.events import JobChanges
from edge.jobs.human_input import (
    NotAnswerable,
    answer_to_hand_over,
    question_to_answer,
    resumed_elsewhere,
    run_input,
    timed_out,
    unheard_question,
    waiting_event,
)
from edge.jobs.ids import fingerprint, job_id_for_key, new_job_id
from edge.jobs.reconciler import Reconciler
from edge.jobs.records import (
    JobRecord,
    Webhook,
    delivery_message,
    new_job_record,
    submit_message,
)
from edge.jobs.store import JobStore, index_key
from edge.ports import (
    DependencyUnavailable,
    JobLedger,
    Orchestrator,
    OrchestratorRejected,
    Ports,
    RunPhase,
    RunState,
)
from edge.settings import Settings
from shared.crews import FLOW_NAME, CrewSpec
from shared.jobs import JobStatus, webhook_event_for
from shared.timestamps import rfc3339

log = logging.getLogger("edgecrew.jobs")

#: A run held by a worker whose liveness Prefect cannot tell (no label, no claim message)
#: is recovered only after this many times the timeout, as a last resort.
UNKNOWN_HOLDER_FACTOR = 10
#: How long a run may sit COMPLETED in Prefect without its result reaching the edge.
RESULT_GRACE_SECONDS = 600
#: Hand-overs to Prefect in flight in this process before new jobs go through the queue:
#: an idle edge starts jobs at once, a burst is accepted at KV speed and fed to Prefect at
#: the pace it can take.
DIRECT_SUBMISSIONS = 8
#: How long a request may wait for Prefect before the job is left to the queue.
SUBMIT_BUDGET_SECONDS = 2.0
#: `Prefer: wait` reads the job's ledger after 0.25 s, then at twice the pause each time
#: up to 1 s: a job ending during a wait is answered within a second, and a 60 s wait
#: reads the ledger at most 63 times (on Cloudflare each read is one of the invocation's
#: 1,000 subrequests; the waiting itself costs no CPU time).
WAIT_FIRST_POLL_SECONDS = 0.25
WAIT_MAX_POLL_SECONDS = 1.0
PUBLIC_FIELDS = (
    "id", "crew", "crew_version", "status", "inputs", "metadata", "created_at", "updated_at",
    "progress", "result", "error", "deadline_at", "input_request", "schedule_id",
    "deliveries",
)  # fmt: skip
#: The statuses a deadline can still cancel.
_OPEN = tuple(status.value for status in JobStatus if not status.terminal)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""


class JobService:
    def __init__(
        self, ports: Ports, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._ports = ports
        self._settings = settings
        self._clock = clock
        self.store = JobStore(ports.kv, ttl_seconds=settings.job_ttl_days * 86400)
        self.direct_limit = DIRECT_SUBMISSIONS
        self._direct = 0
        self.changes = JobChanges()  # wakes this process's event streams (edge.jobs.events)
        self.reconciler = Reconciler(self)

    @property
    def settings(self) -> Settings:
        return self._settings

    def now(self) -> float:
        return self._clock()

    @property
    def ledger(self) -> JobLedger:
        if self._ports.ledger is None:
            raise DependencyUnavailable("job ledger", "the JOBS Durable Object is not bound", 60)
        return self._ports.ledger

    @property
    def orchestrator(self) -> Orchestrator:
        if self._ports.orchestrator is None:
            raise DependencyUnavailable("orchestrator", "EDGECREW_PREFECT_API_URL is not set", 60)
        return self._ports.orchestrator

    async def submit(
        self,
        tenant: str,
        request: Mapping[str, Any],
        idempotency_key: str | None,
        *,
        crew: CrewSpec,
        default_webhook: Webhook | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Record the job, hand it to the orchestrator; (job, created). Raises on a key reuse.

        `crew` is the catalog's entry for `request["crew"]`: the job keeps its pool (so the
        hand-over never depends on the catalog again) and its version at submit time.
        `default_webhook` is the tenant's default, already checked, for a request that
        names no webhook (kept in the record: a later change of the default leaves
        accepted jobs alone).

        A caller with an Idempotency-Key asks `replay` first (the routes do, before they
        check the request against the catalog), which also finishes what a failed first
        request left undone; here the ledger's create alone settles a race between two
        first requests.
        """
        job_id = job_id_for_key(tenant, idempotency_key) if idempotency_key else new_job_id()
        now = self._clock()
        record = self._new_record(tenant, job_id, request, crew, default_webhook, now)
        # The promise: recorded before anything else. Two first requests under one key
        # both got past `replay`; the ledger lets one of them create the job.
        job, created = await self.ledger.create(dict(record), now=now)
        if not created:
            if job["fingerprint"] != record["fingerprint"]:
                raise IdempotencyConflict(job_id)
            return job, False
        await self._copy(job, previous=None)
        if self._direct < self.direct_limit:
            self._direct += 1
            try:
                job = await asyncio.wait_for(self.hand_over(job), SUBMIT_BUDGET_SECONDS)
            except TimeoutError:
                # A late run is found again (the retry uses the same idempotency key), but
                # Prefect may have made one: a cancel before the retry must stop it.
                job = await self._unsure(job)
            finally:
                self._direct -= 1
        if job["status"] == JobStatus.SUBMITTING.value:
            await self._defer(job)
        return job, True

    def _new_record(
        self, tenant: str, job_id: str, request: Mapping[str, Any], crew: CrewSpec,
        default_webhook: Webhook | None, now: float,
    ) -> JobRecord:  # fmt: skip
        """The record of a job accepted now (`submitting`), submitted or adopted alike."""
        return new_job_record(
            job_id=job_id,
            tenant=tenant,
            request=request,
            pool=crew.pool,
            flow=crew.flow,
            crew_version=crew.version or None,
            fingerprint=fingerprint(request),
            run_key=self._run_key(job_id, now),
            index_key=index_key(tenant, int(now * 1000), job_id),
            created_at=rfc3339(now),
            deadline_at=_deadline_at(request, now),
            now=now,
            ttl_seconds=self.store.ttl_seconds,
            default_webhook=default_webhook,
        )

    def _run_key(self, job_id: str, now: float) -> str:
        """The idempotency key Prefect gets for this job (every hand-over uses it: it is
        kept in the record).

        Prefect keeps keys as long as the run exists, longer than our record lives, so a
        key reused after the record expired must not find the old run: the key carries
        the record-lifetime window it was created in, not the job id alone.
        """
        window = int(now // self.store.ttl_seconds)
        return f"{job_id}.{window}"

    async def replay(
        self, tenant: str, request: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, Any] | None:
        """The job this key already made, if any (IdempotencyConflict for another body).

        Asked before the request is checked against the catalog: a retry of an accepted
        job gets that job even if its crew's schema changed (or it left) meanwhile.
        """
        job_id = job_id_for_key(tenant, idempotency_key)
        existing = await self.current(tenant, job_id)
        if existing is None:
            return None
        if existing["fingerprint"] != fingerprint(request):
            raise IdempotencyConflict(job_id)
        # The first request may have failed after the ledger took the job: before KV's
        # copy (and the active list the reconciler walks) or the queued hand-over.
        if await self._repair(existing) and existing["status"] == JobStatus.SUBMITTING.value:
            await self._defer(existing)
        return existing

    async def submit_pending(self, tenant: str, job_id: str) -> bool:
        """Hand a deferred job to the orchestrator; False if it is still waiting for it."""
        job = await self.current(tenant, job_id)
        if job is None or job["status"] != JobStatus.SUBMITTING.value:
            return True
        handed = await self.hand_over(job)
        return bool(handed["status"] != JobStatus.SUBMITTING.value)

    async def get(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The job with its delivery log, refreshed from the orchestrator when stale.

        Read from KV's copy; a job KV has not shown here yet (its write was made at
        another location moments ago) is read from the ledger, so it is never a 404. A
        job Prefect has not taken yet is left to its queued hand-over and the reconciler:
        a read never submits (it would make a GET's answer wait on Prefect, and make it
        retry a hand-over the queue is already pacing).
        """
        job = await self.store.get(tenant, job_id) or await self.current(tenant, job_id)
        if job is None:
            return None
        stale = self.quiet_for(job) >= self._settings.stale_after_seconds
        if stale and not JobStatus(job["status"]).terminal:
            job = await self.refresh(job)
        return {**job, "deliveries": await self.store.deliveries(tenant, job_id)}

    async def wait(self, job: dict[str, Any], seconds: float) -> dict[str, Any]:
        """The job, with its delivery log, once it ends or waits for an answer, or once
        `seconds` pass (`Prefer: wait`).

        Read from the ledger: KV's copy may lag at another location by up to a minute.
        The pause between reads is on the event loop's clock, which Cloudflare moves
        on while a request waits (timers are I/O).
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        pause = WAIT_FIRST_POLL_SECONDS
        latest: dict[str, Any] | None = job
        while latest is not None and not _settled(latest):
            left = until - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, WAIT_MAX_POLL_SECONDS)
            try:
                latest = await self.ledger.read(job["tenant"], job["id"], now=self._clock())
            except DependencyUnavailable as exc:
                # The job exists (a POST made it already): answer with what we saw, a
                # 202, never a 503 that would have a client submit it a second time.
                log.warning("stopped waiting for %s: %s", job["id"], exc)
                latest = None
                break
        found = latest or job  # gone meanwhile (expired), or unreadable: the last it was
        try:
            deliveries = await self.store.deliveries(found["tenant"], found["id"])
        except DependencyUnavailable:
            deliveries = list(found.get("deliveries") or [])
        return {**found, "deliveries": deliveries}

    async def cancel(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """Ask for cancellation; the job becomes `cancelled` once the orchestrator confirms."""
        job = await self.current(tenant, job_id)
        if job is None or JobStatus(job["status"]).terminal:
            return job
        if job.get("deadline_at") and not job.get("cancel_error"):
            # The client's own cancel: a deadline passing while the run stops must not
            # say that the deadline cancelled it.
            job = await self._apply(job, None, cancel_requested=True)
        return await self._cancel(job)

    async def _cancel(self, job: dict[str, Any], *, unstick: bool = False) -> dict[str, Any]:
        """Stop a job that has not ended: its run, or the hand-over that has not happened."""
        if job["flow_run_id"] is None:  # not handed over yet: the hand-over will see this
            before, after = await self._change(
                job, {"type": "cancelled"}, if_status=(JobStatus.SUBMITTING.value,)
            )
            if after is not None and before is not None and before.get("handover_unsure"):
                await self._stop_unsure_run(after)
            if after is not None or before is None or JobStatus(before["status"]).terminal:
                return after or before or job
            job = before  # handed over meanwhile: stop its run
        try:
            state = await self.orchestrator.cancel(job["flow_run_id"])
        except OrchestratorRejected:  # the run is gone: nothing left to stop
            return await self._apply(job, {"type": "cancelled"})
        return await self.apply_run_state(job, state, unstick=unstick)

    async def exceed_deadline(self, job: dict[str, Any]) -> dict[str, Any]:
        """Cancel a job past its deadline, its error saying so (the reconciler's duty).

        The cause is recorded before the run is asked to stop: whichever way the cancel
        is then confirmed (Prefect's answer, the worker's callback, a later pass), the
        job ends `cancelled` with it (`shared.jobs.apply_event`). Asked again on every
        pass until the job ends, so a cancel Prefect did not get is retried; a run
        Prefect is already cancelling is not asked again, and the unstick recovers one
        whose worker died before it could confirm.
        """
        if not job.get("cancel_error"):
            message = f"the job had not ended by its deadline, {job['deadline_at']}"
            error = {"kind": "DeadlineExceeded", "message": message}
            before, marked = await self._change(
                job, None, if_status=_OPEN, unless_set=("cancel_requested",), cancel_error=error
            )
            if marked is None:  # ended meanwhile, or gone
                return before or job
            job = marked
        try:
            return await self._cancel(job, unstick=True)
        except DependencyUnavailable as exc:
            log.warning("could not cancel %s past its deadline: %s", job["id"], exc)
            return job

    # --- a person's answer to the job's question (edge.jobs.human_input) ----------------

    async def answer(
        self, tenant: str, job_id: str, answer: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Take the answer to a waiting job's question and resume its run; None if there
        is no such job. NotAnswerable if it waits for no answer (or for another one)."""
        job = await self.current(tenant, job_id)
        if job is None:
            return None
        question = question_to_answer(job, answer.get("question"))
        if job["flow_run_id"] is None:  # moved on by its run before Prefect's answer came
            raise DependencyUnavailable("orchestrator", "the job's run is not known yet", 30)
        pending = {"question": question, "run_input": run_input(answer, question)}
        before, taken = await self._change(
            job, {"type": "answered", "question": question},
            heard_at=self._clock(), pending_answer=pending,
        )  # fmt: skip
        if taken is None:  # answered (or ended) meanwhile
            raise NotAnswerable(before or job, "the question was answered already")
        return await self._hand_answer_over(taken)

    async def _hand_answer_over(self, job: dict[str, Any]) -> dict[str, Any]:
        """Resume the run with the recorded answer; one Prefect did not get stays
        recorded, for the reconciler to hand over. The record is cleared only while it
        still holds this very answer: a newer one recorded meanwhile is left alone."""
        pending = job["pending_answer"]
        try:
            await self.orchestrator.resume(job["flow_run_id"], run_input=pending["run_input"])
        except DependencyUnavailable as exc:
            log.warning("answer to %s recorded, not handed over yet: %s", job["id"], exc)
            return job
        except OrchestratorRejected:  # timed out, or resumed by someone else
            # Not the reason: Prefect's may quote the run input, the person's feedback.
            log.warning("run of %s refused the answer to %s", job["id"], pending["question"])
            try:
                state = await self.orchestrator.read(job["flow_run_id"])
            except (DependencyUnavailable, OrchestratorRejected):
                return job
            if (event := timed_out(job, state)) is not None:
                return await self._apply(job, event, if_equal={"pending_answer": pending},
                                         pending_answer=None)  # fmt: skip
        return await self._apply(job, None, if_equal={"pending_answer": pending},
                                 pending_answer=None)  # fmt: skip

    async def _hand_pending_answer_over(self, job: dict[str, Any]) -> dict[str, Any]:
        """The reconciler's hand-over of an answer Prefect did not get, decided on the
        ledger's record (KV's copy may lag): only to the question it answers."""
        current = await self.current(job["tenant"], job["id"]) or job
        if answer_to_hand_over(current) is None:
            return current
        return await self._hand_answer_over(current)

    async def _hear_question(
        self, job: dict[str, Any], state: RunState, question: str
    ) -> dict[str, Any]:
        """A run suspended on a question whose `waiting` never reached the edge: the job
        waits all the same, with the question the run stored (else nobody could answer)."""
        try:
            stored = await self.orchestrator.question(state.run_id, question)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("could not read question %s of %s: %s", question, job["id"], exc)
            return job
        if (event := waiting_event(question, stored, state)) is None:
            log.warning("run %s of %s stored no readable question %s",
                        state.run_id, job["id"], question)  # fmt: skip
            return job
        return await self._apply(job, event)

    async def apply_event(
        self, tenant: str, job_id: str, event: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Apply an executor callback; None when the job does not exist."""
        job = await self.current(tenant, job_id)
        if job is None:
            return None
        return await self._apply(job, event, heard_at=self._clock())

    async def refresh(self, job: dict[str, Any], *, unstick: bool = False) -> dict[str, Any]:
        """Bring a job Prefect has taken up to date with its run (others are returned as
        they are: `hand_over` is the queue's and the reconciler's).

        Only the reconciler unsticks runs (`unstick`): a read must not change Prefect.
        """
        if job["flow_run_id"] is None:
            return job
        try:
            state = await self.orchestrator.read(job["flow_run_id"])
        except DependencyUnavailable as exc:
            log.warning("could not refresh %s: %s", job["id"], exc)
            return job
        except OrchestratorRejected as exc:  # e.g. the run was deleted from Prefect
            return await self.lost(job, str(exc))
        return await self.apply_run_state(job, state, unstick=unstick)

    async def reconcile(self, **options: int) -> dict[str, int]:
        """One reconciler pass (`edge.jobs.reconciler`)."""
        return await self.reconciler.run(**options)

    def quiet_for(self, job: Mapping[str, Any]) -> float:
        """Seconds since the executor (or Prefect) last told us about this job."""
        return self._clock() - float(job.get("heard_at", 0))

    # --- runs the orchestrator made by itself (schedules: edge.schedules) ---------------------

    async def adopt_run(
        self,
        tenant: str,
        job_id: str,
        request: Mapping[str, Any],
        *,
        crew: CrewSpec,
        run_id: str,
        default_webhook: Webhook | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Take a flow run Prefect started by itself (a schedule's) as a job of `tenant`.

        Recorded with its run already (never `submitting` without one: no hand-over may
        make a second run), then moved to `queued` as a submitted job is, so its event
        log and webhooks are a job's. The same `job_id` twice is one job: the second call
        finds it (and repairs its KV copy if the first stopped part-way).
        """
        now = self._clock()
        record = self._new_record(tenant, job_id, request, crew, default_webhook, now)
        job, created = await self.ledger.create(
            {**record, "flow_run_id": run_id, **fields}, now=now
        )
        if created:
            await self._copy(job, previous=None)
        else:
            await self._repair(job)
        if job["status"] != JobStatus.SUBMITTING.value:
            return job
        return await self._apply(job, {"type": "queued"}, if_status=(JobStatus.SUBMITTING.value,))

    # --- internals ---------------------------------------------------------------------------

    async def hand_over(self, job: dict[str, Any]) -> dict[str, Any]:
        """Hand a `submitting` job to Prefect, with the same key every time."""
        pool = job.get("pool") or await self._pool_from_catalog(job)
        if pool is None:  # a record from before the catalog, for a crew no longer in it
            message = f"crew {job['crew']!r} is no longer in the catalog (GET /v1/crews)"
            error = {"kind": "UnknownCrew", "message": message}
            return await self._apply(job, {"type": "failed", "error": error})
        try:
            state = await self._submit_run(job, pool)
        except DependencyUnavailable as exc:
            # Accepted all the same: the reconciler submits it later with the same key.
            # The answer may be what was lost, not the request: note that a run may exist.
            log.warning("job %s stays submitting: %s", job["id"], exc)
            return await self._unsure(job)
        except OrchestratorRejected as exc:  # e.g. no such deployment: retrying cannot help
            error = {"kind": "SubmitRejected", "message": str(exc)}
            return await self._apply(job, {"type": "failed", "error": error})
        # Only a job still waiting for Prefect takes the run: it may have been cancelled
        # (or handed over by another pass) while Prefect answered.
        taken: dict[str, Any] = {
            "pool": pool,
            "flow_run_id": state.run_id,
            "heard_at": self._clock(),
        }
        before, queued = await self._change(
            job, {"type": "queued"}, if_status=(JobStatus.SUBMITTING.value,), **taken
        )
        if queued is None:
            if before is not None and before["status"] == JobStatus.CANCELLED.value:
                await self._cancel_quietly(state.run_id)
            elif before is not None and not JobStatus(before["status"]).terminal:
                # Moved on by its run's callbacks before Prefect's answer reached us: it
                # still needs the run's id (to be answered, read, cancelled).
                _, adopted = await self._change(
                    before, None, if_status=_OPEN, unless_set=("flow_run_id",), **taken
                )
                return adopted or before
            return before or job
        return await self.apply_run_state(queued, state)

    async def _submit_run(self, job: Mapping[str, Any], pool: str) -> RunState:
        """Ask for the job's run; the same key always answers with the same run."""
        return await self.orchestrator.submit(
            f"{job.get('flow') or FLOW_NAME}/{pool}",  # records from before `flow`
            parameters={
                "job_id": job["id"],
                "tenant": job["tenant"],
                "crew": job["crew"],
                "inputs": job["inputs"],
            },
            idempotency_key=job.get("run_key") or job["id"],
            tags=[f"tenant:{job['tenant']}", f"crew:{job['crew']}"],
        )

    async def _unsure(self, job: dict[str, Any]) -> dict[str, Any]:
        """Mark a job whose hand-over got no answer: Prefect may have made its run."""
        if job.get("handover_unsure"):
            return job
        before, after = await self._change(
            job, None, if_status=(JobStatus.SUBMITTING.value,), handover_unsure=True
        )
        return after or before or job

    async def _stop_unsure_run(self, job: Mapping[str, Any]) -> None:
        """A job cancelled before Prefect's answer reached us: the run it may have made is
        found with the same key (or made now) and stopped, so nothing runs for it."""
        pool = job.get("pool") or await self._pool_from_catalog(job)
        if pool is None:
            return
        try:
            state = await self._submit_run(job, pool)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("job %s cancelled; could not look for its run: %s", job["id"], exc)
            return
        await self._cancel_quietly(state.run_id)

    async def _pool_from_catalog(self, job: Mapping[str, Any]) -> str | None:
        """The work pool of a job recorded before jobs kept theirs: its crew's, now."""
        spec = await get_crew(self._ports.kv, job["crew"])
        return None if spec is None else spec.pool

    async def lost(self, job: dict[str, Any], detail: str) -> dict[str, Any]:
        """End a job whose flow run the orchestrator no longer has."""
        error = {"kind": "RunLost", "message": f"the orchestrator no longer has the run: {detail}"}
        return await self._apply(job, {"type": "failed", "error": error})

    async def _cancel_quietly(self, run_id: str) -> None:
        try:
            await self.orchestrator.cancel(run_id)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("could not cancel run %s of a cancelled job: %s", run_id, exc)

    async def _defer(self, job: Mapping[str, Any]) -> None:
        """Queue the hand-over; without a queue the reconciler's next pass does it."""
        if self._ports.deliveries is not None:
            await self._ports.deliveries.send(dict(submit_message(job)))

    async def apply_run_state(
        self, job: dict[str, Any], state: RunState, *, unstick: bool = False
    ) -> dict[str, Any]:
        if unstick:
            if job.get("pending_answer") and state.phase is RunPhase.PAUSED:
                return await self._hand_pending_answer_over(job)  # Prefect was away
            if (question := unheard_question(job, state)) is not None:
                return await self._hear_question(job, state, question)
            state = await self._unstick(job, state)
        event = (
            timed_out(job, state)
            or resumed_elsewhere(job, state)
            or _event_for_run_state(job, state, self._clock())
        )
        return job if event is None else await self._apply(job, event)

    async def _unstick(self, job: Mapping[str, Any], state: RunState) -> RunState:
        """Recover a run left in a worker's hands when that worker is gone.

        Time alone is no proof: a Docker worker pulling a large image, or a Kubernetes
        pod waiting for a node, keeps a live run Pending for minutes. So a run Pending
        (or Cancelling) past its timeout is recovered only once Prefect says the worker
        holding it is offline (its heartbeats stopped), or, when no worker is named,
        after many times the timeout.
        """
        limits = {
            RunPhase.CLAIMED: self._settings.claim_timeout_seconds,
            RunPhase.STOPPING: self._settings.cancel_timeout_seconds,
        }
        limit = limits.get(state.phase)
        if limit is None or state.since is None:
            return state
        waited = self._clock() - state.since
        if waited <= limit:
            return state
        try:
            alive = await self.orchestrator.worker_alive(state.run_id)
            if alive or (alive is None and waited <= UNKNOWN_HOLDER_FACTOR * limit):
                return state
            recovered = await self.orchestrator.recover(state)
        except (DependencyUnavailable, OrchestratorRejected) as exc:
            log.warning("could not recover run %s of %s: %s", state.run_id, job["id"], exc)
            return state
        holder = "offline" if alive is False else "unknown"
        log.warning(
            "job %s: run %s was %s for %.0f s, its worker %s; now %s",
            job["id"], state.run_id, state.name, waited, holder, recovered.name,
        )  # fmt: skip
        return recovered

    async def _apply(
        self, job: dict[str, Any], event: Mapping[str, Any] | None, **fields: Any
    ) -> dict[str, Any]:
        """The job after `event` (and `fields` with it), as the ledger has it now."""
        before, after = await self._change(job, event, **fields)
        return after or before or job

    async def _change(
        self,
        job: Mapping[str, Any],
        event: Mapping[str, Any] | None,
        *,
        if_status: tuple[str, ...] | None = None,
        unless_set: tuple[str, ...] = (),
        if_equal: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One atomic ledger change, then KV's copy and the client's webhook.

        `job` only names the job: the event is applied to the ledger's record, whatever
        happened to it since `job` was read; with no event, only `fields` are set.
        (before, after) as `JobLedger.change`.
        """
        now = self._clock()
        change: dict[str, Any] = {
            "at": rfc3339(now),
            "event": None if event is None else dict(event),
        }
        change["expires_at"] = now + self.store.ttl_seconds
        if fields:
            change["set"] = fields
        if if_status is not None:
            change["if_status"] = list(if_status)
        if unless_set:
            change["unless_set"] = list(unless_set)
        if if_equal:
            change["if_equal"] = dict(if_equal)
        tenant, job_id = job["tenant"], job["id"]
        before, after = await self.ledger.change(tenant, job_id, change, now=now)
        if before is None and "revision" not in job and await self.current(tenant, job_id):
            before, after = await self.ledger.change(tenant, job_id, change, now=now)
        if after is not None:
            self.changes.notify(tenant, job_id)
        if before is None:
            return None, None
        if after is None:
            await self._repair(before)
            return before, None
        # Clients hear of moves and progress; a running job that only learnt its crew's
        # version has nothing new to tell them (job.running was sent already). Sent
        # before KV's copy is written: a failure in between leaves the copy behind the
        # ledger, which the next touch of the job sees (`_repair`) and sends again.
        if event is not None and (
            after["status"] != before["status"] or event["type"] == "progress"
        ):
            await self._notify(after, event["type"])
        await self._copy(after, previous=before)
        return before, after

    async def _repair(self, record: dict[str, Any]) -> bool:
        """Bring KV's copy up to the ledger's record if a writer failed part-way (after
        its ledger change, before its copy or its webhook); True if it had to.

        A terminal webhook the copy does not show may not have gone: it is sent again,
        with the same message id (`_notify`), so a receiver that had it can tell. The
        webhooks of earlier moves (running, progress) are not sent again.
        """
        copy = await self.store.get(record["tenant"], record["id"])
        if copy is not None and int(copy.get("revision") or 0) >= int(record["revision"]):
            return False
        status = JobStatus(record["status"])
        if status.terminal and (copy is None or copy["status"] != status.value):
            await self._notify(record, status.value)
        await self._copy(record, previous=None)
        return True

    async def current(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The job as its ledger has it now: what a decision must read, not KV's copy. A
        job recorded before the ledger existed (a KV record with no `revision`) is taken
        into it on first use."""
        now = self._clock()
        record = await self.ledger.read(tenant, job_id, now=now)
        if record is None:
            copy = await self.store.get(tenant, job_id)
            if copy is not None and "revision" not in copy:
                copy["expires_at"] = now + self.store.ttl_seconds
                record, _ = await self.ledger.create(copy, now=now)
        return record

    async def _copy(self, record: dict[str, Any], *, previous: dict[str, Any] | None) -> None:
        """Write KV's copy of a ledger record. Two changes of one job can have their
        copies land in either order; a newer change found in the ledger afterwards is
        copied again, so KV ends with the last change, not whichever write came last."""
        await self.store.save(record, previous=previous)
        latest = await self.ledger.read(record["tenant"], record["id"], now=self._clock())
        if latest is not None and latest["revision"] > record["revision"]:
            # Its writer checks the same way after its own copy; a copy that still lands
            # late is repaired by the next change, or no-change, of the job.
            await self.store.save(latest, previous=None)

    async def _notify(self, job: dict[str, Any], event_type: str) -> None:
        webhook = job.get("webhook")
        name = webhook_event_for(event_type)
        if not webhook or name not in webhook["events"]:
            return
        if self._ports.deliveries is None:
            log.warning("no delivery queue configured; %s for %s not sent", name, job["id"])
            return
        data = public(job)
        message = delivery_message(job, name, webhook["url"], data=data, now=self._clock())
        await self._ports.deliveries.send(dict(message))


def _deadline_at(request: Mapping[str, Any], now: float) -> str | None:
    deadline = request.get("deadline_seconds")
    return None if deadline is None else rfc3339(now + deadline)


def public(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job as the API shows it: no tenant, fingerprint or orchestrator internals."""
    view = {field: job.get(field) for field in PUBLIC_FIELDS}
    view["deliveries"] = list(job.get("deliveries") or [])
    waiting = job["status"] == JobStatus.WAITING.value
    schedule = job.get("schedule_id")
    view["urls"] = {  # every key always present, null when it does not apply (`JobUrls`)
        "self": f"/v1/jobs/{job['id']}",
        "cancel": f"/v1/jobs/{job['id']}/cancel",
        "input": f"/v1/jobs/{job['id']}/input" if waiting else None,
        "schedule": f"/v1/schedules/{schedule}" if schedule else None,
    }
    return view


def _settled(job: Mapping[str, Any]) -> bool:
    """Whether a `Prefer: wait` is over: the job ended, or waits for its client."""
    status = JobStatus(job["status"])
    return status.terminal or status is JobStatus.WAITING


#: Phases that say nothing new to a job that is already queued or running: a run waiting
#: for a worker, claimed, paused or suspended, or being stopped (the job ends once the
#: orchestrator confirms). CLAIMED and STOPPING are watched for a dead worker
#: (`JobService._unstick`).
_NOTHING_NEW = frozenset({RunPhase.QUEUED, RunPhase.CLAIMED, RunPhase.PAUSED, RunPhase.STOPPING})


def _event_for_run_state(
    job: Mapping[str, Any], state: RunState, now: float
) -> dict[str, Any] | None:
    """The job event a run state implies, if any."""
    phase = state.phase
    if phase in _NOTHING_NEW:
        return None
    if phase is RunPhase.FAILED:
        kind = state.name or "Failed"
        message = state.message or f"the flow run ended {kind}"
        return {"type": "failed", "error": {"kind": kind, "message": message}}
    if phase is RunPhase.CANCELLED:
        return {"type": "cancelled"}
    if phase is RunPhase.RUNNING:
        return {"type": "running"}
    if phase is RunPhase.SUCCEEDED:
        # Measured from the run's end when the orchestrator says when that was: a long
        # crew that has been quiet for an hour must not be declared lost the moment it
        # completes.
        ended = state.since if state.since is not None else float(job.get("heard_at", 0))
        if now - ended <= RESULT_GRACE_SECONDS:
            return None  # its `succeeded` callback may still be on its way
        error = {"kind": "ResultLost", "message": "the run completed but its result never arrived"}
        return {"type": "failed", "error": error}
    log.warning("job %s: run %s is in a state edgecrew does not know: %s", job.get("id"),
                state.run_id, state.name)  # fmt: skip
    return None
