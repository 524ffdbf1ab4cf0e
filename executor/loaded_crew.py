"""One configured crew, loaded the way its own project runs it, described and kicked off.

Three kinds, as CrewAI's CLI makes them:

- classic (`crewai create crew --classic`): a `@CrewBase` class, run as its `main.py`
  runs it, `Class().crew().kickoff(inputs=...)`;
- JSON-first (`crewai create crew`): a `crew.jsonc`, loaded by CrewAI's own loader;
- flow (`crewai create flow`): a `Flow` subclass, `FlowClass().kickoff(inputs=...)`.

Loading builds the crew once without running it: that checks it (a broken crew fails
here, at worker start, not in a job) and gives its description: inputs, task (or step)
names and a version.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

from executor.config import CrewEntry, import_path
from executor.human_input import (
    Checkpoint,
    InputRequested,
    PausingHumanInput,
    output_record,
    restore,
)
from shared.crews import INPUT_TYPES, CrewSpec, definition_digest

#: A placeholder as CrewAI's interpolation finds it (`interpolate_only`): it also finds
#: `name` in `{{name}}` and then requires an input for it, so edgecrew does too.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)}")
#: An input used in a task's `output_file` names a file in the run's own directory: one
#: part of a path, so a job can never make a crew write elsewhere.
FILE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_ .-]*$"
#: Progress: (completed, total, the next task or step or None).
Progress = Callable[[int, int, str | None], None]


class CrewLoadError(Exception):
    """A configured crew cannot be loaded; the message names the crew and the cause."""

    def __init__(self, entry: CrewEntry, cause: BaseException | str) -> None:
        detail = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"crew {entry.name!r} ({entry.source}, from {entry.origin}): {detail}")
        self.entry = entry


@dataclass(frozen=True)
class LoadedCrew:
    entry: CrewEntry
    kind: str  # "classic", "json" or "flow"
    target: Any  # the class, or the crew.jsonc path
    spec: CrewSpec
    defaults: Mapping[str, Any]  # the schema's, then the project's, then edgecrew.toml's
    project_root: Path | None = None  # the folder of its pyproject.toml (or crew.jsonc)
    #: A digest of its tasks as defined: what a human-review checkpoint's task indices and
    #: outputs depend on (`executor.checkpoint_guards.check_same_crew`); "" for a flow.
    fingerprint: str = ""

    def kickoff(
        self,
        inputs: Mapping[str, Any],
        *,
        llm: Any,
        progress: Progress,
        checkpoint: Checkpoint | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Run on `inputs` (over the defaults); the job's result. Call it inside
        `executor.run_context.running_job`, which gives unnamed agents their LLM.

        With a `checkpoint` the crew resumes after the tasks it records as finished. A
        task with `human_input` raises `InputRequested` (`executor.human_input`), and so
        does a flow's `@human_feedback` step (`executor.flow_feedback`). Once an approved
        task's callback ran, `on_delivered` is told (a retry of the run then does not call
        it again)."""
        merged = {**self.defaults, **inputs}
        if self.kind == "flow":
            # A flow's `id` input would load that saved state (`@persist`): another job's.
            merged.pop("id", None)
            return _kickoff_flow(
                self.target, merged, progress, list(self.spec.tasks),
                checkpoint=checkpoint or Checkpoint(), executor_llm=self.entry.llm == "executor",
            )  # fmt: skip
        from crewai.core.providers.human_input import reset_provider, set_provider

        crew = self.build()
        if self.entry.llm == "executor":
            _use_llm_everywhere(crew, llm)
        _check_output_files(crew, merged)
        checkpoint = checkpoint or Checkpoint()
        counter = _TaskProgress(progress, list(self.spec.tasks), done=restore(crew, checkpoint))
        if checkpoint.completed:
            counter.report()  # a task approved since the last run is done now
        finished: list[dict[str, Any]] = []
        approved = {int(done["index"]) for done in checkpoint.completed if done.get("approved")}
        delivered = {int(done["index"]) for done in checkpoint.completed if done.get("delivered")}
        for index, task in enumerate(crew.tasks):
            # On each task rather than as the crew's task_callback, which CrewAI gives
            # only to tasks without a callback of their own; theirs still run after.
            then = task.callback or crew.task_callback
            if index in approved:  # done now: what CrewAI does when a task completes
                # Its file again (the same text) on a retry, its callback only once.
                _finish_approved(task, merged, None if index in delivered else then)
            task.callback = _AfterTask(counter, then, _Finished(finished, index, task))
        if approved - delivered and on_delivered is not None:
            on_delivered()
        token = set_provider(PausingHumanInput(crew, checkpoint, finished))
        try:
            output = crew.kickoff(inputs=merged)
        finally:
            reset_provider(token)
        result: dict[str, Any] = {
            "output": str(output.raw),
            "tasks": [{"name": t.name, "output": str(t.raw)} for t in output.tasks_output],
        }
        if output.json_dict:
            result["json"] = output.json_dict
        return result

    def build(self) -> Any:
        """A fresh Crew (classic, JSON-first) or Flow instance, as its project builds it."""
        return _build(self.kind, self.target)


