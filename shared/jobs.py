"""Jobs: statuses, the allowed transitions, and how executor events move a job.

Pure functions over plain dicts so the edge (Pyodide) and the executor (CPython) share them.
Transitions only move forward: `submitting → queued → running → succeeded | failed |
cancelled`, any earlier status may jump to a terminal one, and a terminal status never
changes. Events that would move a job backwards, or repeat what it already knows, are
ignored, which makes every callback idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_RANK = {
    JobStatus.SUBMITTING: 0,
    JobStatus.QUEUED: 1,
    JobStatus.RUNNING: 2,
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 3,
    JobStatus.CANCELLED: 3,
}

#: Event types and the status each one leads to. The executor sends all but `queued`,
#: which the edge applies itself once the orchestrator has taken the job.
EVENT_STATUS = {
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "progress": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

#: Client webhook events; a webhook with no `events` list gets the terminal ones.
WEBHOOK_EVENTS = ("job.running", "job.progress", "job.succeeded", "job.failed", "job.cancelled")
DEFAULT_WEBHOOK_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    """Whether a job may move from `current` to `new` (forward only; terminal is final)."""
    return not current.terminal and _RANK[new] > _RANK[current]


def apply_event(job: Mapping[str, Any], event: Mapping[str, Any], at: str) -> dict[str, Any] | None:
    """The job after an executor event, or None when the event changes nothing.

    `event` is `{"type", "progress"?, "result"?, "error"?, "crew_version"?}`; `at` is the
    RFC 3339 time. A `running` event's `crew_version` (what the worker runs) replaces the
    catalog's version the job was submitted with.
    """
    kind = event.get("type")
    if kind not in EVENT_STATUS:
        raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(EVENT_STATUS)}")
    current = JobStatus(job["status"])
    new = EVENT_STATUS[kind]
    updated = dict(job)
    if kind == "progress":
        if current.terminal or not _advances(job.get("progress"), event.get("progress")):
            return None
        updated["progress"] = dict(event["progress"])
    elif not can_transition(current, new):
        return _with_crew_version(job, event, at) if kind == "running" else None
    updated["status"] = new.value
    if kind == "running" and event.get("crew_version"):
        updated["crew_version"] = event["crew_version"]
    if new is JobStatus.SUCCEEDED:
        updated["result"] = event.get("result")
    if new is JobStatus.FAILED:
        updated["error"] = dict(event.get("error") or {"kind": "unknown", "message": ""})
    if new.terminal and updated.get("progress"):
        total = updated["progress"].get("total_tasks")
        if new is JobStatus.SUCCEEDED and total:
            updated["progress"] = {**updated["progress"], "completed_tasks": total}
    updated["updated_at"] = at
    return updated


def _with_crew_version(
    job: Mapping[str, Any], event: Mapping[str, Any], at: str
) -> dict[str, Any] | None:
    """A running job told which crew version runs it (Prefect's RUNNING came first)."""
    version = event.get("crew_version")
    if (
        job["status"] != JobStatus.RUNNING.value
        or not version
        or job.get("crew_version") == version
    ):
        return None
    return {**job, "crew_version": version, "updated_at": at}


def webhook_event_for(event_type: str) -> str:
    """The client webhook event an applied job event fires (`progress` → `job.progress`)."""
    return "job.progress" if event_type == "progress" else f"job.{EVENT_STATUS[event_type].value}"


def _advances(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    if not after:
        return False
    done_before = (before or {}).get("completed_tasks", -1)
    return int(after.get("completed_tasks", 0)) > int(done_before)
