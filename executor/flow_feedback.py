"""A person's review of a flow's `@human_feedback` steps, as CrewAI asks for it, across runs.

CrewAI collects a step's feedback through a `HumanFeedbackProvider`: the decorator's own,
else the process-wide default `flow_config.hitl_provider`, else the terminal. edgecrew
sets that default while a job's flow runs (`asking_through_the_job`) to `PausingFeedback`,
which raises CrewAI's `HumanFeedbackPending`, its signal for feedback that comes later:
the flow stops at the step and `kickoff` returns the pending context. The executor keeps
the context and the flow's state in the job's checkpoint (`executor.human_input`) and
suspends the Prefect run as for a crew's question (`executor.run_input`).

The resumed run, in a new process, rebuilds the flow the way CrewAI resumes one that
waited on an external reviewer: `Flow.from_pending(flow_id, persistence)` with a
persistence backend (`JobFlowPersistence`) that holds what the checkpoint kept, then
`Flow.resume(feedback)`, which treats the reply exactly as an answer on the terminal
(empty: approval, the `default_outcome` or first `emit` outcome; text: collapsed to an
`emit` outcome by the step's LLM, or kept as plain feedback) and goes on from the step's
listeners: the steps before it never run again. A later step that asks pauses again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from crewai.flow.async_feedback import HumanFeedbackPending, PendingFeedbackContext
from crewai.flow.persistence.base import FlowPersistence
from pydantic import BaseModel, PrivateAttr
from pydantic_core import to_jsonable_python

from executor.human_input import Checkpoint

#: What the edge takes of a question's prompt (`ExecutorInputRequest.prompt`).
MAX_PROMPT_CHARS = 4000


class NestedFlowFeedback(RuntimeError):
    """A flow the job's flow started asked for feedback: only the job's own flow can ask."""


class PausingFeedback:
    """A CrewAI `HumanFeedbackProvider` that pauses the job's flow instead of reading stdin."""

    def __init__(self, flow: Any) -> None:
        self._flow = flow

    def request_feedback(self, context: PendingFeedbackContext, flow: Any) -> str:
        if flow is not self._flow:
            # Its `kickoff` would hand the pending state back to the step that started it
            # as a return value, and the job's flow would go on with that.
            raise NestedFlowFeedback(
                f"step {context.method_name!r} of {type(flow).__name__}, a flow started by "
                "the job's flow, asks for feedback: only the job's own flow can ask"
            )
        raise HumanFeedbackPending(context=context)


@contextmanager
def asking_through_the_job(flow: Any) -> Iterator[None]:
    """Within the block, `@human_feedback` steps of `flow` that name no provider pause."""
    from crewai.flow.flow_config import flow_config

    previous = flow_config.hitl_provider
    flow_config.hitl_provider = PausingFeedback(flow)
    try:
        yield
    finally:
        flow_config.hitl_provider = previous


class JobFlowPersistence(FlowPersistence):
    """The paused flow's state and pending context from the job's checkpoint, for CrewAI's
    `Flow.from_pending`; it becomes the resumed flow's backend.

    A backend given to a flow replaces the one its `@persist` names, so the states the
    resumed flow saves are passed on to that one (the method's, else the flow's), as a
    fresh instance would have saved them."""

    persistence_type: str = "edgecrew-job"
    _pending: tuple[dict[str, Any], PendingFeedbackContext] | None = PrivateAttr(default=None)
    _definition: Any = PrivateAttr(default=None)

    @classmethod
    def holding(
        cls, state: dict[str, Any], context: PendingFeedbackContext, definition: Any
    ) -> JobFlowPersistence:
        backend = cls()
        backend._pending = (state, context)
        backend._definition = definition
        return backend

    def init_db(self) -> None:
        return None

    def save_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any] | BaseModel
    ) -> None:
        if (declared := self._declared(method_name)) is not None:
            declared.save_state(flow_uuid, method_name, state_data)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        declared = self._declared(None)
        return None if declared is None else declared.load_state(flow_uuid)

    def save_pending_feedback(
        self,
        flow_uuid: str,
        context: PendingFeedbackContext,
        state_data: dict[str, Any] | BaseModel,
    ) -> None:
        # The job keeps its own copy (`asked`); the flow's `@persist` backend gets one as
        # on the first run, where CrewAI saved the pause there.
        if (declared := self._declared(None)) is not None:
            declared.save_pending_feedback(flow_uuid, context, state_data)

    def load_pending_feedback(
        self, flow_uuid: str
    ) -> tuple[dict[str, Any], PendingFeedbackContext] | None:
        if self._pending is None or self._pending[1].flow_id != flow_uuid:
            return None
        return self._pending

    def clear_pending_feedback(self, flow_uuid: str) -> None:
        self._pending = None
        if (declared := self._declared(None)) is not None:
            declared.clear_pending_feedback(flow_uuid)

    def _declared(self, method_name: str | None) -> FlowPersistence | None:
        """The backend the flow's `@persist` names for `method_name` (None: the flow's),
        as CrewAI picks it (`Flow._persist_method_completion`); None if none is named."""
        definition = self._definition
        if definition is None:
            return None
        method = definition.methods.get(method_name) if method_name else None
        persist = method.persist if method is not None and method.persist is not None else None
        persist = persist or definition.persist
        if persist is None or not persist.enabled:
            return None
        backend = persist.persistence
        return backend if isinstance(backend, FlowPersistence) else None


