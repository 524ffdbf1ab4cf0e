"""Human review of a flow's `@human_feedback` steps: the executor's side run in-process on
a flow project written the standard CrewAI way (tests/crews/review_flow), with the
hand-written stand-in for Prefect's suspend and run input of tests/test_human_input.py
playing the runs a suspended job goes through. Each run is a fresh flow instance rebuilt
from the checkpoint as JSON, as a new process on another machine would rebuild it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.jobs.schemas import ExecutorInputRequest
from executor.catalog import crew_for_run
from executor.flows import run_crew
from executor.human_input import Checkpoint, question_text
from tests.doubles.crew_llm import ScriptedLLM
from tests.test_executor import SETTINGS, FakeEdge, client
from tests.test_human_input import PlayedQuestions, Suspended

PROJECT = Path(__file__).parent / "crews" / "review_flow" / "src"
RESEARCH_PROMPT = "Research notes on"
COLLAPSE_PROMPT = "Based on the following human feedback"
STEPS = ["research", "write_draft", "write_draft", "publish", "sign_off", "wrap_up"]

#: The draft the feedback routed back to the step asked for.
DRAFT_2 = "Draft 2 on tides. Say more TAG-rejected about the moon."


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where `@persist()` puts its SQLite file: fixed when the flow's module is imported."""
    folder = tmp_path_factory.mktemp("crewai-storage")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREWAI_STORAGE_DIR", str(folder))
        yield folder


@pytest.fixture
def llm(storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedLLM]:
    config = tmp_path / "edgecrew.toml"
    config.write_text(f"""
[crews.review]
source = "review_flow.main:ReviewFlow"
path = "{PROJECT}"
pool = "cpu"

[crews.persisted]
source = "review_flow.main:PersistedReviewFlow"
path = "{PROJECT}"
pool = "cpu"
""")
    monkeypatch.setenv("EDGECREW_CONFIG", str(config))
    crew_for_run.cache_clear()
    scripted = ScriptedLLM(model="scripted-fake")
    monkeypatch.setattr("executor.flows.build_llm", lambda settings: scripted)
    yield scripted
    crew_for_run.cache_clear()


def run(edge: FakeEdge, questions: PlayedQuestions, crew: str = "review") -> dict[str, Any]:
    return run_crew("job_1", "tenant_a", crew, {"topic": "tides"}, settings=SETTINGS,
                    edge=client(edge), questions=questions)  # fmt: skip


def suspended(edge: FakeEdge, questions: PlayedQuestions, crew: str = "review") -> Checkpoint:
    """Run until the flow asks; the checkpoint kept for its question."""
    with pytest.raises(Suspended):
        run(edge, questions, crew)
    (saved,) = questions.saved
    # Prefect keeps it with orjson, which refuses what plain JSON takes (big ints).
    orjson.dumps(saved.to_json())
    return saved


def test_a_step_asks_routes_feedback_back_to_itself_asks_again_and_goes_on_once_approved(
    llm: ScriptedLLM,
) -> None:
    edge = FakeEdge()
    first = suspended(edge, PlayedQuestions(Checkpoint(), {}))
    asked = ExecutorInputRequest.model_validate(question_text(first)).model_dump()
    assert asked == {
        "id": "q1", "kind": "review", "task": "write_draft",
        "prompt": "Approve the draft, or say what to change.",
        "output": "Draft 1 on tides.", "output_truncated": False, "round": 1,
        "outcomes": ["approved", "rejected"], "expires_at": None,
    }  # fmt: skip
    assert [RESEARCH_PROMPT in call for call in llm.calls] == [True]

    # Feedback: CrewAI collapses it to an outcome with the step's LLM (the executor's,
    # the step names none); `rejected` routes back to the step, which asks again.
    feedback = {"q1": {"feedback": "Say more TAG-rejected about the moon.", "approve": False}}
    second = suspended(edge, PlayedQuestions(first, feedback))
    assert (second.question, second.pending["task"], second.pending["round"]) == (  # type: ignore[index]
        "q2", "write_draft", 2
    )  # fmt: skip
    assert question_text(second)["output"] == DRAFT_2
    assert len(llm.calls) == 2 and COLLAPSE_PROMPT in llm.calls[1]
    assert "Say more TAG-rejected about the moon." in llm.calls[1]

    # Approval: the default outcome, `approved`, with no LLM call; then a plain question.
    third = suspended(edge, PlayedQuestions(second, {"q2": {"approve": True, "feedback": ""}}))
    request = question_text(third)
    assert (request["id"], request["task"], request["round"]) == ("q3", "sign_off", 1)
    assert request["prompt"] == "Anything to add below the post?" and "outcomes" not in request
    assert request["output"] == "Published: Draft 2 on tides. Say more TAG-rejected about the moon."
    assert len(llm.calls) == 2

    last = PlayedQuestions(third, {"q3": {"feedback": "Thanks, all.", "approve": False}})
    result = run(edge, last)
    assert last.saved == [] and len(llm.calls) == 2  # plain feedback: kept, not collapsed
    assert result["output"] == f"{DRAFT_2} | Thanks, all."
    state = result["state"]
    assert state["drafts"] == 2 and state["last_words"] == "Thanks, all."
    assert state["notes"] == "FAKE ANSWER."  # the research of the first run, kept
    assert state["reviews"] == 3  # `human_feedback_history` has every answer, of all runs
    assert result["steps"] == STEPS  # each step once per time it ran, research once
    assert [p["completed_tasks"] for p in edge.progress()] == [1, 2, 3, 4, 5, 6]
    assert [RESEARCH_PROMPT in call for call in llm.calls].count(True) == 1


