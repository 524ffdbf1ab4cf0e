"""Human in the loop through the real local stack: a classic project made by CrewAI's CLI,
its second task marked `human_input: true` in its own tasks.yaml (the standard CrewAI
way), run by real Prefect and edgecrew's worker. The job goes `waiting` (webhook, event,
job view), its run is suspended (no worker or concurrency slot held: another job of the
same one-slot pool runs meanwhile), the client answers with feedback, the task is redone
and asks again, the client approves, and the job succeeds without the first task ever
running twice. A question left unanswered past its timeout fails the job with
`InputTimeout`; a waiting job can be cancelled. The crew LLM is the scripted fake."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.settings import DEV_API_KEYS
from tests.crews.projects import _create
from tests.doubles.openai_server import FakeOpenAIServer
from tests.support import DevStack, WebhookReceiver

pytestmark = pytest.mark.e2e
KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}
INPUTS = {"topic": "tides", "current_year": "2026"}
#: The zombie automation crashes a run silent this long; a suspended run must outlive it.
#: Over Prefect's flow heartbeat (30 s, its minimum): a live run is never crashed.
ZOMBIE_SECONDS = 35
RESEARCH_PROMPT = "Conduct a thorough research about"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("hitl-projects")
    env = {"CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true"}
    _create(root, ["crew", "--classic", "--skip-provider", "review_crew"], env)
    _create(root, ["crew", "--classic", "--skip-provider", "plain_crew"], env)
    tasks = root / "review_crew" / "src" / "review_crew" / "config" / "tasks.yaml"
    tasks.write_text(tasks.read_text() + "  human_input: true\n")  # on reporting_task, last
    tmp = tmp_path_factory.mktemp("hitl-stack")
    config = tmp / "edgecrew.toml"
    config.write_text(f"""
[crews.review]
source = "review_crew.crew:ReviewCrew"
path = "{root / "review_crew" / "src"}"
pool = "review"

[crews.review_quick]
source = "review_crew.crew:ReviewCrew"
path = "{root / "review_crew" / "src"}"
pool = "review"
input_timeout_seconds = 3

[crews.plain]
source = "plain_crew.crew:PlainCrew"
path = "{root / "plain_crew" / "src"}"
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
            "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "1",
        }
        with DevStack.running(tmp, "--no-demo", "--config", str(config), env=env) as running:
            yield running


def submit(stack: DevStack, crew: str, webhook: str | None = None) -> str:
    body: dict[str, Any] = {"crew": crew, "inputs": INPUTS}
    if webhook:
        body["webhook"] = {"url": webhook}  # the default events: waiting and the end
    accepted = httpx.post(f"{stack.base_url}/v1/jobs", json=body, headers=HEADERS, timeout=30)
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["id"])


def job(stack: DevStack, job_id: str) -> dict[str, Any]:
    found = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=HEADERS, timeout=30)
    assert found.status_code == 200, found.text
    return dict(found.json())


