"""The executor's registration of a schedule's run at the edge (`EdgeClient`)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import httpx
import pytest

from executor import flows
from executor.edge_client import SCHEDULE_VISIBLE_SECONDS, EdgeClient, EdgeUnreachable
from executor.settings import ExecutorSettings
from shared.signing import new_secret, verify

SECRET = new_secret()
SETTINGS = ExecutorSettings(edge_url="http://edge.test", executor_secret=SECRET)
PATH = "/v1/internal/schedules/sch_1/runs"


def client(
    answers: list[httpx.Response], seen: list[httpx.Request], slept: list[float]
) -> EdgeClient:
    def edge(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    transport = httpx.MockTransport(edge)
    return EdgeClient(SETTINGS, client=httpx.Client(transport=transport), sleep=slept.append)


def test_a_run_registers_signed_for_its_schedule_and_run() -> None:
    seen: list[httpx.Request] = []
    edge = client([httpx.Response(200, json={"job_id": "job_x", "status": "queued"})], seen, [])
    assert edge.register_scheduled_run("sch_1", "tenant_a", "run-1") == "job_x"
    (request,) = seen
    assert request.url.path == PATH
    assert json.loads(request.content) == {"tenant": "tenant_a", "flow_run_id": "run-1"}
    message_id = verify(
        SECRET,
        dict(request.headers),
        request.content,
        now=int(request.headers["webhook-timestamp"]),
    )
    assert message_id == "schedule-run:sch_1:run-1"


def test_a_schedule_not_visible_yet_is_waited_for() -> None:
    seen: list[httpx.Request] = []
    slept: list[float] = []
    answers = [httpx.Response(404, json={"detail": "not yet"})] * 2
    answers.append(httpx.Response(200, json={"job_id": "job_x", "status": "queued"}))
    edge = client(answers, seen, slept)
    assert edge.register_scheduled_run("sch_1", "tenant_a", "run-1") == "job_x"
    assert len(seen) == 3 and slept == [2.0, 4.0]


def test_a_deleted_schedule_or_one_that_never_shows_makes_no_job() -> None:
    slept: list[float] = []
    gone = client([httpx.Response(410, json={"detail": "deleted"})], [], slept)
    assert gone.register_scheduled_run("sch_1", "tenant_a", "run-1") is None and slept == []
    not_its = client([httpx.Response(409, json={"detail": "not its run"})], [], slept)
    assert not_its.register_scheduled_run("sch_1", "tenant_a", "run-1") is None and slept == []
    never = client([httpx.Response(404, json={"detail": "no"})], [], slept)
    assert never.register_scheduled_run("sch_1", "tenant_a", "run-1") is None
    assert SCHEDULE_VISIBLE_SECONDS <= sum(slept) <= SCHEDULE_VISIBLE_SECONDS + 30


def test_an_edge_that_stays_down_raises_so_prefect_retries_the_run() -> None:
    edge = client([httpx.Response(503, json={"detail": "down"})], [], [])
    with pytest.raises(EdgeUnreachable):
        edge.register_scheduled_run("sch_1", "tenant_a", "run-1")


def test_a_run_whose_registration_fails_raises_before_its_crew_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow of a schedule's run, its registration never acknowledged: it fails (for
    Prefect to retry, then to end `Failed`) without running the crew or posting any event
    for a job the edge has no record of; the reconciler adopts the failed run
    (tests/test_schedule_adoption.py)."""
    seen: list[httpx.Request] = []
    crews: list[str] = []
    monkeypatch.setenv("EDGECREW_EDGE_URL", SETTINGS.edge_url)
    monkeypatch.setenv("EDGECREW_EXECUTOR_SECRET", SECRET)
    monkeypatch.setattr(flows, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(flows, "flow_run", SimpleNamespace(id="run-1", run_count=1))
    down = [httpx.Response(503, json={"detail": "down"})]
    monkeypatch.setattr(flows, "EdgeClient", lambda settings: client(down, seen, []))
    monkeypatch.setattr(flows, "crew_for_run", crews.append)
    with pytest.raises(EdgeUnreachable):
        flows.run_crew_job.fn("", "tenant_a", "research", {"topic": "x"}, schedule_id="sch_1")
    assert crews == [], "the crew never ran"
    assert {request.url.path for request in seen} == {PATH}, "no job event was posted"
    assert len(seen) == SETTINGS.callback_attempts