def test_a_persisted_flow_keeps_saving_its_states_where_its_persist_says_after_a_resume(
    llm: ScriptedLLM,
) -> None:
    from review_flow.main import PersistedReviewFlow

    edge = FakeEdge()
    first = suspended(edge, PlayedQuestions(Checkpoint(), {}), "persisted")
    flow_id = first.pending["flow"]["context"]["flow_id"]  # type: ignore[index]
    backend = PersistedReviewFlow.flow_definition().persist.persistence
    assert backend.load_pending_feedback(flow_id) is not None  # CrewAI saved the pause there
    assert backend.load_state(flow_id)["drafts"] == 1  # type: ignore[index]
    result = run(edge, PlayedQuestions(first, {"q1": {"approve": True, "feedback": ""}}),
                 "persisted")  # fmt: skip
    assert result["steps"] == ["research", "write_draft", "publish"]
    assert result["state"]["published"] == "Draft 1 on tides."
    saved = backend.load_state(flow_id)
    assert saved is not None and saved["published"] == "Draft 1 on tides."  # after publish
    assert saved["reviews"] == 1
    assert backend.load_pending_feedback(flow_id) is None  # CrewAI's resume cleared it
    assert [RESEARCH_PROMPT in call for call in llm.calls].count(True) == 1


def test_a_nested_flows_step_cannot_ask_and_the_provider_is_the_jobs_only_while_it_runs() -> None:
    from crewai.flow.async_feedback import HumanFeedbackPending, PendingFeedbackContext
    from crewai.flow.flow_config import flow_config

    from executor.flow_feedback import NestedFlowFeedback, PausingFeedback, asking_through_the_job

    job_flow, other = object(), object()
    context = PendingFeedbackContext(flow_id="f", flow_class="x.Y", method_name="step",
                                     method_output="out", message="ok?")  # fmt: skip
    with pytest.raises(HumanFeedbackPending):
        PausingFeedback(job_flow).request_feedback(context, job_flow)
    with pytest.raises(NestedFlowFeedback, match="step"):
        PausingFeedback(job_flow).request_feedback(context, other)
    before = flow_config.hitl_provider
    with asking_through_the_job(job_flow):
        assert isinstance(flow_config.hitl_provider, PausingFeedback)
    assert flow_config.hitl_provider is before


def test_the_executors_llm_collapses_feedback_when_the_crew_says_so_and_a_gone_step_fails(
    llm: ScriptedLLM,
) -> None:
    from review_flow.main import ReviewFlow

    from executor.flow_feedback import restored

    first = suspended(FakeEdge(), PlayedQuestions(Checkpoint(), {}))
    step = first.answered({"feedback": "no"}).pending
    assert step is not None
    step["flow"]["context"]["llm"] = "openai/gpt-4o-mini"  # as `llm=` on the step makes it
    flow, answer = restored(ReviewFlow, step, executor_llm=False)
    assert answer == "no" and flow.pending_feedback.llm == "openai/gpt-4o-mini"
    assert flow.state.drafts == 1 and flow.state.notes == "FAKE ANSWER."
    flow, _ = restored(ReviewFlow, step, executor_llm=True)
    assert flow.pending_feedback.llm is None  # CrewAI's default LLM: the executor's
    step["flow"]["context"]["method_name"] = "renamed_step"
    with pytest.raises(LookupError, match="renamed_step"):
        restored(ReviewFlow, step, executor_llm=False)


def test_a_worker_whose_crewai_lacks_the_flow_feedback_hooks_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crewai.flow.runtime import Flow

    from executor.catalog import check_runtime

    assert check_runtime() == []
    monkeypatch.delattr(Flow, "from_pending")
    problems = check_runtime()
    assert len(problems) == 1 and "from_pending" in problems[0]
    assert "@human_feedback" in problems[0]
