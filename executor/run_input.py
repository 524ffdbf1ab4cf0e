"""A job's questions through Prefect: the wait is a suspended flow run, the answer its run
input, the crew's checkpoint kept in the run's own input store.

`suspend_flow_run(wait_for_input=HumanAnswer, key=...)` moves the run to `Paused`
("Suspended") and ends its process, so a waiting job holds no worker slot and no
deployment concurrency slot. `resume_flow_run(run_id, run_input=...)` (what the edge
calls, over REST) schedules it again; a worker runs the flow from the top, and the same
`suspend_flow_run` call, reached again with the same key, returns the answer instead of
suspending (Prefect keeps the keys of pauses that fired). Past its timeout Prefect fails
the run ("never resumed"); the edge reports that as `InputTimeout`.

The checkpoint (`executor.human_input.Checkpoint`) is stored under a key of its question
before the run suspends, in Prefect's flow-run input store: any worker, on any machine,
that runs the resumed flow can read it.

A retry of the run (a flow retry, or a crashed run rescheduled) also starts from the top,
but Prefect clears the keys of the pauses that fired when it retries, so the same
`suspend_flow_run` would suspend the run again on a question already answered (and
Prefect's own save of the question's schema then fails on its existing key). So a
question is first looked up in the run's input store: an answer there is taken as it is,
without suspending. An approved task's callback is marked delivered (`DELIVERED_KEY`)
once it ran, so a retry does not call it twice. A checkpoint whose key exists already
(the run stopped between saving it and suspending, and asks the same question again) is
replaced: that question was never asked of anyone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.input import RunInput

from executor.checkpoint_guards import CheckpointConflict, fitted_checkpoint
from executor.human_input import Checkpoint, fitted_request, question_text

log = logging.getLogger("edgecrew.executor")

CHECKPOINT_KEY = "edgecrew-checkpoint-{question}"
#: The question as the edge shows it (`input_request`, less `expires_at`): the edge reads
#: it from here when the run's `waiting` callback did not reach it.
QUESTION_KEY = "edgecrew-question-{question}"
PAUSE_KEY = "edgecrew-{question}"
#: Where Prefect keeps the answer a suspended run was resumed with (its run-input keyset
#: for a pause state named "Suspended": `prefect.input.run_input.keyset_from_paused_state`).
ANSWER_KEY = "suspended-edgecrew-{question}-response"
#: Set once an approved task's file and callback were delivered (by any try of the run).
DELIVERED_KEY = "edgecrew-delivered-{question}"


class HumanAnswer(RunInput):
    """The person's answer, as the run input Prefect validates: empty feedback approves
    (as an empty reply does in CrewAI), text is feedback for the task to redo."""

    approve: bool = False
    feedback: str = ""
    #: The question answered, as the edge names it (empty from Prefect's UI form): an
    #: answer to another question than this pause's is refused, never taken for it.
    question: str = ""


class AnswerMismatch(RuntimeError):
    """The run was resumed with an answer to another question than the one it asks."""


#: Told once the run is suspended, with the question and when it expires (epoch s).
OnWaiting = Callable[[dict[str, Any]], None]


class RunQuestions:
    """The questions of the flow run this process runs (none outside a flow run)."""

    def __init__(self, timeout_seconds: int, on_waiting: OnWaiting) -> None:
        self._timeout = timeout_seconds
        self._on_waiting = on_waiting

    def checkpoint(self) -> Checkpoint:
        """The checkpoint saved before this run last suspended; empty if it never did."""
        run_id = _flow_run_id()
        if run_id is None:
            return Checkpoint()
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

        with get_client(sync_client=True) as client:
            # The last question this run suspended for (its pause key names it).
            paused = [s.state_details.pause_key for s in client.read_flow_run_states(run_id)
                      if s.is_paused()]  # fmt: skip
            pause_key = next((k for k in reversed(paused) if k and k.startswith("edgecrew-")), "")
            if not pause_key:
                return Checkpoint()
            key = CHECKPOINT_KEY.format(question=pause_key.removeprefix("edgecrew-"))
            try:
                stored = client.read_flow_run_input(run_id, key)
            except (ObjectNotFound, PrefectHTTPStatusError) as exc:
                log.warning("run %s: no checkpoint %s (%s); the crew starts over", run_id, key, exc)
                return Checkpoint()
        return Checkpoint.from_json(json.loads(stored))

    def answer(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The answer to the checkpoint's question. Not answered yet: the checkpoint is
        saved, the run suspended, the edge told, and Prefect's `Pause` ends the process."""
        from prefect.exceptions import Pause
        from prefect.flow_runs import suspend_flow_run

        question = checkpoint.question
        if question is None:
            raise ValueError("the checkpoint has no question")
        if _flow_run_id() is None:
            raise RuntimeError("a crew can ask for human input only in a Prefect flow run")
        request = question_text(checkpoint)
        answer = self._given_answer(question)
        if answer is None:  # not answered yet: suspend (Prefect returns it if it was)
            wanted = HumanAnswer.with_initial_data(description=_markdown(request))
            try:
                answer = suspend_flow_run(
                    wait_for_input=wanted, key=PAUSE_KEY.format(question=question),
                    timeout=self._timeout,
                )  # fmt: skip
            except Pause as paused:
                self._on_waiting({**request, "expires_at": _expiry(paused, self._timeout)})
                raise
        if answer.question and answer.question != question:
            raise AnswerMismatch(
                f"the run asks question {question} but was resumed with an answer to "
                f"{answer.question}"
            )
        return {"approve": answer.approve, "feedback": answer.feedback}

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        """Keep the checkpoint of a question about to be asked (before the run suspends),
        fitted to its store (`executor.checkpoint_guards`); returns what was kept."""
        question = checkpoint.question
        if question is None:
            raise ValueError("only a checkpoint with a question is saved")
        checkpoint = fitted_checkpoint(checkpoint)
        if checkpoint.trimmed:
            log.warning("checkpoint of %s trimmed to fit its store: %s", question,
                        checkpoint.trimmed)  # fmt: skip
        if self._given_answer(question) is not None:  # never overwrite an answered one
            raise CheckpointConflict(
                f"question {question} was answered already, yet the run asks it again "
                "(its checkpoint could not be read back)"
            )
        _put(CHECKPOINT_KEY.format(question=question), checkpoint.to_json())
        _put(QUESTION_KEY.format(question=question), fitted_request(question_text(checkpoint)))
        return checkpoint

    def delivered(self, question: str) -> bool:
        """Whether an earlier try of this run delivered the task approved in `question`."""
        return _read(DELIVERED_KEY.format(question=question)) is not None

    def mark_delivered(self, question: str) -> None:
        """The approved task's file and callback of `question` are delivered."""
        _put(DELIVERED_KEY.format(question=question), True)

    def _given_answer(self, question: str) -> HumanAnswer | None:
        """The answer the run was resumed with for `question`, if it ever was."""
        stored = _read(ANSWER_KEY.format(question=question))
        return None if stored is None else HumanAnswer.model_validate(stored)


