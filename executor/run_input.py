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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.input import RunInput

from executor.human_input import Checkpoint, fitted_request, question_text

log = logging.getLogger("edgecrew.executor")

CHECKPOINT_KEY = "edgecrew-checkpoint-{question}"
#: The question as the edge shows it (`input_request`, less `expires_at`): the edge reads
#: it from here when the run's `waiting` callback did not reach it.
QUESTION_KEY = "edgecrew-question-{question}"
PAUSE_KEY = "edgecrew-{question}"


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

    def save(self, checkpoint: Checkpoint) -> None:
        """Keep the checkpoint of a question about to be asked (before the run suspends)."""
        from prefect.input.actions import create_flow_run_input

        question = checkpoint.question
        if question is None:
            raise ValueError("only a checkpoint with a question is saved")
        create_flow_run_input(CHECKPOINT_KEY.format(question=question), checkpoint.to_json())
        asked = fitted_request(question_text(checkpoint))
        create_flow_run_input(QUESTION_KEY.format(question=question), asked)


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
