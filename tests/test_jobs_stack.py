"""Jobs through the real local stack: Prefect server, process workers, the real flow and
CrewAI, callbacks, KV and signed webhooks; the crew LLM is a scripted fake so the test is
about the plumbing (tests/test_dev_stack_e2e.py runs the real SmolLM2)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from edge.settings import DEV_API_KEYS
from shared.claims import claim_message
from tests.doubles.openai_server import FakeOpenAIServer
from tests.support import DevStack, WebhookReceiver, process_group

pytestmark = pytest.mark.e2e
KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("jobs-stack")
    env = {
        "EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm",
        "EDGECREW_FAKE_LLM_LOG": str(tmp / "llm.jsonl"),
        "EDGECREW_ZOMBIE_SECONDS": "45",
        "EDGECREW_RECONCILE_SECONDS": "3",
        "EDGECREW_STALE_AFTER_SECONDS": "5",
        "EDGECREW_CLAIM_TIMEOUT_SECONDS": "5",
        "EDGECREW_WORKER_HEARTBEAT_SECONDS": "10",  # offline after 30 s without one
    }
    with FakeOpenAIServer() as llm:  # the crews use the scripted LLM; the edge needs one
        env["EDGECREW_LLM_BASE_URL"] = llm.base_url
        with DevStack.running(tmp, "--no-demo", env=env) as running:
            yield running


def submit(stack: DevStack, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    url = f"{stack.base_url}/v1/jobs"
    response = httpx.post(url, json=body, headers={**HEADERS, **headers}, timeout=30)
    assert response.status_code == 202, response.text
    return dict(response.json())


def verified(stack: DevStack, hook: dict[str, Any]) -> dict[str, Any]:
    secret = httpx.get(f"{stack.base_url}/v1/webhooks/secret", headers=HEADERS).json()["secret"]
    headers = {k.lower(): v for k, v in hook["headers"].items()}
    return dict(Webhook(secret).verify(hook["body"], headers))


def flow_runs(stack: DevStack, job_id: str) -> list[dict[str, Any]]:
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}).json()
    return [run for run in runs if run["parameters"].get("job_id") == job_id]


def test_research_job_runs_the_crew_with_the_knowledge_tool(stack: DevStack) -> None:
    note = {"id": "atlas", "text": "Heron-7 is the staging database; it lives in Oslo."}
    url = f"{stack.base_url}/v1/documents"  # the first ingest loads MiniLM: allow for it
    httpx.post(url, json={"documents": [note]}, headers=HEADERS, timeout=180).raise_for_status()
    with WebhookReceiver() as receiver:
        body = {"crew": "research", "inputs": {"topic": "the staging database"},
                "webhook": {"url": receiver.url, "events": ["job.running", "job.progress",
                                                             "job.succeeded"]}}  # fmt: skip
        accepted = submit(stack, body, **{"Idempotency-Key": "research-1"})
        job = stack.wait_for_job(accepted["id"], KEY)
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"completed_tasks": 2, "total_tasks": 2, "current_task": None}
        research, report = job["result"]["tasks"]
        assert "[atlas#0]" in research["output"], "the tool's passage reached the researcher"
        assert report["output"].startswith("FAKE ANSWER")
        succeeded = verified(stack, receiver.wait_for_event("job.succeeded"))
        assert succeeded["data"]["result"] == job["result"]
        kinds = [json.loads(h["body"])["type"] for h in receiver.received]
        assert kinds[0] == "job.running" and kinds.count("job.progress") == 2
        assert {d["status_code"] for d in job["deliveries"]} == {204}

    again = submit(stack, body, **{"Idempotency-Key": "research-1"})
    assert again["id"] == accepted["id"] and again["status"] == "succeeded"
    assert len(flow_runs(stack, accepted["id"])) == 1, "one Prefect run, however often it is sent"
    (run,) = flow_runs(stack, accepted["id"])
    assert f"job {accepted['id']} succeeded" in run_logs(stack, run["id"], wait_for="succeeded")
    prompts = Path(stack.env["EDGECREW_FAKE_LLM_LOG"]).read_text()
    assert "the staging database" in prompts


def test_the_cli_submits_a_job_and_follows_it_to_its_result(stack: DevStack) -> None:
    command = [sys.executable, "-m", "edge.local.cli", "job", "summarize",
               "-i", "text=Heron-7 is the staging database.", "--url", stack.base_url]  # fmt: skip
    done = subprocess.run(
        command, env={**os.environ, "EDGECREW_API_KEY": KEY},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("job job_") and "FAKE ANSWER" in lines[-1]


def test_cancelling_a_running_job_stops_its_flow_run_process(stack: DevStack) -> None:
    with WebhookReceiver() as receiver:
        hook = {"url": receiver.url, "events": ["job.running", "job.cancelled"]}
        body = {"crew": "summarize", "inputs": {"text": "SLOW-CREW: cancel me."}, "webhook": hook}
        accepted = submit(stack, body)
        receiver.wait_for_event("job.running", timeout=60)
        (run,) = flow_runs(stack, accepted["id"])
        pid = int(run["infrastructure_pid"].rsplit(":", 1)[1])
        assert _alive(pid), "the run's own process, recorded as Prefect's workers do"

        url = f"{stack.base_url}/v1/jobs/{accepted['id']}/cancel"
        assert httpx.post(url, headers=HEADERS, timeout=30).status_code == 202
        cancelled = verified(stack, receiver.wait_for_event("job.cancelled", timeout=90))
    assert cancelled["data"]["id"] == accepted["id"]
    (run,) = flow_runs(stack, accepted["id"])
    assert run["state"]["type"] == "CANCELLED"
    assert not _alive(pid), "the hung crew's process was stopped, not left running"


def test_killing_a_worker_that_holds_runs_still_ends_every_job(stack: DevStack) -> None:
    """The machine goes while its worker holds a running run and two it had claimed
    (Pending) but not started yet: all three jobs end, each with its webhook.

    A live worker starts a claimed run in well under a second, so the test makes the
    two claims itself, in the worker's name as the worker would (Scheduled → Pending),
    while the pool is paused so that the worker cannot start them first."""
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    with WebhookReceiver() as receiver:
        hook = {"url": receiver.url, "events": ["job.running", "job.succeeded", "job.failed"]}

        def job(text: str) -> dict[str, Any]:
            return {"crew": "summarize", "inputs": {"text": text}, "webhook": hook}

        hung = submit(stack, job("SLOW-CREW: hang."))
        receiver.wait_for_event("job.running", timeout=60)
        httpx.patch(f"{api}/work_pools/cpu", json={"is_paused": True}).raise_for_status()
        try:
            claimed = [submit(stack, job(f"claimed {n}")) for n in range(2)]
            (holder,) = [w["name"] for w in pool_workers(stack, "cpu") if w["status"] == "ONLINE"]
            for accepted in claimed:
                run = handed_over(stack, accepted["id"])
                pending = {"state": {"type": "PENDING", "name": "Pending",
                                     "message": claim_message(holder)}}  # fmt: skip
                claim = httpx.post(f"{api}/flow_runs/{run['id']}/set_state", json=pending).json()
                assert claim["status"] == "ACCEPT", claim
            workers = stack.processes("executor.worker --pool cpu")
            assert len(workers) == 1, "one cpu worker should be running"
            group = os.getpgid(workers[0])
            assert [pid for pid in process_group(group) if pid != workers[0]], "its flow run"
            os.killpg(group, signal.SIGKILL)  # the worker, its fork server, the flow run
        finally:  # whatever happened, later tests need the pool back
            httpx.patch(f"{api}/work_pools/cpu", json={"is_paused": False}).raise_for_status()

        def ends() -> dict[str, str]:
            bodies = [json.loads(h["body"]) for h in receiver.received]
            return {b["data"]["id"]: b["type"] for b in bodies if b["type"] != "job.running"}

        receiver.wait_until(lambda: len(ends()) == 3, timeout=240)
    assert ends() == {hung["id"]: "job.failed", **{c["id"]: "job.succeeded" for c in claimed}}
    failed = httpx.get(f"{stack.base_url}/v1/jobs/{hung['id']}", headers=HEADERS).json()
    assert failed["status"] == "failed" and failed["error"]["kind"] == "Crashed"
    for accepted in claimed:  # given back to the pool, run by the restarted worker, once
        (run,) = flow_runs(stack, accepted["id"])
        assert started_count(stack, run["id"]) == 1, "the crew ran once, not twice"
    for hook_sent in receiver.received:
        verified(stack, hook_sent)


def test_a_killed_prefect_server_is_restarted_and_jobs_taken_meanwhile_still_end(
    stack: DevStack,
) -> None:
    """Prefect dies: the stack stays up, says what is down, keeps accepting jobs, and
    the job accepted while Prefect was away runs once it is back."""
    (server,) = stack.processes(f"server start --host 127.0.0.1 --port {stack.prefect_port}")
    os.killpg(os.getpgid(server), signal.SIGKILL)
    with WebhookReceiver() as receiver:
        body = {"crew": "summarize", "inputs": {"text": "while Prefect was down"},
                "webhook": {"url": receiver.url}}  # fmt: skip
        accepted = submit(stack, body)
        ready = httpx.get(f"{stack.base_url}/readyz", timeout=30)
        assert ready.status_code == 503 and "orchestrator" in ready.json()["detail"]
        assert ready.headers["retry-after"]
        succeeded = verified(stack, receiver.wait_for_event("job.succeeded", timeout=240))
    assert succeeded["data"]["id"] == accepted["id"]
    assert httpx.get(f"{stack.base_url}/readyz", timeout=30).status_code == 200
    assert stack.process.poll() is None, "edgecrew dev is still up"
    assert len(flow_runs(stack, accepted["id"])) == 1


def pool_workers(stack: DevStack, pool: str) -> list[dict[str, Any]]:
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    return list(httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}).json())


def started_count(stack: DevStack, run_id: str) -> int:
    """How many times the run entered Running (its state history in Prefect)."""
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}).json()
    return sum(state["type"] == "RUNNING" for state in states)


def handed_over(stack: DevStack, job_id: str) -> dict[str, Any]:
    """The job's one flow run, once the edge has handed the job to Prefect."""
    for _ in range(100):
        if runs := flow_runs(stack, job_id):
            (run,) = runs
            return run
        time.sleep(0.1)
    pytest.fail(f"job {job_id} never reached Prefect")