def load(entry: CrewEntry) -> LoadedCrew:
    """Import, build and describe the crew; CrewLoadError says what failed."""
    try:
        with import_path(entry):
            kind, target, project_defaults = _resolve(entry)
            defaults = {**project_defaults, **entry.defaults}
            if kind == "flow":
                built = None
                inputs, tasks, definition = _describe_flow(target)
            else:
                built = _build(kind, target)
                inputs, tasks, definition = _describe_crew(built, defaults)
        if entry.inputs is not None:
            inputs = dict(entry.inputs)
        # As the edge will see it (a TOML date becomes its text), and checked as the edge
        # checks it: a crew the edge would refuse stops the worker instead.
        inputs = json.loads(json.dumps(inputs, default=str))
        spec = CrewSpec.from_public(
            CrewSpec(
                name=entry.name,
                description=entry.description or _description(target, built, kind),
                pool=entry.pool,
                inputs=inputs,
                kind="flow" if kind == "flow" else "crew",
                tasks=tuple(tasks),
                version=_package_version(target, kind)
                + "+"
                + definition_digest([definition, inputs]),
            ).public()
        )
    except CrewLoadError:
        raise
    except Exception as exc:
        raise CrewLoadError(entry, exc) from exc
    # A default in the schema is applied like the project's own.
    schema_defaults = {
        name: rule["default"]
        for name, rule in inputs.get("properties", {}).items()
        if isinstance(rule, dict) and "default" in rule
    }
    fingerprint = "" if kind == "flow" else definition_digest(definition["tasks"])
    return LoadedCrew(
        entry, kind, target, spec, {**schema_defaults, **defaults}, _project_root(target, kind),
        fingerprint=fingerprint,
    )  # fmt: skip


# --- resolving a source -----------------------------------------------------------------


def _resolve(entry: CrewEntry) -> tuple[str, Any, dict[str, Any]]:
    """(kind, class or path, the project's own input defaults)."""
    if entry.is_json:
        return _json_crew(entry, Path(entry.source))
    module_name, _, attribute = entry.source.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if isinstance(target, str | Path) and str(target).endswith((".json", ".jsonc")):
        # An entry point may name a crew.jsonc, relative to the module that names it.
        named = Path(target)
        module_file = getattr(sys.modules[module_name], "__file__", None)
        if not named.is_absolute() and module_file:
            named = Path(module_file).parent / named
        return _json_crew(entry, named.resolve())
    from crewai.flow.flow import Flow

    if isinstance(target, type) and issubclass(target, Flow):
        return "flow", target, {}
    if isinstance(target, type) and getattr(target, "is_crew_class", False):
        return "classic", target, {}
    raise CrewLoadError(entry, "the source is not a @CrewBase class, a Flow class or a crew.jsonc")


