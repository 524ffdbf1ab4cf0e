"""Human review of a crew's tasks: the job state machine's question rules, and the
executor's side of it run in-process on a project made by CrewAI's CLI (its
`reporting_task` marked `human_input: true` in its tasks.yaml), with a hand-written
stand-in for Prefect's suspend and run input (`RunQuestions`) that plays the runs a
suspended job would go through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from executor.catalog import crew_for_run
from executor.edge_client import EdgeClient
from executor.flows import WAITING_TIMEOUT_SECONDS, WaitingReporter, run_crew
from executor.human_input import Checkpoint
from executor.run_context import list_files, restore_files
from shared.jobs import JobStatus, apply_change, apply_event
from tests.crews.projects import _create
from tests.doubles.crew_llm import ScriptedLLM
from tests.test_executor import SETTINGS, FakeEdge, client

AT = "2026-12-01T12:00:00Z"
QUESTION = {"id": "q1", "kind": "review", "task": "write", "prompt": "Review", "output": "x"}


def job(status: JobStatus, **fields: Any) -> dict[str, Any]:
    return {"id": "job_1", "status": status.value, "progress": None, "result": None,
            "error": None, "updated_at": "before", **fields}  # fmt: skip


# --- the state machine ------------------------------------------------------------------


def test_a_job_waits_for_a_later_question_only_and_runs_again_when_it_is_answered() -> None:
    waiting = apply_event(
        job(JobStatus.RUNNING), {"type": "waiting", "input_request": QUESTION}, AT
    )
    assert waiting is not None and waiting["status"] == "waiting"
    assert waiting["input_request"] == QUESTION and waiting["questions_asked"] == 1
    # The same question again, Prefect's RUNNING seen late, a late progress: still waiting.
    assert apply_event(waiting, {"type": "waiting", "input_request": QUESTION}, AT) is None
    assert apply_event(waiting, {"type": "running"}, AT) is None
    step = {"completed_tasks": 1, "total_tasks": 2}
    late = apply_event(waiting, {"type": "progress", "progress": step}, AT)
    assert late is not None and late["status"] == "waiting"
    # Only the answer to the question it asks moves it on.
    assert apply_event(waiting, {"type": "answered", "question": "q2"}, AT) is None
    running = apply_event(waiting, {"type": "answered", "question": "q1"}, AT)
    assert running is not None and running["status"] == "running"
    assert running["input_request"] is None
    assert apply_event(running, {"type": "answered", "question": "q1"}, AT) is None
    again = {"type": "waiting", "input_request": {**QUESTION, "id": "q2"}}
    assert apply_event(running, {"type": "waiting", "input_request": QUESTION}, AT) is None
    assert apply_event(running, again, AT)["status"] == "waiting"  # type: ignore[index]


@pytest.mark.parametrize("end", ["failed", "cancelled", "succeeded"])
def test_a_waiting_job_can_end_and_then_asks_nothing(end: str) -> None:
    waiting = apply_event(job(JobStatus.QUEUED), {"type": "waiting", "input_request": QUESTION}, AT)
    assert waiting is not None
    ended = apply_event(waiting, {"type": end}, AT)
    assert ended is not None and ended["status"] == end and ended["input_request"] is None
    assert (
        apply_event(ended, {"type": "waiting", "input_request": {**QUESTION, "id": "q9"}}, AT)
        is None
    )


def test_the_log_keeps_the_question_with_its_output_cut() -> None:
    long = {**QUESTION, "output": "y" * 10_000}
    change = {"at": AT, "expires_at": 9e9, "event": {"type": "waiting", "input_request": long}}
    changed = apply_change({**job(JobStatus.RUNNING), "revision": 1, "events": []}, change)
    assert changed is not None
    (event,) = changed["events"]
    assert event["type"] == "job.waiting"
    logged = event["data"]["input_request"]
    assert len(logged["output"]) == 2048 and logged["output_truncated"] is True
    assert len(changed["input_request"]["output"]) == 10_000  # the job keeps all of it


# --- the executor -----------------------------------------------------------------------


class Suspended(BaseException):
    """Stands in for Prefect's Pause: the run's process ends here."""


class PlayedQuestions:
    """`RunQuestions` for one run: the checkpoint the last run left, the answers sent."""

    def __init__(
        self, checkpoint: Checkpoint, answers: dict[str, dict[str, Any]],
        delivered: set[str] | None = None,
    ) -> None:  # fmt: skip
        self._checkpoint = checkpoint
        self._answers = answers
        self.saved: list[Checkpoint] = []
        #: Questions whose approved task was delivered (by this or an earlier try).
        self.delivered_questions = set() if delivered is None else delivered

    def checkpoint(self) -> Checkpoint:
        return Checkpoint.from_json(json.loads(json.dumps(self._checkpoint.to_json())))

    def answer(self, checkpoint: Checkpoint) -> dict[str, Any]:
        if checkpoint.question not in self._answers:
            raise Suspended(checkpoint.question)
        return self._answers[checkpoint.question]

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        self.saved.append(checkpoint)
        return checkpoint

    def delivered(self, question: str) -> bool:
        return question in self.delivered_questions

    def mark_delivered(self, question: str) -> None:
        self.delivered_questions.add(question)


@pytest.fixture(scope="module")
def review_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review")
    env = {"CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true"}
    _create(root, ["crew", "--classic", "--skip-provider", "review_crew"], env)
    tasks = root / "review_crew" / "src" / "review_crew" / "config" / "tasks.yaml"
    tasks.write_text(tasks.read_text() + "  human_input: true\n")
    return root / "review_crew" / "src"


@pytest.fixture
def review(
    review_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ScriptedLLM]:
    config = tmp_path / "edgecrew.toml"
    config.write_text(f'[crews.review]\nsource = "review_crew.crew:ReviewCrew"\n'
                      f'path = "{review_project}"\npool = "cpu"\n')  # fmt: skip
    monkeypatch.setenv("EDGECREW_CONFIG", str(config))
    crew_for_run.cache_clear()
    scripted = ScriptedLLM(model="scripted-fake")
    monkeypatch.setattr("executor.flows.build_llm", lambda settings: scripted)
    yield scripted
    crew_for_run.cache_clear()


def run(edge: FakeEdge, questions: PlayedQuestions) -> dict[str, Any]:
    inputs = {"topic": "tides", "current_year": "2026"}
    return run_crew("job_1", "tenant_a", "review", inputs, settings=SETTINGS,
                    edge=client(edge), questions=questions)  # fmt: skip


def test_feedback_redoes_the_task_and_asks_again_and_approval_goes_on_without_redoing_the_rest(
    review: ScriptedLLM,
) -> None:
    edge = FakeEdge()
    first = PlayedQuestions(Checkpoint(), {})
    with pytest.raises(Suspended):
        run(edge, first)
    (asked,) = first.saved
    assert asked.question == "q1" and asked.pending is not None
    assert asked.pending["task"] == "reporting_task" and asked.pending["round"] == 1
    assert [done["index"] for done in asked.completed] == [0]  # research_task, finished
    research_calls = len(review.calls)
    assert research_calls == 2  # one call per task with this scripted LLM

    second = PlayedQuestions(asked, {"q1": {"feedback": "Mention TAG-revised.", "approve": False}})
    with pytest.raises(Suspended):
        run(edge, second)
    (again,) = second.saved
    assert again.question == "q2" and again.pending is not None and again.pending["round"] == 2
    assert "TAG-revised" in again.pending["output"]
    assert len(review.calls) == research_calls + 1  # only the reviewed task, redone
    redo = review.calls[-1]
    assert "User feedback: Mention TAG-revised." in redo
    assert asked.pending["output"] in redo  # the answer the feedback is about

    third = PlayedQuestions(again, {"q2": {"approve": True, "feedback": ""}})
    result = run(edge, third)
    assert third.saved == [] and len(review.calls) == research_calls + 1  # no LLM call
    assert [t["name"] for t in result["tasks"]] == ["research_task", "reporting_task"]
    assert result["tasks"][0]["output"] == asked.completed[0]["output"]["raw"]
    assert "TAG-revised" in result["output"]
    assert [f["name"] for f in result["files"]] == ["report.md"]
    assert [p["completed_tasks"] for p in edge.progress()] == [1, 1, 2]


def test_the_question_is_posted_once_the_run_waits_with_a_stable_id() -> None:
    edge = FakeEdge()
    request = {"id": "q3", "kind": "review", "task": "t", "prompt": "p", "output": "z" * 20000,
               "round": 1, "expires_at": "2030-01-01T00:00:00Z"}  # fmt: skip
    WaitingReporter(client(edge), "job_1", "tenant_a")(request)
    ((message_id, body),) = edge.events
    assert message_id == "job_1:waiting:q3" and body["type"] == "waiting"
    assert len(body["input_request"]["output"]) < 17_000
    assert body["input_request"]["output_truncated"] is True


def test_files_of_an_earlier_run_come_back_and_stay_inside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.md").write_text("kept")
    entries = list_files(tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    restore_files(fresh, [*entries, {"name": "../escape.md", "text": "no"},
                          {"name": "/etc/x", "text": "no"}])  # fmt: skip
    assert (fresh / "a" / "notes.md").read_text() == "kept"
    assert not (tmp_path / "escape.md").exists()


def test_a_run_refuses_an_answer_to_another_question(monkeypatch: pytest.MonkeyPatch) -> None:
    from uuid import uuid4

    import prefect.flow_runs

    from executor import run_input
    from executor.run_input import AnswerMismatch, HumanAnswer, RunQuestions

    given: list[HumanAnswer] = []
    monkeypatch.setattr(run_input, "_flow_run_id", uuid4)
    monkeypatch.setattr(run_input, "_read", lambda key: None)  # no answer stored yet
    monkeypatch.setattr(prefect.flow_runs, "suspend_flow_run", lambda **_: given[-1])
    pending = {"question": "q2", "task": "write", "output": "x", "round": 2}
    waiting = Checkpoint(asked=2, pending=pending)
    questions = RunQuestions(60, lambda request: None)
    given.append(HumanAnswer(approve=False, feedback="shorter", question="q1"))
    with pytest.raises(AnswerMismatch, match=r"q2.*q1"):
        questions.answer(waiting)
    given.append(HumanAnswer(approve=True, question="q2"))
    assert questions.answer(waiting) == {"approve": True, "feedback": ""}
    given.append(HumanAnswer(approve=True))  # Prefect's own resume form names none
    assert questions.answer(waiting) == {"approve": True, "feedback": ""}


def test_the_question_is_posted_once_and_quickly_while_the_suspended_process_still_beats() -> None:
    # Prefect's heartbeat thread runs until the process leaves the flow: a retried
    # `waiting` after the run is Suspended lets a heartbeat re-arm the zombie automation,
    # which then crashes the suspended run. One short try; the reconciler finds a lost
    # question from the run itself.
    edge = FakeEdge(fail_first=1)
    timeouts: list[Any] = []
    slept: list[float] = []

    def transport(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return edge(request)

    reporter_client = EdgeClient(
        SETTINGS, client=httpx.Client(transport=httpx.MockTransport(transport)), sleep=slept.append
    )
    WaitingReporter(reporter_client, "job_1", "tenant_a")({**QUESTION, "round": 1})
    assert len(timeouts) == 1 and slept == [] and edge.events == []
    assert all(0 < seconds <= WAITING_TIMEOUT_SECONDS for seconds in timeouts[0].values())


def test_feedback_is_given_only_to_the_crews_own_task_never_to_a_planner_or_manager() -> None:
    from types import SimpleNamespace

    from executor.human_input import PausingHumanInput

    write = SimpleNamespace(name="write")
    crew = SimpleNamespace(tasks=[write])
    pending = {"question": "q1", "index": 0, "feedback": "shorter",
               "messages": [{"role": "assistant", "content": "x"}]}  # fmt: skip
    provider = PausingHumanInput(crew, Checkpoint(asked=1, pending=pending), [])
    # CrewAI's planner (planning=True) runs an agent on a task of its own: not the crew's.
    planner = SimpleNamespace(task=SimpleNamespace(name="plan"), messages=[])
    assert provider.setup_messages(planner) is False and planner.messages == []
    worker = SimpleNamespace(task=write, messages=[],
                             _format_feedback_message=lambda text: {"role": "user",
                                                                     "content": text})  # fmt: skip
    assert provider.setup_messages(worker) is True
    assert worker.messages[-1] == {"role": "user", "content": "shorter"}


def test_a_restored_file_never_lands_outside_the_folder_through_a_symlink(tmp_path: Path) -> None:
    outside, folder = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    folder.mkdir()
    (folder / "link").symlink_to(outside, target_is_directory=True)
    restore_files(folder, [{"name": "link/x.md", "text": "no"}, {"name": "ok.md", "text": "y"}])
    assert not (outside / "x.md").exists()
    assert (folder / "ok.md").read_text() == "y"


def test_a_worker_whose_crewai_lacks_the_human_input_hooks_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import crewai
    from crewai.core.providers import human_input as providers

    from executor.catalog import check_runtime

    assert check_runtime() == []
    monkeypatch.delattr(crewai.Crew, "_get_execution_start_index")
    monkeypatch.delattr(providers, "reset_provider")
    problems = check_runtime()
    assert len(problems) == 2 and all("human_input" in p for p in problems)
    assert any("_get_execution_start_index" in p for p in problems)
