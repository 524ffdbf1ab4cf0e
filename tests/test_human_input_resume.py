"""Resuming a crew that asked a person, when things go wrong between the runs: a
checkpoint too large for its store, a crew redeployed with other tasks, a run resumed
from Prefect itself (not through the edge), a retry of a run after the approval, and a
run that stopped between saving its checkpoint and suspending.

The executor's side runs a project made by CrewAI's CLI with the scripted LLM; where
Prefect's behaviour is the subject (its run-input store, its retries clearing the keys of
fired pauses, suspending and resuming) a real Prefect server runs the flow in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from executor.catalog import crew_for_run
from executor.checkpoint_guards import (
    MAX_CHECKPOINT_BYTES,
    CheckpointConflict,
    CheckpointTooLarge,
    CrewChanged,
    checkpoint_bytes,
    fitted_checkpoint,
)
from executor.human_input import Checkpoint
from shared.jobs import JobStatus, apply_event
from tests.crews.projects import _create
from tests.doubles.crew_llm import ScriptedLLM
from tests.test_executor import SETTINGS, FakeEdge, client
from tests.test_human_input import QUESTION, PlayedQuestions, Suspended, job

INPUTS = {"topic": "tides", "current_year": "2026"}
AT = "2026-12-01T12:00:00Z"


def pending(question: str = "q1", messages: int = 3, output: str = "x") -> dict[str, Any]:
    convo = [{"role": "user" if i % 2 else "assistant", "content": f"m{i} " + "w" * 100}
             for i in range(messages)]  # fmt: skip
    return {"question": question, "index": 1, "task": "reporting_task", "output": output,
            "output_record": {"raw": output}, "messages": convo, "feedback": None,
            "round": 1}  # fmt: skip


# --- 1. the size cap ---------------------------------------------------------------------


def test_a_checkpoint_within_the_cap_is_kept_as_it_is() -> None:
    small = Checkpoint(asked=1, pending=pending(), files=({"name": "a.md", "text": "y"},))
    assert fitted_checkpoint(small) is small and small.trimmed is None


def test_an_oversized_checkpoint_loses_the_middle_of_the_conversation_first() -> None:
    # A long agent conversation (tool calls, search results): its middle goes, its
    # first messages (the prompt) and its last (the answer) stay.
    long = pending(messages=40)
    checkpoint = Checkpoint(asked=1, pending=long, files=({"name": "a.md", "text": "kept"},))
    limit = checkpoint_bytes(checkpoint.to_json()) - 1000
    fitted = fitted_checkpoint(checkpoint, limit)
    assert fitted.pending is not None
    assert fitted.pending["messages"] == long["messages"][:2] + long["messages"][-1:]
    assert fitted.trimmed == {"messages_dropped": 37}
    assert fitted.files == checkpoint.files  # files untouched: enough was dropped already
    assert checkpoint_bytes(fitted.to_json()) <= limit
    # What is stored reads back the same, trimmed note included.
    assert Checkpoint.from_json(json.loads(json.dumps(fitted.to_json()))) == fitted


def test_then_the_texts_of_the_largest_files_which_then_do_not_come_back() -> None:
    files = ({"name": "big.md", "size": 60_000, "text": "b" * 60_000},
             {"name": "mid.md", "size": 30_000, "text": "m" * 30_000},
             {"name": "small.md", "size": 10, "text": "s" * 10})  # fmt: skip
    checkpoint = Checkpoint(asked=1, pending=pending(), files=files)
    fitted = fitted_checkpoint(checkpoint, 50_000)
    assert [f["name"] for f in fitted.files] == ["big.md", "mid.md", "small.md"]  # listed
    assert ["text" in f for f in fitted.files] == [False, True, True]
    assert fitted.trimmed == {"file_texts_dropped": ["big.md"]}


def test_a_checkpoint_too_large_even_trimmed_fails_with_a_clear_kind() -> None:
    # The finished tasks' outputs cannot be dropped: the crew would lose its work.
    done = ({"index": 0, "output": {"raw": "r" * (MAX_CHECKPOINT_BYTES + 1)}},)
    checkpoint = Checkpoint(asked=1, completed=done, pending=pending(messages=30))
    with pytest.raises(CheckpointTooLarge, match=r"q1 takes \d+ bytes even trimmed"):
        fitted_checkpoint(checkpoint)


# --- the executor, in-process (the scripted LLM, a stand-in for Prefect) -------------------


@pytest.fixture(scope="module")
def review_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review-resume")
    env = {"CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true"}
    _create(root, ["crew", "--classic", "--skip-provider", "resume_crew"], env)
    tasks = root / "resume_crew" / "src" / "resume_crew" / "config" / "tasks.yaml"
    tasks.write_text(tasks.read_text() + "  human_input: true\n")  # reporting_task, last
    return root / "resume_crew" / "src"


@pytest.fixture
def review(
    review_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ScriptedLLM]:
    config = tmp_path / "edgecrew.toml"
    config.write_text(f'[crews.review]\nsource = "resume_crew.crew:ResumeCrew"\n'
                      f'path = "{review_project}"\npool = "cpu"\n')  # fmt: skip
    monkeypatch.setenv("EDGECREW_CONFIG", str(config))
    crew_for_run.cache_clear()
    scripted = ScriptedLLM(model="scripted-fake")
    monkeypatch.setattr("executor.flows.build_llm", lambda settings: scripted)
    yield scripted
    crew_for_run.cache_clear()


def run(edge: FakeEdge, questions: Any) -> dict[str, Any]:
    from executor.flows import run_crew

    return run_crew("job_1", "tenant_a", "review", INPUTS, settings=SETTINGS,
                    edge=client(edge), questions=questions)  # fmt: skip


def test_a_checkpoint_keeps_the_crew_that_made_it_and_a_changed_crew_is_refused(
    review: ScriptedLLM,
) -> None:
    edge = FakeEdge()
    first = PlayedQuestions(Checkpoint(), {})
    with pytest.raises(Suspended):
        run(edge, first)
    (asked,) = first.saved
    loaded = crew_for_run("review")
    assert asked.crew == {"fingerprint": loaded.fingerprint, "version": loaded.spec.version}
    assert len(loaded.fingerprint) == 12
    calls = len(review.calls)

    # Redeployed meanwhile with other tasks: nothing is restored into the new crew, no
    # LLM call is made, the person is not asked again.
    made_elsewhere = replace(asked, crew={"fingerprint": "0123456789ab", "version": "0.1+old"})
    approved = PlayedQuestions(made_elsewhere, {"q1": {"approve": True, "feedback": ""}})
    with pytest.raises(CrewChanged, match=r"0\.1\+old.*submit the job again"):
        run(edge, approved)
    assert len(review.calls) == calls and approved.saved == []

    # The same tasks (another package version, say): it resumes as before.
    same_tasks = replace(asked, crew={**(asked.crew or {}), "version": "9.9+other"})
    result = run(edge, PlayedQuestions(same_tasks, {"q1": {"approve": True, "feedback": ""}}))
    assert [t["name"] for t in result["tasks"]] == ["research_task", "reporting_task"]


def test_the_crews_fingerprint_follows_its_tasks(review_project: Path, tmp_path: Path) -> None:
    from executor.config import load_config
    from executor.loaded_crew import load

    config = tmp_path / "edgecrew.toml"
    config.write_text(f'[crews.review]\nsource = "resume_crew.crew:ResumeCrew"\n'
                      f'path = "{review_project}"\npool = "cpu"\n')  # fmt: skip
    entry = load_config(config).crews["review"]
    before = load(entry).fingerprint
    tasks = review_project / "resume_crew" / "config" / "tasks.yaml"
    original = tasks.read_text()
    try:
        tasks.write_text(original.replace("Conduct a thorough research", "Research briefly", 1))
        assert load(entry).fingerprint != before
    finally:
        tasks.write_text(original)
    assert load(entry).fingerprint == before


def test_a_resumed_run_tells_the_edge_it_runs_again(review: ScriptedLLM) -> None:
    edge = FakeEdge()
    first = PlayedQuestions(Checkpoint(), {})
    with pytest.raises(Suspended):
        run(edge, first)
    run(edge, PlayedQuestions(first.saved[0], {"q1": {"approve": True, "feedback": ""}}))
    resumed = [(mid, body) for mid, body in edge.events if body.get("resumed_from")]
    assert resumed == [("job_1:resumed:q1", {"tenant": "tenant_a", "type": "running",
                                             "resumed_from": "q1"})]  # fmt: skip


def test_a_retry_after_the_approval_calls_the_approved_tasks_callback_once(
    review: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    from executor.loaded_crew import LoadedCrew

    called: list[str] = []
    build = LoadedCrew.build

    def with_callback(self: LoadedCrew) -> Any:
        crew = build(self)
        crew.tasks[1].callback = lambda output: called.append(str(output.raw))
        return crew

    monkeypatch.setattr(LoadedCrew, "build", with_callback)
    edge = FakeEdge()
    first = PlayedQuestions(Checkpoint(), {})
    with pytest.raises(Suspended):
        run(edge, first)
    (asked,) = first.saved
    delivered: set[str] = set()  # kept in the run's input store, across tries
    answers = {"q1": {"approve": True, "feedback": ""}}
    done = run(edge, PlayedQuestions(asked, answers, delivered))
    assert called == [asked.pending["output"]] and delivered == {"q1"}  # type: ignore[index]
    # The run failed after that (its `succeeded` was not taken, the worker died): its
    # retry starts from the same checkpoint, and gets the same answer.
    again = run(edge, PlayedQuestions(asked, answers, delivered))
    assert called == [asked.pending["output"]]  # type: ignore[index]
    assert again["files"] == done["files"]  # report.md again, the same text


# --- 3. a run resumed without the edge: the state machine, the edge, the reconciler --------


def test_a_running_event_from_a_resumed_run_ends_the_wait_on_its_question_only() -> None:
    asking = {"type": "waiting", "input_request": QUESTION}
    waiting = apply_event(job(JobStatus.RUNNING), asking, AT)
    assert waiting is not None and waiting["status"] == "waiting"
    other = {"type": "running", "resumed_from": "q2"}
    assert apply_event(waiting, other, AT) is None
    resumed = apply_event(waiting, {"type": "running", "resumed_from": "q1"}, AT)
    assert resumed is not None and resumed["status"] == "running"
    assert resumed["input_request"] is None
    # Already running (the edge took the answer): nothing changes, a repeat neither.
    assert apply_event(resumed, {"type": "running", "resumed_from": "q1"}, AT) is None


# --- against a real Prefect server -------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server of its own (SQLite), which flows run in-process report to.
    (Prefect reads its settings once, at import: the environment alone would not do.)"""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from edge.local.processes import Supervisor, free_port
    from edge.local.stack import prefect_server

    data = tmp_path_factory.mktemp("hitl-resume")
    supervisor = Supervisor(data / "logs")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    try:
        supervisor.start(prefect_server(port, data), timeout=180)
        with temporary_settings({PREFECT_API_URL: api}):
            yield api
    finally:
        supervisor.stop_all()