def asked(
    checkpoint: Checkpoint, flow: Any, pending: HumanFeedbackPending, steps: list[str]
) -> Checkpoint:
    """The checkpoint of a flow paused on a step's question: the next question, with all
    the resumed run needs (the context CrewAI made, the state, the feedback so far)."""
    context = pending.context
    number = checkpoint.asked + 1
    previous = checkpoint.pending or {}
    again = "flow" in previous and previous.get("task") == context.method_name
    record = {
        "question": f"q{number}",
        "task": context.method_name,
        "prompt": str(context.message)[:MAX_PROMPT_CHARS],
        "output": _output_text(context.method_output),
        "outcomes": [str(outcome) for outcome in context.emit] if context.emit else None,
        # The same step asking again (its feedback routed back to it) is its next round.
        "round": int(previous.get("round") or 0) + 1 if again else 1,
        "answer": None,
        "flow": _json_safe({
            "context": context.to_dict(),
            "state": flow.state,
            "history": [_feedback_json(result) for result in flow.human_feedback_history],
            "steps": list(steps),
        }),
    }  # fmt: skip
    return replace(checkpoint, asked=number, pending=record)


def answered_step(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The flow's part of a checkpoint whose step's question was answered, else None."""
    pending = checkpoint.pending
    if pending is None or "flow" not in pending or pending.get("answer") is None:
        return None
    return pending


def restored(cls: type, step: dict[str, Any], *, executor_llm: bool) -> tuple[Any, str]:
    """The paused flow rebuilt by CrewAI from the checkpoint, ready for `resume`, and the
    reply to resume it with. With `executor_llm` (`llm = "executor"`) the step's feedback
    is collapsed to an outcome by the executor's LLM, not the one the step names."""
    kept = step["flow"]
    trace = kept["context"].get("trace_context")  # ids kept as text (`_json_safe`)
    context = PendingFeedbackContext.from_dict(
        {**kept["context"], "trace_context": [int(i) for i in trace] if trace else None}
    )
    definition = cls.flow_definition()  # type: ignore[attr-defined]
    if context.method_name not in definition.methods:
        raise LookupError(
            f"the flow paused at step {context.method_name!r}, which {cls.__name__} no "
            "longer has (another version of the crew runs now)"
        )
    if executor_llm:
        context.llm = None  # CrewAI then builds the default LLM: the executor's, in a job
    history = [_feedback_result(result) for result in kept.get("history") or ()]
    backend = JobFlowPersistence.holding(dict(kept["state"]), context, definition)
    flow = cls.from_pending(  # type: ignore[attr-defined]
        context.flow_id, backend,
        # Not kept by CrewAI's persistence: restored so later steps see all the feedback.
        human_feedback_history=history, last_human_feedback=history[-1] if history else None,
    )  # fmt: skip
    return flow, str(step["answer"])


def _json_safe(value: Any) -> Any:
    """As JSON (a model's dump, a datetime's text): the checkpoint is stored as JSON, by
    Prefect's orjson, which refuses integers past 64 bits (CrewAI's trace ids): those
    are kept as their text."""
    safe = json.loads(json.dumps(to_jsonable_python(value, fallback=str), default=str))
    return _small_ints(safe)


def _small_ints(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, list):
        return [_small_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _small_ints(item) for key, item in value.items()}
    return value


def _output_text(output: Any) -> str:
    """The output under review as the person reads it: text, or its JSON."""
    if isinstance(output, str):
        return output
    return json.dumps(_json_safe(output), ensure_ascii=False)


def _feedback_json(result: Any) -> dict[str, Any]:
    return {
        "output": result.output,
        "feedback": result.feedback,
        "outcome": result.outcome,
        "timestamp": result.timestamp.isoformat(),
        "method_name": result.method_name,
        "metadata": result.metadata,
    }


def _feedback_result(data: dict[str, Any]) -> Any:
    from crewai.flow.human_feedback import HumanFeedbackResult

    return HumanFeedbackResult(
        output=data.get("output"),
        feedback=str(data.get("feedback") or ""),
        outcome=data.get("outcome"),
        timestamp=datetime.fromisoformat(data["timestamp"]),
        method_name=str(data.get("method_name") or ""),
        metadata=dict(data.get("metadata") or {}),
    )


def missing_crewai_hooks() -> list[str]:
    """What this module relies on in CrewAI that this CrewAI lacks (`check_runtime`):
    without them a `@human_feedback` step would fail mid-job, or read stdin."""
    from crewai.flow.flow import Flow

    missing = []
    try:
        from crewai.flow.flow_config import flow_config

        if not isinstance(getattr(type(flow_config), "hitl_provider", None), property):
            missing.append("crewai.flow.flow_config.flow_config.hitl_provider")
    except ImportError:
        missing.append("crewai.flow.flow_config.flow_config")
    wanted = ("from_pending", "resume", "flow_definition")
    missing += [f"crewai.flow.Flow.{name}" for name in wanted if not hasattr(Flow, name)]
    for field_name in ("human_feedback_history", "last_human_feedback"):
        if field_name not in Flow.model_fields:
            missing.append(f"crewai.flow.Flow.{field_name}")
    for name in ("to_dict", "from_dict"):
        if not hasattr(PendingFeedbackContext, name):
            missing.append(f"crewai.flow.async_feedback.PendingFeedbackContext.{name}")
    if not hasattr(FlowPersistence, "load_pending_feedback"):
        missing.append("crewai.flow.persistence.FlowPersistence.load_pending_feedback")
    return missing
