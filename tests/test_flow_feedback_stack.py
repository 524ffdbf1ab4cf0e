"""A flow's `@human_feedback` steps through the real local stack: the flow project of
tests/crews/review_flow (written the standard CrewAI way: a research step, a draft step
with `emit=["approved", "rejected"]` that a rejection routes back to, then a plain
question), run by real Prefect and edgecrew's worker. The job goes `waiting` with the
step's own message, its output and its outcomes; its run is suspended (another job of
the same one-slot pool runs meanwhile); feedback is routed by CrewAI (collapsed by the
executor's LLM, the scripted fake) back to the draft step, which asks again; approval
goes on to the next question; its plain answer ends the job, `succeeded`, the research
step having run once across the four runs of the flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.doubles.openai_server import FakeOpenAIServer
from tests.support import DevStack, WebhookReceiver
from tests.test_human_input_stack import (
    HEADERS,
    KEY,
    ZOMBIE_SECONDS,
    answer,
    job,
    llm_prompts,
    run_state,
    wait_for_question,
)

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).parent / "crews" / "review_flow" / "src"

#: The draft the feedback routed back to the step asked for.
DRAFT_2 = "Draft 2 on tides. Say more TAG-rejected about the moon."


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("flow-feedback-stack")
    config = tmp / "edgecrew.toml"
    config.write_text(f"""
[crews.review_flow]
source = "review_flow.main:ReviewFlow"
path = "{PROJECT}"
pool = "review"

[crews.note_flow]
source = "review_flow.main:NoteFlow"
path = "{PROJECT}"
pool = "review"

[pools.review]
concurrency = 1
""")
    with FakeOpenAIServer() as llm:
        env = {
            "EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm",
            "EDGECREW_FAKE_LLM_LOG": str(tmp / "llm.jsonl"),
            "EDGECREW_LLM_BASE_URL": llm.base_url,
            "EDGECREW_CONFIG": "",
            "EDGECREW_ZOMBIE_SECONDS": str(ZOMBIE_SECONDS),
            "EDGECREW_STALE_AFTER_SECONDS": "2",
            "EDGECREW_RECONCILE_SECONDS": "1",
            # `@persist()` fixes its SQLite file when the flow's module is imported.
            "CREWAI_STORAGE_DIR": str(tmp / "crewai"),
        }
        with DevStack.running(tmp, "--no-demo", "--config", str(config), env=env) as running:
            yield running


def submit(stack: DevStack, crew: str, webhook: str | None = None) -> str:
    body: dict[str, Any] = {"crew": crew, "inputs": {"topic": "tides"}}
    if webhook:
        body["webhook"] = {"url": webhook}  # the default events: waiting and the end
    accepted = httpx.post(f"{stack.base_url}/v1/jobs", json=body, headers=HEADERS, timeout=30)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["id"])


def test_a_flow_step_asks_waits_without_a_slot_is_routed_by_feedback_and_ends_once_answered(
    stack: DevStack,
) -> None:
    with WebhookReceiver() as receiver:
        job_id = submit(stack, "review_flow", receiver.url)
        waiting = wait_for_question(stack, job_id, "q1")
        asked = waiting["input_request"]
        assert (asked["kind"], asked["task"], asked["round"]) == ("review", "write_draft", 1)
        assert asked["prompt"] == "Approve the draft, or say what to change."
        assert asked["output"] == "Draft 1 on tides."
        assert asked["outcomes"] == ["approved", "rejected"] and asked["expires_at"]
        assert waiting["progress"]["completed_tasks"] == 1  # research
        hook = json.loads(receiver.wait_for_event("job.waiting")["body"])
        assert hook["data"]["input_request"]["outcomes"] == ["approved", "rejected"]
        state = run_state(stack, job_id)
        assert (state["type"], state["name"]) == ("PAUSED", "Suspended")

        # The one slot of the pool is free: another job runs to its end meanwhile.
        other = stack.wait_for_job(submit(stack, "note_flow"), KEY, timeout=120)
        assert other["status"] == "succeeded", (other["error"], other["progress"])
        assert other["result"]["state"]["notes"] == "noted tides"
        assert job(stack, job_id)["status"] == "waiting"

        feedback = {"question": "q1", "feedback": "Say more TAG-rejected about the moon."}
        assert answer(stack, job_id, feedback).status_code == 202
        again = wait_for_question(stack, job_id, "q2")["input_request"]
        assert (again["task"], again["round"]) == ("write_draft", 2)
        assert again["output"] == DRAFT_2

        assert answer(stack, job_id, {"question": "q2", "approve": True}).status_code == 202
        last = wait_for_question(stack, job_id, "q3")["input_request"]
        assert (last["task"], last["round"], last["outcomes"]) == ("sign_off", 1, None)
        assert last["prompt"] == "Anything to add below the post?"
        assert last["output"].startswith("Published: Draft 2 on tides.")

        taken = answer(stack, job_id, {"question": "q3", "feedback": "Thanks, all."})
        assert taken.status_code == 202, taken.text
        done = stack.wait_for_job(job_id, KEY, timeout=180)
        assert done["status"] == "succeeded", done
        receiver.wait_for_event("job.succeeded")
        waited = [json.loads(h["body"]) for h in receiver.received]
        asked_ids = [h["data"]["input_request"]["id"] for h in waited if h["type"] == "job.waiting"]
        assert asked_ids == ["q1", "q2", "q3"]
    result = done["result"]
    assert result["output"] == f"{DRAFT_2} | Thanks, all."
    assert result["state"]["drafts"] == 2 and result["state"]["reviews"] == 3
    assert result["steps"] == [
        "research", "write_draft", "write_draft", "publish", "sign_off", "wrap_up"
    ]  # fmt: skip
    research = [p for p in llm_prompts(stack) if "Research notes on tides" in p]
    assert len(research) == 1, "the research step ran once across the flow's four runs"
    collapsed = [p for p in llm_prompts(stack) if "Based on the following human feedback" in p]
    assert len(collapsed) == 1 and "TAG-rejected" in collapsed[0]
    assert answer(stack, job_id, {"approve": True}).status_code == 409
