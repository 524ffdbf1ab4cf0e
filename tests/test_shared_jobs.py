"""The job state machine: forward only, terminal is final, events are idempotent."""

from __future__ import annotations

import itertools

import pytest

from shared.jobs import TERMINAL, JobStatus, apply_event, can_transition, webhook_event_for
from shared.timestamps import rfc3339

AT = "2026-11-27T12:00:00Z"
ORDER = [JobStatus.SUBMITTING, JobStatus.QUEUED, JobStatus.RUNNING]


def job(status: JobStatus, **fields: object) -> dict[str, object]:
    return {"id": "job_1", "status": status.value, "progress": None, "result": None,
            "error": None, "updated_at": "before", **fields}  # fmt: skip


@pytest.mark.parametrize(("current", "new"), list(itertools.product(JobStatus, JobStatus)))
def test_transitions_only_move_forward_and_terminal_is_final(
    current: JobStatus, new: JobStatus
) -> None:
    expected = current not in TERMINAL and (
        new in TERMINAL
        or (current in ORDER and new in ORDER and ORDER.index(new) > ORDER.index(current))
    )
    assert can_transition(current, new) is expected


def test_running_then_progress_then_success() -> None:
    queued = job(JobStatus.QUEUED)
    running = apply_event(queued, {"type": "running"}, AT)
    assert running is not None and running["status"] == "running" and running["updated_at"] == AT
    step = {"completed_tasks": 1, "total_tasks": 2, "current_task": "write"}
    progressed = apply_event(running, {"type": "progress", "progress": step}, AT)
    assert progressed is not None and progressed["progress"] == step
    done = apply_event(progressed, {"type": "succeeded", "result": {"report": "ok"}}, AT)
    assert done is not None
    assert (done["status"], done["result"]) == ("succeeded", {"report": "ok"})
    assert done["progress"]["completed_tasks"] == 2


def test_repeated_and_stale_events_change_nothing() -> None:
    running = job(JobStatus.RUNNING, progress={"completed_tasks": 2, "total_tasks": 3})
    assert apply_event(running, {"type": "running"}, AT) is None
    stale = {"type": "progress", "progress": {"completed_tasks": 1, "total_tasks": 3}}
    assert apply_event(running, stale, AT) is None
    same = {"type": "progress", "progress": {"completed_tasks": 2, "total_tasks": 3}}
    assert apply_event(running, same, AT) is None


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("kind", ["running", "progress", "succeeded", "failed", "cancelled"])
def test_terminal_jobs_ignore_every_event(terminal: JobStatus, kind: str) -> None:
    event = {"type": kind, "progress": {"completed_tasks": 9, "total_tasks": 9}}
    assert apply_event(job(terminal), event, AT) is None


def test_progress_on_a_queued_job_means_it_runs() -> None:
    event = {"type": "progress", "progress": {"completed_tasks": 0, "total_tasks": 2}}
    updated = apply_event(job(JobStatus.QUEUED), event, AT)
    assert updated is not None and updated["status"] == "running"


def test_failure_keeps_the_error_and_a_submitting_job_can_be_cancelled() -> None:
    error = {"kind": "Crashed", "message": "worker died"}
    failed = apply_event(job(JobStatus.RUNNING), {"type": "failed", "error": error}, AT)
    assert failed is not None and failed["error"] == error
    cancelled = apply_event(job(JobStatus.SUBMITTING), {"type": "cancelled"}, AT)
    assert cancelled is not None and cancelled["status"] == "cancelled"


def test_unknown_event_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type 'exploded'"):
        apply_event(job(JobStatus.RUNNING), {"type": "exploded"}, AT)


@pytest.mark.parametrize(
    ("event", "webhook"),
    [("running", "job.running"), ("progress", "job.progress"), ("succeeded", "job.succeeded"),
     ("failed", "job.failed"), ("cancelled", "job.cancelled"), ("queued", "job.queued")],
)  # fmt: skip
def test_webhook_event_names(event: str, webhook: str) -> None:
    assert webhook_event_for(event) == webhook


def test_timestamps_are_rfc3339_utc_with_z() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1.5, timespec="seconds") == "1970-01-01T00:00:01Z"


def test_the_running_event_carries_the_crew_version_the_worker_runs() -> None:
    queued = job(JobStatus.QUEUED, crew_version="0.1.0+catalog")
    running = apply_event(queued, {"type": "running", "crew_version": "0.1.1+worker"}, AT)
    assert running is not None
    assert (running["status"], running["crew_version"]) == ("running", "0.1.1+worker")
    plain = apply_event(queued, {"type": "running"}, AT)
    assert plain is not None and plain["crew_version"] == "0.1.0+catalog", "none sent: kept"


def test_a_running_job_still_learns_its_crew_version_once() -> None:
    """Prefect's RUNNING can reach the edge before the worker's `running` callback."""
    running = job(JobStatus.RUNNING, crew_version="0.1.0+catalog")
    event = {"type": "running", "crew_version": "0.1.1+worker"}
    told = apply_event(running, event, AT)
    assert told is not None and told["status"] == "running"
    assert (told["crew_version"], told["updated_at"]) == ("0.1.1+worker", AT)
    assert apply_event(told, event, AT) is None, "the same event again changes nothing"
    assert apply_event(running, {"type": "running"}, AT) is None


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_a_finished_job_keeps_its_crew_version(terminal: JobStatus) -> None:
    done = job(terminal, crew_version="0.1.0+catalog")
    assert apply_event(done, {"type": "running", "crew_version": "9.9.9+late"}, AT) is None