def wait_for_question(stack: DevStack, job_id: str, question: str) -> dict[str, Any]:
    """`Prefer: wait` returns once the job waits for an answer."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        headers = {**HEADERS, "Prefer": "wait=30"}
        found = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=headers, timeout=60)
        current = found.json()
        if current["status"] == "waiting" and current["input_request"]["id"] == question:
            return dict(current)
        assert current["status"] in {"queued", "running", "waiting"}, current
    pytest.fail(f"job {job_id} never asked {question}: {job(stack, job_id)}")


def answer(stack: DevStack, job_id: str, body: dict[str, Any]) -> httpx.Response:
    url = f"{stack.base_url}/v1/jobs/{job_id}/input"
    return httpx.post(url, json=body, headers=HEADERS, timeout=30)


def run_state(stack: DevStack, job_id: str) -> dict[str, Any]:
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    found = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}).json()
    (run,) = [r for r in found if r["parameters"].get("job_id") == job_id]
    return dict(run["state"])


def llm_prompts(stack: DevStack) -> list[str]:
    log = Path(stack.cwd) / "llm.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    return [json.loads(line)["prompt"] for line in lines]


def test_a_crew_asks_waits_without_a_slot_redoes_with_feedback_and_goes_on_once_approved(
    stack: DevStack,
) -> None:
    with WebhookReceiver() as receiver:
        job_id = submit(stack, "review", receiver.url)
        waiting = wait_for_question(stack, job_id, "q1")
        asked = waiting["input_request"]
        assert asked["task"] == "reporting_task" and asked["kind"] == "review"
        assert asked["round"] == 1 and asked["output"].startswith("FAKE ANSWER")
        assert asked["expires_at"]
        assert waiting["progress"]["completed_tasks"] == 1
        assert waiting["urls"]["input"] == f"/v1/jobs/{job_id}/input"
        hook = json.loads(receiver.wait_for_event("job.waiting")["body"])
        assert hook["data"]["input_request"]["id"] == "q1"
        json_page = {**HEADERS, "Accept": "application/json"}
        events = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}/events", headers=json_page).json()
        (logged,) = [e for e in events["events"] if e["type"] == "job.waiting"]
        assert logged["data"]["input_request"]["task"] == "reporting_task"
        state = run_state(stack, job_id)
        assert (state["type"], state["name"]) == ("PAUSED", "Suspended")
        since = time.monotonic()

        # The one slot of the pool is free: another job runs to its end meanwhile.
        other = stack.wait_for_job(submit(stack, "plain"), KEY, timeout=120)
        assert other["status"] == "succeeded", (other["error"], other["progress"])
        # Past the zombie automation's window, and many reconciler passes: still waiting.
        time.sleep(max(0.0, ZOMBIE_SECONDS + 4 - (time.monotonic() - since)))
        assert job(stack, job_id)["status"] == "waiting"
        assert run_state(stack, job_id)["type"] == "PAUSED"

        assert answer(stack, job_id, {"question": "q2", "approve": True}).status_code == 409
        bad = answer(stack, job_id, {"approve": True, "feedback": "both"})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith(
            "application/problem+json"
        )
        taken = answer(stack, job_id, {"question": "q1", "feedback": "Mention TAG-revised."})
        assert taken.status_code == 202, taken.text
        assert taken.json()["status"] == "running" and taken.json()["input_request"] is None

        again = wait_for_question(stack, job_id, "q2")["input_request"]
        assert again["round"] == 2 and "TAG-revised" in again["output"]
        assert answer(stack, job_id, {"question": "q1", "approve": True}).status_code == 409
        assert answer(stack, job_id, {"question": "q2", "approve": True}).status_code == 202

        done = stack.wait_for_job(job_id, KEY, timeout=180)
        assert done["status"] == "succeeded", done
        receiver.wait_for_event("job.succeeded")
        waited = [json.loads(h["body"]) for h in receiver.received]
        assert [h["data"]["input_request"]["id"] for h in waited if h["type"] == "job.waiting"] == [
            "q1", "q2"
        ]  # fmt: skip
    assert [t["name"] for t in done["result"]["tasks"]] == ["research_task", "reporting_task"]
    assert "TAG-revised" in done["result"]["tasks"][1]["output"]
    assert [f["name"] for f in done["result"]["files"]] == ["report.md"]
    assert done["progress"]["completed_tasks"] == 2
    # The research task ran once, for this job, across the three runs of its flow.
    research = [p for p in llm_prompts(stack) if RESEARCH_PROMPT in p and "tides" in p]
    assert len(research) == 2, "once for this job, once for the plain job"
    assert answer(stack, job_id, {"approve": True}).status_code == 409


def test_a_question_left_unanswered_past_its_timeout_fails_the_job(stack: DevStack) -> None:
    job_id = submit(stack, "review_quick")
    wait_for_question(stack, job_id, "q1")
    ended = stack.wait_for_job(job_id, KEY, timeout=120)
    assert ended["status"] == "failed", ended
    assert ended["error"]["kind"] == "InputTimeout"
    assert ended["input_request"] is None
    late = answer(stack, job_id, {"approve": True})
    assert late.status_code == 409 and late.json()["job_status"] == "failed"


def test_a_waiting_job_can_be_cancelled(stack: DevStack) -> None:
    job_id = submit(stack, "review")
    wait_for_question(stack, job_id, "q1")
    cancel = httpx.post(f"{stack.base_url}/v1/jobs/{job_id}/cancel", headers=HEADERS, timeout=30)
    assert cancel.status_code == 202
    ended = stack.wait_for_job(job_id, KEY, timeout=60)
    assert ended["status"] == "cancelled", ended
    assert run_state(stack, job_id)["type"] == "CANCELLED"


def test_a_job_answered_in_prefect_itself_runs_again_and_ends(stack: DevStack) -> None:
    # Resumed as Prefect's UI form or `prefect.flow_runs.resume_flow_run` does it, not
    # through the edge: the worker tells the edge the job runs again.
    job_id = submit(stack, "review")
    wait_for_question(stack, job_id, "q1")
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    found = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}).json()
    (run_id,) = [r["id"] for r in found if r["parameters"].get("job_id") == job_id]
    resumed = httpx.post(f"{api}/flow_runs/{run_id}/resume", json={"run_input": {"approve": True}})
    assert resumed.json()["status"] == "ACCEPT", resumed.text
    done = stack.wait_for_job(job_id, KEY, timeout=180)
    assert done["status"] == "succeeded", done
    json_page = {**HEADERS, "Accept": "application/json"}
    events = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}/events", headers=json_page).json()
    kinds = [e["type"] for e in events["events"]]
    waited = kinds.index("job.waiting")
    assert "job.running" in kinds[waited:], kinds  # not waiting until the very end
    assert answer(stack, job_id, {"approve": True}).status_code == 409