def _json_crew(entry: CrewEntry, path: Path) -> tuple[str, Any, dict[str, Any]]:
    if not path.is_file():
        raise CrewLoadError(entry, f"{path} is not a file")
    from crewai.project.json_loader import load_jsonc_file

    definition = load_jsonc_file(path)
    defaults = definition.get("inputs") if isinstance(definition, dict) else None
    return "json", path, dict(defaults or {})


def _crew_method(instance: Any) -> Callable[[], Any]:
    """The `@crew` method of a @CrewBase instance (named `crew` by convention only)."""
    for name in dir(type(instance)):
        if getattr(getattr(type(instance), name, None), "is_crew", False):
            return getattr(instance, name)  # type: ignore[no-any-return]
    return instance.crew  # type: ignore[no-any-return]


def _build(kind: str, target: Any) -> Any:
    if kind == "json":
        from crewai.project.crew_loader import load_crew

        crew, _ = load_crew(target)
        return crew
    instance = target()
    return instance if kind == "flow" else _crew_method(instance)()


# --- describing it ----------------------------------------------------------------------


def _describe_crew(crew: Any, defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], Any]:
    """Inputs from the `{placeholders}` of agents and tasks, task names, the definition."""
    texts = [getattr(a, k, None) for a in crew.agents for k in ("role", "goal", "backstory")]
    task_fields = ("description", "expected_output", "output_file")
    texts += [getattr(t, k, None) for t in crew.tasks for k in task_fields]
    names = sorted({name for text in texts if text for name in PLACEHOLDER.findall(text)})
    in_file_names = {n for t in crew.tasks for n in PLACEHOLDER.findall(t.output_file or "")}
    properties: dict[str, Any] = {}
    for name in names:
        # A string, unless a default says otherwise (`"sentences": 3` takes numbers).
        rule: dict[str, Any] = {"type": _json_type(defaults.get(name, ""))}
        if name in in_file_names:
            rule["pattern"] = FILE_NAME_PATTERN
        if name in defaults:
            rule["default"] = defaults[name]
        properties[name] = rule
    inputs = {
        "type": "object",
        "properties": properties,
        "required": [name for name in names if name not in defaults],
        "additionalProperties": False,
    }
    tasks = [t.name or f"task_{i + 1}" for i, t in enumerate(crew.tasks)]
    definition = {
        "agents": [_agent_definition(a) for a in crew.agents],
        "tasks": [_task_definition(t) for t in crew.tasks],
        "process": str(crew.process),
        "defaults": dict(defaults),
    }
    return inputs, tasks, definition


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _agent_definition(agent: Any) -> list[Any]:
    tools = sorted(getattr(tool, "name", str(tool)) for tool in agent.tools or [])
    return [agent.role, agent.goal, agent.backstory, getattr(agent.llm, "model", None), tools]


def _task_definition(task: Any) -> list[Any]:
    # CrewAI marks an unset context with a sentinel object, not None.
    given = task.context if isinstance(task.context, list) else []
    context = [getattr(c, "name", None) for c in given]
    role = getattr(task.agent, "role", None)
    return [task.name, task.description, task.expected_output, task.output_file, role, context]


def _describe_flow(cls: Any) -> tuple[dict[str, Any], list[str], Any]:
    """Inputs from the flow's typed state (an open object for a dict state), its steps.

    From the class, not an instance: a state with a required field cannot be built
    without the inputs a job will bring."""
    from pydantic import BaseModel

    state_type = getattr(cls, "_initial_state_t", None)
    if not (isinstance(state_type, type) and issubclass(state_type, BaseModel)):
        inputs: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": True}
    else:
        schema = state_type.model_json_schema()
        properties = {
            name: _input_rule(rule)
            for name, rule in schema.get("properties", {}).items()
            if name != "id"  # CrewAI's own run id, not an input
        }
        inputs = {
            "type": "object",
            "properties": properties,
            "required": [n for n in schema.get("required", []) if n in properties],
            "additionalProperties": False,
        }
    steps = list(cls.flow_definition().methods)
    return inputs, steps, {"source": _package_sources(cls), "inputs": inputs}