def in_a_flow_run(body: Any) -> Any:
    """Run `body()` inside a flow run of the server (no deployment: it cannot suspend)."""
    from prefect import flow

    @flow(name="hitl-store", persist_result=False)
    def store() -> Any:
        return body()

    return store()


@pytest.mark.e2e
def test_a_checkpoint_saved_again_for_the_same_unasked_question_replaces_the_first(
    prefect_api: str,
) -> None:
    # The run stopped between saving q1's checkpoint and suspending; its next try asks
    # q1 again, and Prefect refuses a second input under one key.
    from prefect.input.actions import read_flow_run_input

    from executor.run_input import CHECKPOINT_KEY, QUESTION_KEY, RunQuestions

    questions = RunQuestions(60, lambda request: None)
    first = Checkpoint(asked=1, pending=pending(output="first answer"))
    second = Checkpoint(asked=1, pending=pending(output="second answer"))

    def twice() -> tuple[Any, Any]:
        questions.save(first)
        questions.save(second)
        return (read_flow_run_input(CHECKPOINT_KEY.format(question="q1")),
                read_flow_run_input(QUESTION_KEY.format(question="q1")))  # fmt: skip

    stored, asked = in_a_flow_run(twice)
    assert Checkpoint.from_json(stored).pending["output"] == "second answer"  # type: ignore[index]
    assert asked["output"] == "second answer"