def test_a_burst_of_jobs_reaches_prefect_once_each_without_lock_errors(stack: DevStack) -> None:
    """Concurrent hand-overs: Prefect on SQLite answered them `503 database is locked`."""
    total, in_flight = 60, 20

    async def burst() -> list[str]:
        limits = httpx.Limits(max_connections=in_flight)
        async with httpx.AsyncClient(base_url=stack.base_url, headers=HEADERS, limits=limits,
                                     timeout=60) as client:  # fmt: skip
            gate = asyncio.Semaphore(in_flight)

            async def one(n: int) -> str:
                async with gate:
                    body = {"crew": "research", "inputs": {"topic": f"burst {n}"}}
                    key = {"Idempotency-Key": f"burst-{n}"}
                    response = await client.post("/v1/jobs", json=body, headers=key)
                    assert response.status_code == 202, response.text
                    return str(response.json()["id"])

            return await asyncio.gather(*(one(n) for n in range(total)))

    ids = asyncio.run(burst())
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    deadline = time.monotonic() + 120
    runs: dict[str, int] = {}
    while time.monotonic() < deadline:
        runs = {}
        for offset in range(0, 1000, 200):
            page = httpx.post(f"{api}/flow_runs/filter",
                              json={"limit": 200, "offset": offset}).json()  # fmt: skip
            for run in page:
                job_id = run["parameters"].get("job_id")
                runs[job_id] = runs.get(job_id, 0) + 1
            if len(page) < 200:
                break
        if all(job_id in runs for job_id in ids):
            break
        time.sleep(1)
    assert [job_id for job_id in ids if job_id not in runs] == [], "every job reached Prefect"
    assert [job_id for job_id in ids if runs[job_id] > 1] == [], "and exactly once"
    log = Path(stack.env["EDGECREW_DATA_DIR"]) / "logs" / "prefect.log"
    assert "database is locked" not in log.read_text(errors="replace")
    for job_id in ids:  # nothing left for the gpu worker to run
        httpx.post(f"{stack.base_url}/v1/jobs/{job_id}/cancel", headers=HEADERS, timeout=30)


def run_logs(stack: DevStack, run_id: str, *, wait_for: str) -> list[str]:
    """The flow run's log lines in Prefect (what its UI shows), once one mentions
    `wait_for`: they are shipped when the run's process ends, after its last callback."""
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    query = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    messages: list[str] = []
    for _ in range(40):
        messages = [e["message"] for e in httpx.post(f"{api}/logs/filter", json=query).json()]
        if any(wait_for in message for message in messages):
            break
        time.sleep(0.25)
    return messages


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    return state != "Z"  # exited, waiting to be reaped
