"""The Prefect flow that runs one crew job and reports it to the edge.

Thin on purpose: find the configured crew, run it in its own directory with the job's
context, post `running`, `progress` after each task (or flow step) and the final state
(signed), return the result. Flow retries cover transient failures; the events are
idempotent on the edge, and `failed` is only reported once no retry is left.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from executor.catalog import crew_for_run
from executor.checkpoint_guards import JobCannotResume, check_same_crew
from executor.edge_client import EdgeClient, EdgeUnreachable
from executor.human_input import InputRequested, fitted_request
from executor.llm import build_llm
from executor.results import fitted
from executor.run_context import JobContext, list_files, restore_files, run_directory, running_job
from executor.run_input import RunQuestions
from executor.settings import ExecutorSettings
from shared.crews import FLOW_NAME

RETRIES = 1
log = logging.getLogger("edgecrew.executor")


@flow(name=FLOW_NAME, retries=RETRIES, retry_delay_seconds=5, log_prints=True, persist_result=False)
def run_crew_job(
    job_id: str, tenant: str, crew: str, inputs: dict[str, Any], schedule_id: str | None = None
) -> dict[str, Any]:
    """Run `crew` on `inputs` for `tenant`'s job `job_id`; a run of schedule
    `schedule_id` (which Prefect's scheduler made, with no job id) first becomes a job."""
    logger = get_run_logger()
    settings = ExecutorSettings.from_env(os.environ)
    edge = EdgeClient(settings)
    if schedule_id:
        registered = edge.register_scheduled_run(schedule_id, tenant, str(flow_run.id))
        if registered is None:  # deleted before this run started: no job, nothing to run
            logger.warning("schedule %s is gone; run %s does nothing", schedule_id, flow_run.id)
            return {}
        job_id = registered
    attempt = int(flow_run.run_count or 1)
    try:
        loaded = crew_for_run(crew)
        running = {"type": "running", "crew_version": loaded.spec.version}
        edge.notify(job_id, tenant, f"running:{attempt}", running)
        result = run_crew(job_id, tenant, crew, inputs, settings=settings, edge=edge)
    except Exception as exc:
        logger.exception("crew %s failed for job %s (attempt %d)", crew, job_id, attempt)
        # The last try, or an end no retry can change (`checkpoint_guards`): the job
        # ends here.
        if attempt > RETRIES or isinstance(exc, JobCannotResume):
            error = {"kind": type(exc).__name__, "message": str(exc)[:1000]}
            edge.event(job_id, tenant, "failed", {"type": "failed", "error": error})
        raise
    edge.event(job_id, tenant, "succeeded", {"type": "succeeded", "result": result})
    logger.info("job %s succeeded", job_id)
    return result


def run_crew(
    job_id: str,
    tenant: str,
    crew: str,
    inputs: dict[str, Any],
    *,
    settings: ExecutorSettings,
    edge: EdgeClient,
    questions: RunQuestions | None = None,
) -> dict[str, Any]:
    """Run the crew in a directory of its own, posting progress; returns the job result
    with the files the run wrote.

    A task that asks for a person's review suspends the run (`executor.run_input`); the
    resumed run restores what the crew had done and goes on from the answer."""
    loaded = crew_for_run(crew)
    job = JobContext(job_id, tenant, lambda query, top_k: edge.search(tenant, query, top_k))
    progress = ProgressReporter(edge, job_id, tenant)
    timeout = loaded.entry.input_timeout_seconds or settings.input_timeout_seconds
    questions = questions or RunQuestions(timeout, WaitingReporter(edge, job_id, tenant))
    made_by = {"fingerprint": loaded.fingerprint, "version": loaded.spec.version}
    with (
        running_job(job, lambda: build_llm(settings)),
        run_directory(job_id, loaded.project_root) as files,
    ):
        checkpoint = questions.checkpoint()
        check_same_crew(checkpoint, made_by)  # a redeploy changed its tasks: no mixing
        restore_files(Path.cwd(), checkpoint.files)
        while True:
            delivered: Callable[[], None] | None = None
            if (question := checkpoint.question) is not None:  # suspends unless answered
                answer = questions.answer(checkpoint)
                progress.resumed(question)
                checkpoint = checkpoint.answered(answer, delivered=questions.delivered(question))
                delivered = functools.partial(questions.mark_delivered, question)
            try:
                result = loaded.kickoff(
                    inputs, llm=build_llm(settings), progress=progress, checkpoint=checkpoint,
                    on_delivered=delivered,
                )  # fmt: skip
                break
            except InputRequested as asked:
                kept = tuple(list_files(Path.cwd()))
                checkpoint = questions.save(replace(asked.checkpoint, files=kept, crew=made_by))
    listed: dict[str, Any] = {"files": files.entries}
    if files.truncated:
        listed["files_truncated"] = True
    return fitted({**result, **listed})


#: How long the one try at posting `waiting` may take (`WaitingReporter`).
WAITING_TIMEOUT_SECONDS = 5.0


class WaitingReporter:
    """Posts `waiting` once the run is suspended: the job's question, for its client.

    One short try, no retries: the run is Suspended already, but Prefect's heartbeat
    thread beats until the process leaves the flow, and a heartbeat after `Suspended`
    re-arms the zombie automation (`executor.zombies`), which would crash the suspended
    run 90 s after the process ends. A question the edge did not take is not lost: the
    reconciler reads it from the suspended run itself (its pause key and run input), and
    the job waits all the same."""

    def __init__(self, edge: EdgeClient, job_id: str, tenant: str) -> None:
        self._edge = edge
        self._job_id = job_id
        self._tenant = tenant

    def __call__(self, request: dict[str, Any]) -> None:
        body = {"type": "waiting", "input_request": fitted_request(request)}
        try:
            self._edge.event(
                self._job_id, self._tenant, f"waiting:{request['id']}", body,
                attempts=1, timeout=WAITING_TIMEOUT_SECONDS,
            )  # fmt: skip
        except EdgeUnreachable as exc:
            log.warning("the edge did not take question %s now (the reconciler will find "
                        "it): %s", request["id"], exc)  # fmt: skip


class ProgressReporter:
    """Posts `progress` (best effort) each time a task or step completes, and `running`
    once the run goes on from an answer."""

    def __init__(self, edge: EdgeClient, job_id: str, tenant: str) -> None:
        self._edge = edge
        self._job_id = job_id
        self._tenant = tenant

    def __call__(self, done: int, total: int, upcoming: str | None) -> None:
        progress = {"completed_tasks": done, "total_tasks": total, "current_task": upcoming}
        self._edge.notify(
            self._job_id,
            self._tenant,
            f"progress:{done}",
            {"type": "progress", "progress": progress},
        )

    def resumed(self, question: str) -> None:
        """The run goes on from the answer to `question`: the job runs again even if the
        edge never heard of the answer (given in Prefect's UI or API). The edge applies
        it only while the job waits on that very question."""
        body = {"type": "running", "resumed_from": question}
        self._edge.notify(self._job_id, self._tenant, f"resumed:{question}", body)