@pytest.mark.e2e
def test_an_answered_question_is_not_asked_again_nor_its_checkpoint_replaced(
    prefect_api: str,
) -> None:
    # A retry of the run: Prefect cleared the keys of the pauses that fired, so only the
    # answer in the run's input store says that q1 was answered.
    from prefect.input.actions import create_flow_run_input

    from executor.run_input import ANSWER_KEY, RunQuestions

    told: list[Any] = []
    questions = RunQuestions(60, told.append)
    checkpoint = Checkpoint(asked=1, pending=pending())

    def retried() -> Any:
        create_flow_run_input(ANSWER_KEY.format(question="q1"),
                              {"approve": True, "feedback": "", "question": "q1"})  # fmt: skip
        answer = questions.answer(checkpoint)  # no deployment: a suspend would fail
        with pytest.raises(CheckpointConflict, match="q1 was answered already"):
            questions.save(checkpoint)
        return answer

    assert in_a_flow_run(retried) == {"approve": True, "feedback": ""}
    assert told == []  # no `waiting` posted


@pytest.mark.e2e
def test_a_checkpoint_over_the_cap_is_refused_before_anything_is_stored(
    prefect_api: str,
) -> None:
    from prefect.input.actions import read_flow_run_input

    from executor.run_input import CHECKPOINT_KEY, RunQuestions

    questions = RunQuestions(60, lambda request: None)
    done = ({"index": 0, "output": {"raw": "é" * MAX_CHECKPOINT_BYTES}},)
    huge = Checkpoint(asked=1, completed=done, pending=pending())

    def save_huge() -> Any:
        with pytest.raises(CheckpointTooLarge):
            questions.save(huge)
        return read_flow_run_input(CHECKPOINT_KEY.format(question="q1"))

    assert in_a_flow_run(save_huge) is None


