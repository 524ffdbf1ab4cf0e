"""Jobs: statuses, the allowed transitions, and how executor events move a job.

Pure functions over plain dicts so the edge (Pyodide) and the executor (CPython) share them.
Transitions only move forward: `submitting → queued → running → succeeded | failed |
cancelled`, any earlier status may jump to a terminal one, and a terminal status never
changes. Events that would move a job backwards, or repeat what it already knows, are
ignored, which makes every callback idempotent.

One loop is allowed, and it is kept forward by numbering: a crew that asks a person
(`waiting`, with question `qN`) goes back to `running` only when that very question is
answered (`answered`, an event the edge makes), and it may wait again only for a later
question. So a late or repeated `waiting`, `answered` or `running` changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # for a person's answer (`POST /v1/jobs/{id}/input`)
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
    JobStatus.WAITING: 2,  # running and waiting alternate by question number, not rank
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 3,
    JobStatus.CANCELLED: 3,
}

#: Event types and the status each one leads to. The executor sends all but `queued`
#: and `answered`, which the edge applies itself: once the orchestrator has taken the
#: job, and once a person's answer to the job's question is taken.
EVENT_STATUS = {
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "progress": JobStatus.RUNNING,
    "waiting": JobStatus.WAITING,
    "answered": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

#: Client webhook events; a webhook with no `events` list gets the terminal ones.
WEBHOOK_EVENTS = (
    "job.running", "job.progress", "job.waiting", "job.succeeded", "job.failed", "job.cancelled",
)  # fmt: skip
#: A job waiting for a person is told by default too: nobody else will answer it.
DEFAULT_WEBHOOK_EVENTS = ("job.waiting", "job.succeeded", "job.failed", "job.cancelled")
#: Events a job's record keeps (`apply_change`). A crew job makes a handful; an
#: ingestion reports progress at most once a second, so 500 covers ~8 minutes of it, at
#: ~150 bytes an event (~75 KB in the ledger's row, which holds 2 MB).
EVENTS_KEPT = 500
#: How much of a progress step's task text each logged event keeps.
EVENT_TASK_CHARS = 256
#: How much of the output a question asks about each logged `job.waiting` keeps.
EVENT_OUTPUT_CHARS = 2048


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    """Whether a job may move from `current` to `new` (forward only; terminal is final).
    `waiting` is reached only by its numbered question (`apply_event`)."""
    return not current.terminal and new is not JobStatus.WAITING and _RANK[new] > _RANK[current]


def apply_event(job: Mapping[str, Any], event: Mapping[str, Any], at: str) -> dict[str, Any] | None:
    """The job after an executor event, or None when the event changes nothing.

    `event` is `{"type", "progress"?, "result"?, "error"?, "crew_version"?,
    "resumed_from"?}`; `at` is the
    RFC 3339 time. A `running` event's `crew_version` (what the worker runs) replaces the
    catalog's version the job was submitted with. A job `cancelled` keeps the error its
    event or its `cancel_error` (the cause recorded when the edge asked) gives, else none.
    """
    kind = event.get("type")
    if kind not in EVENT_STATUS:
        raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(EVENT_STATUS)}")
    current = JobStatus(job["status"])
    new = EVENT_STATUS[kind]
    updated = dict(job)
    if kind in ("waiting", "answered"):
        return _question_event(job, event, at)
    if kind == "running" and event.get("resumed_from"):
        # The run goes on from an answer (maybe one given in Prefect's UI, which the
        # edge never recorded): as `answered`, while the job waits on that question.
        answered = {"type": "answered", "question": event["resumed_from"]}
        if (resumed := _question_event(job, answered, at)) is not None:
            return resumed
    if kind == "progress":
        if current.terminal or not _advances(job.get("progress"), event.get("progress")):
            return None
        updated["progress"] = dict(event["progress"])
        if current is JobStatus.WAITING:  # sent before the question; it still waits
            new = current
    elif not can_transition(current, new):
        return _with_crew_version(job, event, at) if kind == "running" else None
    updated["status"] = new.value
    if kind == "running" and event.get("crew_version"):
        updated["crew_version"] = event["crew_version"]
    if new is JobStatus.SUCCEEDED:
        updated["result"] = event.get("result")
    if new is JobStatus.FAILED:
        updated["error"] = dict(event.get("error") or {"kind": "unknown", "message": ""})
    if new is JobStatus.CANCELLED and (cause := event.get("error") or job.get("cancel_error")):
        # Why it was cancelled, when the edge asked for a reason (a deadline) before the
        # cancel: whoever confirms it (Prefect, the worker, a reconciler pass) need not know.
        updated["error"] = dict(cause)
    if new.terminal:
        updated["input_request"] = None  # nobody can answer it any more
    if new.terminal and updated.get("progress"):
        total = updated["progress"].get("total_tasks")
        if new is JobStatus.SUCCEEDED and total:
            updated["progress"] = {**updated["progress"], "completed_tasks": total}
    updated["updated_at"] = at
    return updated


def _question_event(
    job: Mapping[str, Any], event: Mapping[str, Any], at: str
) -> dict[str, Any] | None:
    """`waiting` for question `qN` (a later one than any asked), or `answered` for the
    question the job waits on; anything else changes nothing."""
    current = JobStatus(job["status"])
    if current.terminal:
        return None
    if event["type"] == "waiting":
        request = dict(event["input_request"])
        if question_number(request.get("id")) <= int(job.get("questions_asked") or 0):
            return None
        # A later question means the run got past the earlier one: an answer to it still
        # recorded as not handed over (its hand-over's reply was lost) must never be
        # handed to this one.
        return {**job, "status": JobStatus.WAITING.value, "input_request": request,
                "questions_asked": question_number(request["id"]), "pending_answer": None,
                "updated_at": at}  # fmt: skip
    waiting_for = (job.get("input_request") or {}).get("id")
    if current is not JobStatus.WAITING or event.get("question") != waiting_for:
        return None
    return {**job, "status": JobStatus.RUNNING.value, "input_request": None, "updated_at": at}


def question_number(question: object) -> int:
    """`q3` → 3; 0 for anything that is not a question id."""
    text = str(question or "")
    digits = text[1:]
    return int(digits) if text.startswith("q") and digits.isdigit() else 0


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
    """The client webhook event an applied job event fires (`progress` → `job.progress`,
    `answered` → `job.running`)."""
    return "job.progress" if event_type == "progress" else f"job.{EVENT_STATUS[event_type].value}"


def _advances(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    if not after:
        return False
    done_before = (before or {}).get("completed_tasks", -1)
    return int(after.get("completed_tasks", 0)) > int(done_before)


# --- the job ledger's rules (both of its adapters apply them) --------------------------------


def apply_change(job: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job after one change, or None when the change changes nothing.

    `change` is `{"at", "expires_at", "event"?, "set"?, "if_status"?, "unless_set"?,
    "if_equal"?}`: an executor-style event (applied with `apply_event`), fields to set
    with it, the statuses the job must be in for the change to apply at all, fields that
    must not be set, and fields that must hold exactly these values. A `set` rides on
    its event: when the event changes nothing, neither does the change. Each applied
    change bumps `revision` and pushes `expires_at` out, so a job lives its lifetime
    after its last change.
    """
    allowed = change.get("if_status")
    if allowed is not None and job["status"] not in allowed:
        return None
    if any(job.get(name) for name in change.get("unless_set") or ()):
        return None
    if any(job.get(name) != value for name, value in (change.get("if_equal") or {}).items()):
        return None
    event = change.get("event")
    updated = dict(job) if event is None else apply_event(job, event, change["at"])
    if updated is None or (event is None and not change.get("set")):
        return None
    updated.update(change.get("set") or {})
    updated["revision"] = int(job.get("revision") or 0) + 1
    updated["expires_at"] = change["expires_at"]
    if "events" not in updated:  # recorded before the log: it starts here, whatever changed
        updated["events"], updated["events_trimmed"] = [], updated["revision"] - 1
    if event is not None and (
        updated["status"] != job["status"] or event.get("type") == "progress"
    ):
        _log_event(updated, webhook_event_for(event["type"]))
    return updated


