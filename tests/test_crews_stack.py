"""Users' own CrewAI projects through the real local stack: made by CrewAI's CLI, named in
an edgecrew.toml, published to the edge by the workers that run them, run by real
Prefect and real workers to signed webhooks. The crew LLM is the scripted fake (the real
SmolLM2 runs the JSON-first `summarize` project in tests/test_dev_stack_e2e.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from edge.settings import DEV_API_KEYS
from tests.crews.projects import Projects, create_projects, toml_for
from tests.doubles.openai_server import FakeOpenAIServer
from tests.support import DevStack, WebhookReceiver, free_port

pytestmark = pytest.mark.e2e
KEY = DEV_API_KEYS.split(":", 1)[1]
HEADERS = {"Authorization": f"Bearer {KEY}"}
SCRIPTED = {"EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Projects:
    return create_projects(tmp_path_factory.mktemp("crewai-projects"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, projects: Projects) -> Any:
    tmp = tmp_path_factory.mktemp("crews-stack")
    config = tmp / "edgecrew.toml"
    config.write_text(toml_for(projects))
    with FakeOpenAIServer() as llm:  # the crews use the scripted LLM; the edge needs one
        env = {**SCRIPTED, "EDGECREW_LLM_BASE_URL": llm.base_url, "EDGECREW_CONFIG": ""}
        with DevStack.running(tmp, "--no-demo", "--config", str(config), env=env) as running:
            yield running


def crews(stack: DevStack) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{stack.base_url}/v1/crews", headers=HEADERS, timeout=30)
    listed.raise_for_status()
    return {crew["name"]: crew for crew in listed.json()["crews"]}


def run_job(stack: DevStack, crew: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """Submit, wait for the signed `job.succeeded`; the job and its verified webhooks."""
    with WebhookReceiver() as receiver:
        events = ["job.running", "job.progress", "job.succeeded", "job.failed"]
        body = {"crew": crew, "inputs": inputs, "webhook": {"url": receiver.url, "events": events}}
        accepted = httpx.post(f"{stack.base_url}/v1/jobs", json=body, headers=HEADERS, timeout=30)
        assert accepted.status_code == 202, accepted.text
        job = stack.wait_for_job(accepted.json()["id"], KEY)
        assert job["status"] == "succeeded", job
        receiver.wait_for_event("job.succeeded")
        secret = httpx.get(f"{stack.base_url}/v1/webhooks/secret", headers=HEADERS).json()
        hooks = [
            Webhook(secret["secret"]).verify(
                hook["body"], {k.lower(): v for k, v in hook["headers"].items()}
            )
            for hook in receiver.received
        ]
    return job, hooks


def test_the_workers_publish_the_configured_projects(stack: DevStack) -> None:
    listed = crews(stack)
    assert set(listed) == {"classic", "content", "scaffold"}  # not the repo's own crews
    assert listed["classic"]["inputs"]["required"] == ["current_year", "topic"]
    assert listed["content"]["kind"] == "flow"
    assert listed["classic"]["tasks"] == ["research_task", "reporting_task"]
    missing = httpx.post(f"{stack.base_url}/v1/jobs", headers=HEADERS, timeout=30,
                         json={"crew": "classic", "inputs": {"topic": "x"}})  # fmt: skip
    assert missing.status_code == 422 and "current_year" in missing.text


def test_a_classic_project_runs_to_a_signed_webhook_with_progress_and_its_report(
    stack: DevStack,
) -> None:
    job, hooks = run_job(stack, "classic", {"topic": "tides", "current_year": "2026"})
    # Each event is its own delivery: they may arrive in any order.
    assert sorted(h["type"] for h in hooks) == [
        "job.progress", "job.progress", "job.running", "job.succeeded"
    ]  # fmt: skip
    done = sorted(
        h["data"]["progress"]["completed_tasks"] for h in hooks if h["type"] == "job.progress"
    )
    assert done == [1, 2]
    assert job["progress"] == {"completed_tasks": 2, "total_tasks": 2, "current_task": None}
    assert [f["name"] for f in job["result"]["files"]] == ["report.md"]
    assert job["crew_version"] == crews(stack)["classic"]["version"]


def test_a_flow_runs_with_progress_per_step(stack: DevStack) -> None:
    job, hooks = run_job(stack, "content", {"topic": "ignored by the template's first step"})
    assert job["result"]["steps"] == ["plan_content", "generate_content", "save_content"]
    assert job["result"]["state"]["final_post"].startswith("FAKE ANSWER")
    assert [f["name"] for f in job["result"]["files"]] == ["output/post.md"]
    assert job["progress"]["total_tasks"] == 3
    assert any(h["type"] == "job.progress" for h in hooks)


def test_a_json_first_scaffold_runs(stack: DevStack) -> None:
    job, _ = run_job(stack, "scaffold", {})
    assert job["result"]["tasks"][0]["name"] == "research_task"
    assert job["result"]["output"].startswith("FAKE ANSWER")


def test_two_jobs_of_one_file_writing_crew_at_once_keep_their_own_files(
    stack: DevStack,
) -> None:
    """Both write report.md, at the same time (3 s per LLM call), each in its own folder."""
    with WebhookReceiver() as receiver:
        ids = []
        for tag in ("TAG-one", "TAG-two"):
            body = {"crew": "classic", "webhook": {"url": receiver.url},
                    "inputs": {"topic": f"SLEEP-CREW {tag}", "current_year": "2026"}}  # fmt: skip
            response = httpx.post(f"{stack.base_url}/v1/jobs", json=body, headers=HEADERS)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        jobs = [stack.wait_for_job(job_id, KEY) for job_id in ids]
    for job, tag in zip(jobs, ("TAG-one", "TAG-two"), strict=True):
        assert job["status"] == "succeeded", job
        (report,) = job["result"]["files"]
        assert report["name"] == "report.md" and tag in report["text"]
        other = "TAG-two" if tag == "TAG-one" else "TAG-one"
        assert other not in report["text"], "one job's report leaked into the other's"
    runs = [_flow_run(stack, job["id"]) for job in jobs]
    assert (
        runs[0]["start_time"] < runs[1]["end_time"] and runs[1]["start_time"] < runs[0]["end_time"]
    ), "the two runs overlapped in time"


def _flow_run(stack: DevStack, job_id: str) -> dict[str, Any]:
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    found = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}).json()
    (run,) = [r for r in found if r["parameters"].get("job_id") == job_id]
    return dict(run)


def test_a_worker_started_with_a_new_crew_adds_it_to_the_edge(
    stack: DevStack, projects: Projects, tmp_path: Path
) -> None:
    """Adding a crew is starting workers with it configured: no edge redeploy."""
    assert "fresh" not in crews(stack)
    config = tmp_path / "edgecrew.toml"
    config.write_text(
        f'[crews.fresh]\nsource = "classic_crew.crew:ClassicCrew"\n'
        f'path = "{projects.classic / "src"}"\npool = "extra"\n'
    )
    api = f"http://127.0.0.1:{stack.prefect_port}/api"
    env = _worker_env(stack, api, config)
    deployed = subprocess.run([sys.executable, "-m", "executor.deploy"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "executor.worker", "--pool", "extra",
         "--healthcheck-port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_published(port, worker)
        assert crews(stack)["fresh"]["pool"] == "extra"
        job, _ = run_job(stack, "fresh", {"topic": "new", "current_year": "2026"})
        assert job["result"]["files"][0]["name"] == "report.md"
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    assert "offering crew 'fresh'" in output


def test_a_broken_crew_stops_the_worker_with_its_name_and_error(
    stack: DevStack, tmp_path: Path
) -> None:
    config = tmp_path / "edgecrew.toml"
    config.write_text('[crews.ghost]\nsource = "ghost_project.crew:GhostCrew"\npool = "cpu"\n')
    env = _worker_env(stack, f"http://127.0.0.1:{stack.prefect_port}/api", config)
    argv = [sys.executable, "-m", "executor.worker", "--pool", "cpu"]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "cannot offer crew 'ghost'" in done.stderr
    assert "ModuleNotFoundError: No module named 'ghost_project'" in done.stderr
    assert "ghost" not in crews(stack), "nothing was published"


def _worker_env(stack: DevStack, api: str, config: Path) -> dict[str, str]:
    secrets = json.loads((Path(stack.env["EDGECREW_DATA_DIR"]) / "dev-secrets.json").read_text())
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("EDGECREW_")},
        **SCRIPTED,
        "PYTHONPATH": str(REPO),
        "PREFECT_API_URL": api,
        "EDGECREW_CONFIG": str(config),
        "EDGECREW_EDGE_URL": stack.base_url,
        "EDGECREW_EXECUTOR_SECRET": secrets["EDGECREW_EXECUTOR_SECRET"],
        "EDGECREW_EXECUTOR_DIR": str(REPO),
    }


def _wait_published(port: int, worker: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.communicate()[0]
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
        except httpx.HTTPError:
            health = {}
        if health.get("published"):
            return
        time.sleep(0.5)
    pytest.fail("the new worker never published its crews")