def _package_sources(cls: Any) -> dict[str, str]:
    """A flow's definition for its version: the text of its package's code and configs
    (the crews a flow calls live beside it, as `crewai create flow` lays them out)."""
    module = inspect.getmodule(cls)
    module_file = getattr(module, "__file__", None)
    if not module_file:
        return {"qualname": cls.__qualname__}
    folder = Path(module_file).parent
    suffixes = {".py", ".yaml", ".yml", ".json", ".jsonc", ".toml"}
    files = sorted(p for p in folder.rglob("*") if p.suffix in suffixes and p.is_file())[:500]
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8", errors="replace")
            for p in files}  # fmt: skip


def _input_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic property as the catalog's schema subset: its JSON type (every type of a
    union, `null` for an Optional; a nested model is an object), description, default
    and enum. Deeper structure is the flow's state model to check."""
    variants = rule.get("anyOf") or [rule]
    kinds: list[str] = []
    for variant in variants:
        kind = variant.get("type", "object")  # a `$ref` to a nested model
        kind = kind if kind in (*INPUT_TYPES, "null") else "object"
        if kind not in kinds:
            kinds.append(kind)
    out: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
    for key in ("description", "default", "enum"):
        if key in rule:
            out[key] = rule[key]
    return out


def _description(target: Any, built: Any, kind: str) -> str:
    doc = inspect.getdoc(target) if kind != "json" else None
    if kind == "json":
        doc = getattr(built, "name", None)
    return " ".join((doc or "").split())[:2000]


def _package_version(target: Any, kind: str) -> str:
    """The installed distribution's version, else the project's pyproject.toml's, else 0."""
    if kind == "json":
        return _pyproject_version(Path(target).parent) or "0"
    top = target.__module__.split(".")[0]
    for dist in packages_distributions().get(top, []):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    module_file = inspect.getsourcefile(target)
    for folder in Path(module_file).parents if module_file else []:
        if found := _pyproject_version(folder):
            return found
    return "0"


def _project_root(target: Any, kind: str) -> Path | None:
    """The project's folder: where its pyproject.toml is (a crew.jsonc's own folder)."""
    if kind == "json":
        return Path(target).parent
    module_file = inspect.getsourcefile(target)
    for folder in list(Path(module_file).parents)[:4] if module_file else []:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def _pyproject_version(folder: Path) -> str | None:
    path = folder / "pyproject.toml"
    if not path.is_file():
        return None
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    found = project.get("version")
    return str(found) if found else None


# --- progress ---------------------------------------------------------------------------


class _TaskProgress:
    """Counts finished tasks and reports progress (tasks may finish on CrewAI's threads)."""

    def __init__(self, progress: Progress, names: list[str], *, done: int = 0) -> None:
        self._progress = progress
        self._names = names
        self._done = done  # restored from a checkpoint: finished in an earlier run
        self._lock = threading.Lock()

    def task_done(self) -> None:
        with self._lock:
            self._done += 1
        self.report()

    def report(self) -> None:
        done = self._done
        upcoming = self._names[done] if done < len(self._names) else None
        self._progress(done, max(len(self._names), done), upcoming)


class _AfterTask:
    """A task's callback: progress, then the callback the task (or crew) had.

    A module-level class rather than a closure: CrewAI warns that closures cannot be
    serialized for its checkpoints.
    """

    def __init__(self, counter: _TaskProgress, then: Any, finished: _Finished) -> None:
        self._counter = counter
        self._then = then
        self._finished = finished

    def __call__(self, output: Any) -> None:
        self._finished(output)
        self._counter.task_done()
        if callable(self._then):
            self._then(output)


class _Finished:
    """Records a finished task's output for the job's checkpoint (`executor.human_input`)."""

    def __init__(self, into: list[dict[str, Any]], index: int, task: Any) -> None:
        self._into = into
        self._index = index
        self._task = task

    def __call__(self, output: Any) -> None:
        self._into.append({"index": self._index, "output": output_record(self._task, output)})