def _log_event(job: dict[str, Any], name: str) -> None:
    """Append the event a change made to the job's log (`GET /v1/jobs/{id}/events`).

    Appended by the change itself, so the log and the state can never disagree, and the
    change's revision is the event's id: it only grows, one writer assigns it. What the
    event says is what a client needs to follow the job without a second read; a
    succeeded job's result is not copied in (it may be large, and it is final), the
    reader fills it in (`edge.jobs.events`). The log keeps the last `EVENTS_KEPT`;
    `events_trimmed` is the id of the newest event dropped, so a reader resuming before
    it knows events are missing.
    """
    progress = job.get("progress")
    if progress and len(str(progress.get("current_task") or "")) > EVENT_TASK_CHARS:
        # Copied into each of up to EVENTS_KEPT events: a long task text would grow the
        # record past what its Durable Object row holds (2 MB), and the job could not
        # change any more.
        progress = {**progress, "current_task": str(progress["current_task"])[:EVENT_TASK_CHARS]}
    data: dict[str, Any] = {"status": job["status"], "progress": progress}
    if (request := job.get("input_request")) is not None:  # what a waiting job asks
        data["input_request"] = _logged_request(request)
    if job.get("error") is not None:  # a failure's, or a cancel's reason (DeadlineExceeded)
        data["error"] = job["error"]
    event = {"id": job["revision"], "type": name, "at": job["updated_at"], "data": data}
    log = [*(job.get("events") or []), event]
    if len(log) > EVENTS_KEPT:
        job["events_trimmed"] = log[-EVENTS_KEPT - 1]["id"]
        log = log[-EVENTS_KEPT:]
    job["events"] = log


def _logged_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """A question as the event log keeps it: the output under review cut to
    EVENT_OUTPUT_CHARS (the job itself, and its webhook, have all of it)."""
    output = str(request.get("output") or "")
    if len(output) <= EVENT_OUTPUT_CHARS:
        return dict(request)
    return {**request, "output": output[:EVENT_OUTPUT_CHARS], "output_truncated": True}


def ledger_create(
    existing: Mapping[str, Any] | None, record: Mapping[str, Any], now: float
) -> tuple[dict[str, Any], bool]:
    """What a create finds: (the job already there, False), or (the new one, True) when
    there is none or the one there has expired."""
    if existing is not None and float(existing.get("expires_at") or 0) > now:
        return dict(existing), False
    created = {**record, "revision": 1}
    if record.get("status") == JobStatus.SUBMITTING.value:  # a new job: its log starts here
        created.setdefault("events", [])
    return created, True


def ledger_live(existing: Mapping[str, Any] | None, now: float) -> dict[str, Any] | None:
    """The stored job unless it has expired (its row may outlive it until purged)."""
    if existing is None or float(existing.get("expires_at") or 0) <= now:
        return None
    return dict(existing)
