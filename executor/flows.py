"""The Prefect flow that runs one crew job and reports it to the edge.

Thin on purpose: load the crew, run it, post `running`, `progress` after each task and the
final state (signed), return the result. Flow retries cover transient failures; the
events are idempotent on the edge, and `failed` is only reported once no retry is left.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from executor.crews import build_crew, load_crew
from executor.edge_client import EdgeClient
from executor.llm import build_llm
from executor.settings import ExecutorSettings
from executor.tools import knowledge_search_tool
from shared.crews import FLOW_NAME

RETRIES = 1


@flow(name=FLOW_NAME, retries=RETRIES, retry_delay_seconds=5, log_prints=True, persist_result=False)
def run_crew_job(job_id: str, tenant: str, crew: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run `crew` on `inputs` for `tenant`'s job `job_id`."""
    logger = get_run_logger()
    settings = ExecutorSettings.from_env(os.environ)
    edge = EdgeClient(settings)
    attempt = int(flow_run.run_count or 1)
    edge.notify(job_id, tenant, f"running:{attempt}", {"type": "running"})
    try:
        result = run_crew(job_id, tenant, crew, inputs, settings=settings, edge=edge)
    except Exception as exc:
        logger.exception("crew %s failed for job %s (attempt %d)", crew, job_id, attempt)
        if attempt > RETRIES:  # the last try: the job ends here
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
) -> dict[str, Any]:
    """Build and run the crew, posting progress after each task; returns the job result."""
    definition = load_crew(crew)
    reporter = ProgressReporter(edge, job_id, tenant, definition.task_names())
    tools = {"knowledge_search": knowledge_search_tool(edge, tenant)}
    built = build_crew(definition, llm=build_llm(settings), tools=tools, task_callback=reporter)
    output = built.kickoff(inputs={**definition.defaults, **inputs})
    return {
        "output": str(output.raw),
        "tasks": [{"name": t.name, "output": str(t.raw)} for t in output.tasks_output],
    }


class ProgressReporter:
    """CrewAI's task callback: posts `progress` after each task.

    A module-level class rather than a closure: CrewAI warns that closures cannot be
    serialized for its checkpoints.
    """

    def __init__(self, edge: EdgeClient, job_id: str, tenant: str, task_names: list[str]) -> None:
        self._edge = edge
        self._job_id = job_id
        self._tenant = tenant
        self._names = task_names
        self._done = 0

    def __call__(self, output: Any) -> None:
        self._done += 1
        upcoming = self._names[self._done] if self._done < len(self._names) else None
        progress = {
            "completed_tasks": self._done,
            "total_tasks": len(self._names),
            "current_task": upcoming,
        }
        self._edge.notify(
            self._job_id,
            self._tenant,
            f"progress:{self._done}",
            {"type": "progress", "progress": progress},
        )
