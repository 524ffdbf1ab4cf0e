"""Schedules through the real local stack: Prefect's own scheduler makes the runs of a
schedule's deployment, edgecrew's worker runs them, each run becomes a job of the tenant
(with `schedule_id`) and ends with the schedule's signed webhook; overlap, pause and
delete are Prefect's. The crew LLM is the scripted fake, as in tests/test_jobs_stack.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from edge.adapters.prefect_schedules import deployment_name
from edge.jobs.ids import scheduled_job_id
from edge.settings import DEV_API_KEYS
from tests.doubles.openai_server import FakeOpenAIServer
from tests.support import DevStack, WebhookReceiver
from tests.test_jobs_stack import HEADERS, verified

pytestmark = pytest.mark.e2e
INTERVAL = 6


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("schedules-stack")
    env = {
        "EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm",
        "EDGECREW_SCHEDULE_MIN_INTERVAL_SECONDS": str(INTERVAL),
        "EDGECREW_RECONCILE_SECONDS": "3",
        "EDGECREW_STALE_AFTER_SECONDS": "5",  # a killed run's end is read from Prefect
        # Runs that never registered are looked for 5 s after they started: the others'
        # registrations (within a second or two) may be raced, and must still be one job.
        "EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS": "5",
    }
    with FakeOpenAIServer() as llm:  # the crews use the scripted LLM; the edge needs one
        env["EDGECREW_LLM_BASE_URL"] = llm.base_url
        with DevStack.running(tmp, "--no-demo", env=env) as running:
            yield running


def create(stack: DevStack, body: dict[str, Any]) -> dict[str, Any]:
    url = f"{stack.base_url}/v1/schedules"
    response = httpx.post(url, json=body, headers=HEADERS, timeout=30)
    assert response.status_code == 201, response.text
    return dict(response.json())


def prefect(stack: DevStack, method: str, path: str, body: Any = None) -> httpx.Response:
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    return httpx.request(method, f"{api}/{path}", json=body, timeout=30)


def deployment(stack: DevStack, schedule_id: str) -> httpx.Response:
    return prefect(stack, "GET", f"deployments/name/run-crew-job/{deployment_name(schedule_id)}")


def runs(stack: DevStack, deployment_id: str, *states: str) -> list[dict[str, Any]]:
    query: dict[str, Any] = {"deployment_id": {"any_": [deployment_id]}}
    if states:
        query["state"] = {"type": {"any_": list(states)}}
    return list(prefect(stack, "POST", "flow_runs/filter", {"flow_runs": query}).json())


def jobs_of(stack: DevStack, schedule: dict[str, Any]) -> list[dict[str, Any]]:
    url = stack.base_url + schedule["urls"]["jobs"]
    return list(httpx.get(url, headers=HEADERS, timeout=30).json()["jobs"])


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    pytest.fail(f"not within {timeout} s: {what}")


def test_a_schedules_runs_arrive_as_jobs_with_webhooks_until_paused_and_deleted(
    stack: DevStack,
) -> None:
    with WebhookReceiver() as receiver:
        hook = {"url": receiver.url, "events": ["job.running", "job.succeeded", "job.failed"]}
        schedule = create(stack, {"crew": "summarize", "inputs": {"text": "Heron-7 is in Oslo."},
                                  "interval_seconds": INTERVAL, "webhook": hook})  # fmt: skip
        started = time.monotonic()
        succeeded = verified(stack, receiver.wait_for_event("job.succeeded", timeout=60))
        took = time.monotonic() - started
    job = succeeded["data"]
    assert job["schedule_id"] == schedule["id"] and job["crew"] == "summarize"
    assert job["urls"]["schedule"] == schedule["urls"]["self"]
    assert job["inputs"] == {"text": "Heron-7 is in Oslo."}
    kinds = [json.loads(h["body"])["type"] for h in receiver.received]
    assert kinds[0] == "job.running", kinds
    found = httpx.get(f"{stack.base_url}/v1/jobs/{job['id']}", headers=HEADERS).json()
    assert found["status"] == "succeeded" and found["schedule_id"] == schedule["id"]
    assert job["id"] in {j["id"] for j in jobs_of(stack, schedule)}
    print(f"first scheduled run succeeded {took:.1f} s after the schedule was made")

    made = deployment(stack, schedule["id"]).json()
    assert made["paused"] is False and made["schedules"][0]["schedule"]["interval"] == INTERVAL
    assert made["global_concurrency_limit"]["limit"] == 1, "its own limit, not its crew's"
    assert made["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    tenant = DEV_API_KEYS.split(":", 1)[0]

    def its_run() -> list[dict[str, Any]]:
        done = runs(stack, made["id"], "COMPLETED")
        return [r for r in done if scheduled_job_id(tenant, r["id"]) == job["id"]]

    (run,) = eventually(its_run, 20, "the job's flow run completed in Prefect")
    assert run["auto_scheduled"] is True, "Prefect's scheduler made it, not the edge"

    url = f"{stack.base_url}{schedule['urls']['self']}"
    paused = httpx.post(f"{url}/pause", headers=HEADERS, timeout=30)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert deployment(stack, schedule["id"]).json()["paused"] is True
    assert runs(stack, made["id"], "SCHEDULED") == [], "the runs scheduled ahead are dropped"
    time.sleep(INTERVAL + 1)  # Prefect's scheduler looks at recent deployments every 5 s
    assert runs(stack, made["id"], "SCHEDULED") == [], "and no new ones are made"
    assert httpx.get(url, headers=HEADERS).json()["next_runs"] == []

    resumed = httpx.post(f"{url}/resume", headers=HEADERS, timeout=30)
    assert resumed.json()["paused"] is False
    eventually(lambda: runs(stack, made["id"], "SCHEDULED"), 20, "runs scheduled again")
    assert httpx.get(url, headers=HEADERS).json()["next_runs"]

    assert httpx.delete(url, headers=HEADERS, timeout=30).status_code == 204
    assert httpx.get(url, headers=HEADERS).status_code == 404
    # At once, or (a run had just started) once that run has ended.
    eventually(lambda: deployment(stack, schedule["id"]).status_code == 404, 30,
               "the deployment removed")  # fmt: skip
    assert runs(stack, made["id"], "SCHEDULED") == []
    after = httpx.get(f"{stack.base_url}/v1/jobs/{job['id']}", headers=HEADERS).json()
    assert after["status"] == "succeeded", "the jobs a schedule made outlive it"


def test_overlap_skip_is_prefects_cancel_new_and_makes_no_job(stack: DevStack) -> None:
    """A run due while the last one still runs is cancelled by Prefect before it starts:
    no job, no webhook, no failure for the tenant to see."""
    with WebhookReceiver() as receiver:
        hook = {"url": receiver.url, "events": ["job.running", "job.cancelled"]}
        schedule = create(stack, {"crew": "summarize", "inputs": {"text": "SLOW-CREW: hang."},
                                  "interval_seconds": INTERVAL, "overlap": "skip",
                                  "webhook": hook})  # fmt: skip
        running = json.loads(receiver.wait_for_event("job.running", timeout=60)["body"])["data"]
        made = deployment(stack, schedule["id"]).json()
        skipped = eventually(lambda: runs(stack, made["id"], "CANCELLED"), 3 * INTERVAL + 10,
                             "a run cancelled by the deployment's concurrency limit")  # fmt: skip
        assert "concurrency" in skipped[0]["state"]["message"].lower(), skipped[0]["state"]
        assert [j["id"] for j in jobs_of(stack, schedule)] == [running["id"]]

        # Deleting the schedule leaves the run under way, and its job: the deployment is
        # paused, and removed once that run has ended (Prefect 3.9 could not end the run
        # otherwise: its concurrency slot would belong to a deleted limit).
        url = f"{stack.base_url}{schedule['urls']['self']}"
        assert httpx.delete(url, headers=HEADERS, timeout=30).status_code == 204
        assert httpx.get(url, headers=HEADERS, timeout=30).status_code == 404
        assert deployment(stack, schedule["id"]).json()["paused"] is True
        cancel = f"{stack.base_url}/v1/jobs/{running['id']}/cancel"
        assert httpx.post(cancel, headers=HEADERS, timeout=30).status_code == 202
        cancelled = receiver.wait_for_event("job.cancelled", timeout=60)
    assert json.loads(cancelled["body"])["data"]["id"] == running["id"]
    assert [j["id"] for j in jobs_of(stack, schedule)] == [running["id"]], "still one job"
    eventually(lambda: deployment(stack, schedule["id"]).status_code == 404, 30,
               "the deployment removed once its run ended")  # fmt: skip


def test_a_run_whose_registration_was_lost_becomes_a_job_and_its_webhook_goes(
    stack: DevStack,
) -> None:
    """The edge away when a run started: the flow failed before its crew ran (and so did
    its retry), and Prefect holds a failed run of the schedule with no job. Made here by
    hand, running from the start (so that no worker takes it), with the deployment's
    parameters as Prefect's scheduler makes a run, and then failed."""
    tenant = DEV_API_KEYS.split(":", 1)[0]
    with WebhookReceiver() as receiver:
        hook = {"url": receiver.url, "events": ["job.failed"]}
        schedule = create(stack, {"crew": "summarize", "inputs": {"text": "Lost in Oslo."},
                                  "cron": "0 0 1 1 *", "overlap": "allow",
                                  "webhook": hook})  # fmt: skip
        made = deployment(stack, schedule["id"]).json()
        running = {"state": {"type": "RUNNING", "name": "Running"}}
        run = prefect(stack, "POST", f"deployments/{made['id']}/create_flow_run", running).json()
        lost = "Flow run encountered an exception: EdgeUnreachable: not acknowledged"
        failed = {"state": {"type": "FAILED", "name": "Failed", "message": lost}, "force": True}
        prefect(stack, "POST", f"flow_runs/{run['id']}/set_state", failed)
        assert prefect(stack, "GET", f"flow_runs/{run['id']}").json()["run_count"] == 1
        hooked = verified(stack, receiver.wait_for_event("job.failed", timeout=60))
    job = hooked["data"]
    assert job["id"] == scheduled_job_id(tenant, run["id"])
    assert job["schedule_id"] == schedule["id"] and job["inputs"] == {"text": "Lost in Oslo."}
    assert job["error"] == {"kind": "Failed", "message": lost}
    assert [j["id"] for j in jobs_of(stack, schedule)] == [job["id"]], "one job"
    url = f"{stack.base_url}{schedule['urls']['self']}"
    assert httpx.delete(url, headers=HEADERS, timeout=30).status_code == 204
