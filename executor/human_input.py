"""Human review of a crew's tasks (`human_input=True`), as CrewAI asks for it, across runs.

CrewAI asks a person through its pluggable human-input provider
(`crewai.core.providers.human_input`): once the agent of a `human_input` task has its
final answer, the provider is handed the answer; an empty reply approves it, any other
text is appended to the agent's conversation as feedback and the agent answers again,
and asks again. CrewAI's default provider reads the terminal; edgecrew's
(`PausingHumanInput`) raises `InputRequested` instead, and the flow (`executor.flows`)
suspends the Prefect run until the job's client answers (`executor.run_input`).

A resumed run starts again from the top, in a new process, maybe on another machine, so
what the crew had done is kept in a `Checkpoint`: the outputs of the tasks it finished
(restored with CrewAI's own checkpoint-resume path: a crew resuming skips every task
that already has an output, `Crew._get_execution_start_index`), and the answer awaiting
review with the agent's conversation. Approved, that answer becomes its task's output;
with feedback, the task's agent resumes its conversation from the checkpoint (the
provider's `setup_messages` hook, which CrewAI offers for conversation resumption),
reads the feedback, and answers again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: The text a person is shown with each question.
REVIEW_PROMPT = (
    "Review the output of task {task!r}: approve it, or give feedback and the task's agent "
    "will redo it with your feedback and ask again."
)


@dataclass(frozen=True)
class Checkpoint:
    """What a job's crew has done, as JSON: kept between the runs of one suspended job."""

    #: Questions asked so far; the next is `q{asked + 1}`.
    asked: int = 0
    #: Finished tasks: `{"index", "output"}`, the output as `TaskOutput.model_dump()`.
    completed: tuple[dict[str, Any], ...] = ()
    #: The answer awaiting review: `{"question", "index", "task", "output", "messages",
    #: "feedback"}`; `feedback` is set once the person sent some (the task runs again).
    #: A flow's step keeps `{"question", "task", "prompt", "output", "outcomes", "round",
    #: "flow", "answer"}` instead (`executor.flow_feedback`); `answer` is set once answered.
    pending: dict[str, Any] | None = None
    #: The run directory's files when it stopped (`executor.run_context.list_files`).
    files: tuple[dict[str, Any], ...] = field(default=())
    #: The crew that made it, `{"fingerprint", "version"}` (`executor.checkpoint_guards`).
    crew: dict[str, Any] | None = None
    #: What was left out to fit its store, if anything (`executor.checkpoint_guards`).
    trimmed: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "completed": list(self.completed),
            "pending": self.pending,
            "files": list(self.files),
            "crew": self.crew,
            "trimmed": self.trimmed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            asked=int(data.get("asked") or 0),
            completed=tuple(data.get("completed") or ()),
            pending=data.get("pending"),
            files=tuple(data.get("files") or ()),
            crew=data.get("crew"),
            trimmed=data.get("trimmed"),
        )

    @property
    def question(self) -> str | None:
        """The id of the question awaiting an answer, if any."""
        return None if self.pending is None else str(self.pending["question"])

    def answered(self, answer: Mapping[str, Any], *, delivered: bool = False) -> Checkpoint:
        """After the person's answer: approved, the pending output becomes its task's;
        with feedback, the task stays pending, to run again with it. `delivered`: an
        earlier try of this run already called the approved task's callback."""
        if self.pending is None:
            raise ValueError("no question is waiting for an answer")
        feedback = str(answer.get("feedback") or "").strip()
        if "flow" in self.pending:  # a flow's step: CrewAI's resume takes the reply as it is
            return replace(self, pending={**self.pending, "answer": feedback})
        if not feedback:
            output = dict(self.pending["output_record"])
            # Approved in this run: its file and callbacks are still to come (loaded_crew).
            done = {"index": self.pending["index"], "output": output, "approved": True,
                    "delivered": delivered}  # fmt: skip
            return replace(self, completed=(*self.completed, done), pending=None)
        return replace(self, pending={**self.pending, "feedback": feedback})