def _use_llm_everywhere(crew: Any, llm: Any) -> None:
    """`llm = "executor"`: the crew's agents and the LLMs it names for managing and
    planning all run on the executor's LLM. (`function_calling_llm`, deprecated by
    CrewAI, is left as it is.)"""
    for agent in crew.agents:
        agent.llm = llm
    if getattr(crew, "manager_agent", None) is not None:
        crew.manager_agent.llm = llm
    for field_name in ("manager_llm", "planning_llm"):
        if getattr(crew, field_name, None) is not None:
            setattr(crew, field_name, llm)
    if getattr(crew, "planning", False) and getattr(crew, "planning_llm", None) is None:
        crew.planning_llm = llm


def _finish_approved(task: Any, inputs: Mapping[str, Any], callback: Any) -> None:
    """A task whose answer was approved since the last run is restored, not run again:
    write its `output_file` and call its callback, as CrewAI does when a task completes."""
    output = task.output
    if task.output_file:
        path = Path(_file_name(task.output_file, inputs))
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(output.json_dict) if output.json_dict else str(output.raw)
        path.write_text(text, encoding="utf-8")
    if callable(callback):
        callback(output)


def _file_name(template: str, inputs: Mapping[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: str(inputs.get(m.group(1), m.group(0))), template)


def _check_output_files(crew: Any, inputs: Mapping[str, Any]) -> None:
    """Refuse inputs that would make a task's `output_file` leave the run's directory
    (CrewAI checks the template for `..`, not what the inputs make of it)."""
    for task in crew.tasks:
        if not task.output_file:
            continue
        named = _file_name(task.output_file, inputs)
        path = Path(named)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(
                f"task {task.name!r} would write {named!r}, outside the job's own directory; "
                "inputs used in file names may not hold '/' or '..'"
            )


def _kickoff_flow(
    cls: type,
    inputs: dict[str, Any],
    progress: Progress,
    steps: list[str],
    *,
    checkpoint: Checkpoint,
    executor_llm: bool,
) -> dict[str, Any]:
    """Run a flow, with progress after each step it finishes; or, when the checkpoint's
    question was answered, resume it from the step that asked."""
    from crewai.events import crewai_event_bus
    from crewai.events.types.flow_events import MethodExecutionFinishedEvent
    from crewai.flow.async_feedback import HumanFeedbackPending

    from executor import flow_feedback

    step = flow_feedback.answered_step(checkpoint)
    if step is None:
        flow = cls()
        finished: list[str] = []
        answer = None
    else:  # the steps before the question ran in earlier runs
        flow, answer = flow_feedback.restored(cls, step, executor_llm=executor_llm)
        finished = list(step["flow"]["steps"])
    lock = threading.Lock()

    def on_step(source: Any, event: Any) -> None:
        if source is not flow:  # a nested flow's step, or another run's
            return
        with lock:  # CrewAI runs handlers on a thread pool
            finished.append(event.method_name)
            done = len(finished)
        progress(done, max(len(steps), done), None)

    crewai_event_bus.on(MethodExecutionFinishedEvent)(on_step)
    try:
        with flow_feedback.asking_through_the_job(flow):
            if answer is None:
                output = flow.kickoff(inputs=inputs or None)
            else:
                output = _resume(flow, answer)
    finally:
        crewai_event_bus.off(MethodExecutionFinishedEvent, on_step)
    if isinstance(output, HumanFeedbackPending):  # a step asks: the job waits for its answer
        raise InputRequested(flow_feedback.asked(checkpoint, flow, output, finished))
    state = flow.state
    dumped = state if isinstance(state, dict) else state.model_dump(mode="json")
    return {
        "output": "" if output is None else str(output),
        "state": {k: v for k, v in dumped.items() if k != "id"},
        "steps": list(finished),
    }


def _resume(flow: Any, answer: str) -> Any:
    """CrewAI's `Flow.resume`, which refuses to run inside an event loop: there, on a
    thread of its own (as `Flow.kickoff` does), with this run's context."""
    import asyncio
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return flow.resume(answer)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, flow.resume, answer).result()
