"""`edgecrew job`: submit, follow and print, against respx standing in for the edge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner

from edge.local import cli

EDGE = "http://edge.test"


def job(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "job_1", "status": status, "progress": None, "result": None, **extra}


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: None)


@pytest.fixture
def edge() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=EDGE, assert_all_called=False) as router:
        yield router


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, ["job", *args, "--url", EDGE, "--key", "k" * 20])


def test_submits_follows_and_prints_the_result(edge: respx.MockRouter) -> None:
    submit = edge.post("/v1/jobs").respond(202, json=job("queued"))
    progress = {"completed_tasks": 1, "total_tasks": 2, "current_task": "write"}
    edge.get("/v1/jobs/job_1").mock(
        side_effect=[
            httpx.Response(200, json=job("running", progress=None)),
            httpx.Response(429, headers={"Retry-After": "1"}, json={"status": 429}),
            httpx.Response(200, json=job("running", progress=progress)),
            httpx.Response(200, json=job("succeeded", result={"output": "THE SUMMARY"})),
        ]
    )

    result = run("summarize", "-i", "text=long text", "--json", '{"style": "short"}',
                 "--idempotency-key", "k-1")  # fmt: skip

    assert result.exit_code == 0, result.output
    sent = submit.calls.last.request
    assert json.loads(sent.content) == {
        "crew": "summarize",
        "inputs": {"style": "short", "text": "long text"},
    }
    assert sent.headers["idempotency-key"] == "k-1"
    assert sent.headers["authorization"] == "Bearer " + "k" * 20
    lines = result.output.splitlines()
    assert lines[0] == "job job_1 queued"
    assert "running: 1/2 tasks, next: write" in lines
    assert lines[-1] == "THE SUMMARY"


def test_a_failed_job_exits_1_with_its_error(edge: respx.MockRouter) -> None:
    edge.post("/v1/jobs").respond(202, json=job("queued"))
    error = {"kind": "Crashed", "message": "worker lost"}
    edge.get("/v1/jobs/job_1").respond(200, json=job("failed", error=error))
    result = run("summarize", "-i", "text=x")
    assert result.exit_code == 1
    assert "failed: Crashed: worker lost" in result.output


def test_a_refused_submission_prints_the_problem(edge: respx.MockRouter) -> None:
    problem = {"status": 422, "detail": "no crew 'nope'"}
    edge.post("/v1/jobs").respond(422, json=problem)
    result = run("nope")
    assert result.exit_code == 1 and "no crew 'nope'" in result.output


@pytest.mark.parametrize(
    "args", [["-i", "no-equals-sign"], ["--json", "[1, 2]"], ["--json", "{not json"]]
)
def test_bad_inputs_are_refused_before_anything_is_sent(
    edge: respx.MockRouter, args: list[str]
) -> None:
    submit = edge.post("/v1/jobs").respond(202, json=job("queued"))
    result = run("summarize", *args)
    assert result.exit_code == 2 and submit.call_count == 0


def test_no_wait_returns_at_once(edge: respx.MockRouter) -> None:
    edge.post("/v1/jobs").respond(202, json=job("queued"))
    follow = edge.get("/v1/jobs/job_1").respond(200, json=job("running"))
    result = run("summarize", "-i", "text=x", "--no-wait")
    assert result.exit_code == 0 and "job job_1 queued" in result.output
    assert follow.call_count == 0
