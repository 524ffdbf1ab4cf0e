"""A person's answer to a job's question: the rules, apart from the service that applies them.

A crew task with `human_input` makes its job `waiting` (`shared.jobs`): its record holds
the `input_request`, and its Prefect run is suspended. `POST /v1/jobs/{id}/input` answers:
the answer is recorded first, in the same ledger change that moves the job back to
`running` (so of two answers at once exactly one is taken), then handed to Prefect as
the run's input, which resumes it. An answer Prefect did not get (it was down) stays in
the record as `pending_answer`, and the reconciler hands it over later, as it does a job
Prefect did not take: what was accepted is not lost.

Prefect fails a run left suspended past its timeout ("never resumed"); a job that was
waiting (or whose answer was not handed over yet) and whose run failed so ends with
error kind `InputTimeout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from edge.jobs.schemas import ExecutorInputRequest  # the `waiting` callback's own checks
from edge.ports import RunPhase, RunState
from shared.jobs import JobStatus, question_number

INPUT_TIMEOUT = "InputTimeout"


class NotAnswerable(Exception):
    """The job waits for no answer now, or for another question than the one answered."""

    def __init__(self, job: Mapping[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.job = dict(job)
        self.reason = reason


def question_to_answer(job: Mapping[str, Any], question: str | None) -> str:
    """The id of the question an answer to `question` (None: the current one) answers."""
    request = job.get("input_request")
    if job["status"] != JobStatus.WAITING.value or not request:
        raise NotAnswerable(job, f"the job is {job['status']}, not waiting for an answer")
    asked = str(request["id"])
    if question is not None and question != asked:
        raise NotAnswerable(job, f"question {question} is not the one the job asks now ({asked})")
    return asked


def run_input(answer: Mapping[str, Any], question: str) -> dict[str, Any]:
    """The answer to `question` as the run's input (`executor.run_input.HumanAnswer`):
    it names its question, so a run never takes it for another one."""
    feedback = str(answer.get("feedback") or "").strip()
    return {"approve": not feedback, "feedback": feedback, "question": question}


def answer_to_hand_over(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recorded answer that may still be handed to the job's run, if any: only one
    to the last question the job asked, while it runs on from that question. (Once the
    run asks a later question, the earlier answer was had: `shared.jobs` clears it.)"""
    pending = job.get("pending_answer")
    if not pending or job["status"] != JobStatus.RUNNING.value:
        return None
    last = f"q{int(job.get('questions_asked') or 0)}"
    return dict(pending) if pending.get("question") == last else None


def timed_out(job: Mapping[str, Any], state: RunState) -> dict[str, Any] | None:
    """The `failed` event of a job whose question expired unanswered, else None."""
    asked = job["status"] == JobStatus.WAITING.value or job.get("pending_answer")
    # A suspended run has no process to crash: it fails only when its pause times out
    # (or someone fails it by hand); a crash reported for it keeps its own kind.
    if not asked or state.phase is not RunPhase.FAILED or state.name == "Crashed":
        return None
    message = state.message or "the job's question was not answered in time"
    return {"type": "failed", "error": {"kind": INPUT_TIMEOUT, "message": message}}


#: Run phases a suspended run reaches only once resumed: it is no longer waiting.
_RESUMED = frozenset({RunPhase.QUEUED, RunPhase.CLAIMED, RunPhase.RUNNING})


def resumed_elsewhere(job: Mapping[str, Any], state: RunState) -> dict[str, Any] | None:
    """The event of a waiting job whose run was resumed without the edge (from Prefect's
    UI or API, say) and whose worker's `running` was lost, else None.

    `job` must be as read before `state` was: the job waits only once its run is
    suspended, so a run read after that and found scheduled or running again was
    resumed. The event applies only while the job still waits on that very question."""
    request = job.get("input_request")
    if job["status"] != JobStatus.WAITING.value or not request or state.phase not in _RESUMED:
        return None
    return {"type": "answered", "question": str(request["id"])}


def unheard_question(job: Mapping[str, Any], state: RunState) -> str | None:
    """The question a running job's run is suspended on that the job never heard of (its
    `waiting` callback was lost), else None: the reconciler then reads it from the run."""
    if job["status"] != JobStatus.RUNNING.value or state.phase is not RunPhase.PAUSED:
        return None
    question = state.question
    if question is None or question_number(question) <= int(job.get("questions_asked") or 0):
        return None
    return question


def waiting_event(
    question: str, stored: Mapping[str, Any] | None, state: RunState
) -> dict[str, Any] | None:
    """The `waiting` event for a question read from the run, as the executor's callback
    would have sent it; None if what the run stored is not such a question."""
    if stored is None or stored.get("id") != question:
        return None
    try:
        request = ExecutorInputRequest.model_validate(
            {**stored, "expires_at": state.question_expires_at}
        )
    except ValidationError:
        return None
    return {"type": "waiting", "input_request": request.model_dump()}