def _read(key: str) -> Any:
    """A run input of this run (decoded), None if it has none of that key."""
    from prefect.input.actions import read_flow_run_input

    return read_flow_run_input(key)


def _put(key: str, value: Any) -> None:
    """Store a run input of this run, replacing one of the same key: a try of the run
    that stopped between storing and suspending stores it again (Prefect refuses a
    second input under one key, 409)."""
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError
    from prefect.input.actions import create_flow_run_input, delete_flow_run_input

    try:
        create_flow_run_input(key, value)
        return
    except ObjectAlreadyExists:
        pass
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 409:
            raise
    log.warning("run input %s was stored by an earlier try of this run; replaced", key)
    delete_flow_run_input(key)
    create_flow_run_input(key, value)


def _flow_run_id() -> UUID | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    return context.flow_run.id


def _expiry(paused: Any, timeout: int) -> str:
    """When Prefect will fail the run unanswered (RFC 3339, UTC)."""
    state = getattr(paused, "state", None)
    stamp = getattr(getattr(state, "state_details", None), "pause_timeout", None)
    moment = stamp or datetime.now(UTC) + timedelta(seconds=timeout)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _markdown(request: dict[str, Any]) -> str:
    """The question as Prefect's UI shows it beside the resume form."""
    return f"**{request['prompt']}**\n\n---\n\n{request['output'][:4000]}"