@pytest.mark.e2e
def test_a_job_that_cannot_resume_fails_at_once_with_its_kind(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not left for a retry to find again: the edge hears `failed` from this very try.
    from executor import flows

    edge = FakeEdge()
    monkeypatch.setattr(flows, "EdgeClient", lambda settings: client(edge))
    monkeypatch.setattr(flows.ExecutorSettings, "from_env", staticmethod(lambda env: SETTINGS))
    monkeypatch.setattr(flows, "crew_for_run", lambda name: _Loaded())

    def changed(*args: Any, **kwargs: Any) -> Any:
        raise CrewChanged("the crew's tasks changed while the job waited")

    monkeypatch.setattr(flows, "run_crew", changed)
    with pytest.raises(CrewChanged):
        flows.run_crew_job.with_options(retries=0)("job_1", "tenant_a", "review", INPUTS)
    (failed,) = [body for _, body in edge.events if body["type"] == "failed"]
    assert failed["error"]["kind"] == "CrewChanged"


class _Loaded:
    """Stands in for the LoadedCrew the flow reports the version of."""

    spec = type("Spec", (), {"version": "1.0+abc"})


@pytest.mark.e2e
def test_a_retry_after_the_approval_neither_asks_again_nor_calls_back_twice(
    prefect_api: str, review: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through Prefect: the run suspends on q1, is resumed from Prefect's API with an
    approval (not through the edge), goes on, fails after the crew finished, and its
    retry (Prefect clears the fired pauses' keys) must not suspend on q1 again."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.exceptions import Pause
    from prefect.flow_engine import run_flow
    from prefect.flow_runs import resume_flow_run

    from executor.flows import run_crew
    from executor.loaded_crew import LoadedCrew
    from executor.run_input import RunQuestions

    called: list[str] = []
    build = LoadedCrew.build

    def with_callback(self: LoadedCrew) -> Any:
        crew = build(self)
        crew.tasks[1].callback = lambda output: called.append(str(output.raw))
        return crew

    monkeypatch.setattr(LoadedCrew, "build", with_callback)
    edge = FakeEdge()
    tries: list[int] = []

    @flow(name="hitl-retry", retries=1, retry_delay_seconds=0, persist_result=False)
    def review_job() -> dict[str, Any]:
        questions = RunQuestions(600, lambda request: edge.events.append(("waiting", request)))
        result = run_crew("job_1", "tenant_a", "review", INPUTS, settings=SETTINGS,
                          edge=client(edge), questions=questions)  # fmt: skip
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("the worker lost its edge after the crew finished")
        return result

    with get_client(sync_client=True) as prefect:
        from prefect.client.schemas.actions import WorkPoolCreate

        assert str(prefect.api_url).rstrip("/") == prefect_api  # the server of this module

        prefect.create_work_pool(WorkPoolCreate(name="hitl-retry", type="process"),
                                 overwrite=True)  # fmt: skip
        flow_id = prefect.create_flow_from_name("hitl-retry")
        deployment = prefect.create_deployment(flow_id, "hitl", work_pool_name="hitl-retry")
        created = prefect.create_flow_run_from_deployment(UUID(str(deployment)))
        with pytest.raises(Pause):  # where a worker's process would end
            run_flow(review_job, flow_run=created, return_type="state")
        suspended = prefect.read_flow_run(created.id)
        assert suspended.state is not None and suspended.state.name == "Suspended"
        assert [body["id"] for kind, body in edge.events if kind == "waiting"] == ["q1"]
        llm_calls = len(review.calls)

        resume_flow_run(created.id, run_input={"approve": True})  # Prefect's UI form's
        state = run_flow(review_job, flow_run=prefect.read_flow_run(created.id),
                         return_type="state")  # fmt: skip
        ended = prefect.read_flow_run(created.id)
    assert state.is_completed(), state  # type: ignore[union-attr]
    assert ended.state is not None and ended.state.is_completed()
    assert len(tries) == 2, "the retry ran"
    assert [body["id"] for kind, body in edge.events if kind == "waiting"] == ["q1"]
    assert len(review.calls) == llm_calls  # nothing run twice: the approval is the output
    assert len(called) == 1, "the approved task's callback, once across both tries"
    resumed = [body for mid, body in edge.events if body.get("resumed_from") == "q1"]
    assert resumed, "the worker told the edge the job runs again"