class InputRequested(BaseException):
    """A task's answer needs a person's review; raised through CrewAI to the flow.

    A BaseException, like Prefect's own signals, so that CrewAI's `except Exception`
    (an agent retries a task that raised) lets it through untouched.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(f"question {checkpoint.question} is waiting for an answer")
        self.checkpoint = checkpoint


class PausingHumanInput:
    """A CrewAI `HumanInputProvider` that asks through the job instead of the terminal."""

    def __init__(self, crew: Any, checkpoint: Checkpoint, completed: list[dict[str, Any]]) -> None:
        self._tasks = list(crew.tasks)
        self._checkpoint = checkpoint
        #: Finished so far in this run, appended by the task callbacks (`loaded_crew`).
        self._completed = completed
        self._resumed = False

    def setup_messages(self, context: Any) -> bool:
        """Resume the conversation of a task its reviewer sent feedback on."""
        pending = self._checkpoint.pending
        if (
            self._resumed
            or pending is None
            or not pending.get("feedback")
            # `None` for a task that is not the crew's (a planner's, a manager's)
            or self._index(context) != pending["index"]
        ):
            return False
        self._resumed = True
        context.messages.extend(dict(m) for m in pending["messages"])
        context.messages.append(context._format_feedback_message(pending["feedback"]))
        return True

    def post_setup_messages(self, context: Any) -> None:
        return None

    def handle_feedback(self, formatted_answer: Any, context: Any) -> Any:
        raise InputRequested(self._request(formatted_answer, context))

    async def handle_feedback_async(self, formatted_answer: Any, context: Any) -> Any:
        raise InputRequested(self._request(formatted_answer, context))

    @staticmethod
    def _get_output_string(answer: Any) -> str:
        """The answer as text (a structured output as its JSON), as CrewAI's providers."""
        output = answer.output
        return output if isinstance(output, str) else str(output.model_dump_json())

    def _request(self, answer: Any, context: Any) -> Checkpoint:
        index = self._index(context)
        if index is None:
            task_name = getattr(context.task, "name", context.task)
            raise LookupError(f"task {task_name!r} is not one of the crew's")
        task = self._tasks[index]
        output = (
            answer.output if isinstance(answer.output, str) else answer.output.model_dump_json()
        )
        record = {
            "description": task.description,
            "name": task.name,
            "expected_output": task.expected_output,
            "raw": output,
            "agent": getattr(context.agent, "role", "") or "",
        }
        asked = self._checkpoint.asked + 1
        pending = {
            "question": f"q{asked}",
            "index": index,
            "task": task.name or f"task_{index + 1}",
            "output": output,
            "output_record": record,
            "messages": _conversation(context.messages, output),
            "feedback": None,
            "round": 1 + int((self._checkpoint.pending or {}).get("round") or 0)
            if (self._checkpoint.pending or {}).get("index") == index
            else 1,
        }
        completed = tuple(
            {key: value for key, value in done.items() if key not in ("approved", "delivered")}
            for done in (*self._checkpoint.completed, *self._completed)
        )
        return replace(self._checkpoint, asked=asked, completed=completed, pending=pending)

    def _index(self, context: Any) -> int | None:
        """The crew's index of the task being run; None for one that is not the crew's."""
        task = getattr(context, "task", None)
        for index, candidate in enumerate(self._tasks):
            if candidate is task:
                return index
        return None


def _conversation(messages: list[Any], answer: str) -> list[dict[str, Any]]:
    """The agent's conversation ending with its answer, as JSON (CrewAI's messages are
    plain dicts of text): feedback is read against the answer it is about."""
    kept: list[dict[str, Any]] = json.loads(json.dumps(list(messages), default=str))
    if not kept or kept[-1].get("role") != "assistant":
        kept.append({"role": "assistant", "content": answer})
    return kept


def restore(crew: Any, checkpoint: Checkpoint) -> int:
    """Give the crew's finished tasks their outputs back, so its kickoff resumes after
    them (CrewAI's checkpoint resume); how many tasks were restored."""
    if not checkpoint.completed:
        return 0
    from crewai.tasks.task_output import TaskOutput

    for done in checkpoint.completed:
        crew.tasks[int(done["index"])].output = TaskOutput.model_validate(done["output"])
    # What `Crew.from_checkpoint` sets: kickoff then starts at the first task without an
    # output, and gives the restored outputs to the tasks after as their context.
    crew.checkpoint_kickoff_event_id = f"edgecrew-resume-{checkpoint.asked}"
    return len(checkpoint.completed)


def output_record(task: Any, output: Any) -> dict[str, Any]:
    """A finished task's output as the checkpoint keeps it (no conversation, no model)."""
    dumped: dict[str, Any] = output.model_dump(mode="json", exclude={"pydantic", "messages"})
    dumped.setdefault("description", task.description)
    safe: dict[str, Any] = json.loads(json.dumps(dumped, default=str))
    return safe


def question_text(checkpoint: Checkpoint) -> dict[str, Any]:
    """The job's `input_request` for the pending question (what the edge shows)."""
    pending = checkpoint.pending
    if pending is None:
        raise ValueError("no question is pending")
    request = {
        "id": pending["question"],
        "kind": "review",
        "task": pending["task"],
        # A flow's `@human_feedback` step asks in its own words (`executor.flow_feedback`).
        "prompt": pending.get("prompt") or REVIEW_PROMPT.format(task=pending["task"]),
        "output": pending["output"],
        "round": pending["round"],
    }
    if pending.get("outcomes"):  # the step's `emit`: what the feedback routes to
        request["outcomes"] = list(pending["outcomes"])
    return request


#: What a question's texts may take of the job's record (the edge keeps it, and shows it).
MAX_REQUEST_OUTPUT_CHARS = 16 * 1024


def fitted_request(request: dict[str, Any]) -> dict[str, Any]:
    """The question as the edge takes it: the output under review cut to a size."""
    output = str(request.get("output") or "")
    if len(output) > MAX_REQUEST_OUTPUT_CHARS:
        return {**request, "output": output[:MAX_REQUEST_OUTPUT_CHARS] + " …[cut]",
                "output_truncated": True}  # fmt: skip
    return dict(request)


def missing_crewai_hooks() -> list[str]:
    """What this module relies on in CrewAI that this CrewAI lacks (`check_runtime`):
    without them a `human_input` task would fail mid-job, not at the worker's start."""
    import importlib

    wanted = (
        ("crewai.core.providers.human_input", "set_provider"),
        ("crewai.core.providers.human_input", "reset_provider"),
        ("crewai.agents.agent_executor", "AgentExecutor._format_feedback_message"),
        ("crewai", "Crew._get_execution_start_index"),
    )
    missing = []
    for module_name, path in wanted:
        try:
            found: Any = importlib.import_module(module_name)
            for part in path.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{path}")
    try:
        from crewai import Crew

        if "checkpoint_kickoff_event_id" not in Crew.model_fields:
            missing.append("crewai.Crew.checkpoint_kickoff_event_id")
    except ImportError:
        pass  # reported above
    return missing
