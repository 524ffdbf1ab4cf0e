"""The Prefect adapter of the CrewScheduler port, against Prefect's REST shapes (respx).

What Prefect then does with such a deployment (schedules the runs, applies the overlap
policy, pauses) is tested through the real local stack, tests/test_schedules_stack.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from edge.adapters.prefect import PrefectOrchestrator
from edge.adapters.prefect_schedules import SCHEDULE_TAG, PrefectCrewScheduler
from edge.ports import (
    DependencyUnavailable,
    OrchestratorRejected,
    RunPhase,
    ScheduleRefused,
    ScheduleSpec,
)

PREFECT = "http://prefect.test/api"
BASE = {
    "id": "base-deployment", "name": "gpu", "flow_id": "flow-1", "work_pool_name": "gpu",
    "work_queue_name": "default", "entrypoint": "executor/flows.py:run_crew_job",
    "path": None, "pull_steps": [{"prefect.deployments.steps.set_working_directory":
                                  {"directory": "/app"}}],
    "job_variables": {}, "parameter_openapi_schema": {"type": "object", "properties": {}},
    "enforce_parameter_schema": True, "tags": ["edgecrew"], "concurrency_limit": 2,
    "schedules": [], "paused": False, "parameters": {},
}  # fmt: skip


def spec(**changes: Any) -> ScheduleSpec:
    fields: dict[str, Any] = {
        "schedule_id": "sch_0001", "tenant": "tenant_a", "crew": "research",
        "deployment": "run-crew-job/gpu", "parameters": {"job_id": "", "schedule_id": "sch_0001"},
        "cron": "*/5 * * * *", "interval_seconds": None, "timezone": "Europe/Oslo",
        "overlap": "skip",
    }  # fmt: skip
    return ScheduleSpec(**{**fields, **changes})


class Recorded:
    def __init__(self, router: respx.MockRouter) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answer: httpx.Response = httpx.Response(201, json={"id": "dep-1"})
        router.get(f"{PREFECT}/deployments/name/run-crew-job/gpu").respond(200, json=BASE)
        router.post(f"{PREFECT}/deployments/").mock(side_effect=self.create)

    def create(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return self.answer


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def recorded(router: respx.MockRouter) -> Recorded:
    return Recorded(router)


@pytest.fixture
def scheduler() -> PrefectCrewScheduler:
    return PrefectCrewScheduler(PrefectOrchestrator(PREFECT, backoff=0.001))


async def test_a_schedule_is_a_copy_of_the_crews_deployment_with_its_timing(
    recorded: Recorded, scheduler: PrefectCrewScheduler
) -> None:
    assert await scheduler.create(spec(), paused=True) == "dep-1"
    (body,) = recorded.bodies
    copied = ("flow_id", "work_pool_name", "work_queue_name", "entrypoint", "pull_steps",
              "job_variables", "parameter_openapi_schema", "enforce_parameter_schema")  # fmt: skip
    assert {key: body[key] for key in copied} == {key: BASE[key] for key in copied}
    assert body["name"] == "schedule-sch_0001" and body["paused"] is True
    assert body["parameters"] == {"job_id": "", "schedule_id": "sch_0001"}
    assert body["schedules"] == [{"schedule": {"cron": "*/5 * * * *", "timezone": "Europe/Oslo"},
                                  "active": True, "slug": "edgecrew"}]  # fmt: skip
    assert set(body["tags"]) == {"edgecrew", SCHEDULE_TAG, "tenant:tenant_a", "crew:research",
                                 "schedule:sch_0001"}  # fmt: skip
    assert "id" not in body, "a deployment of its own, not the crew's updated"


@pytest.mark.parametrize(
    ("overlap", "limit", "strategy"),
    [("skip", 1, "CANCEL_NEW"), ("queue", 1, "ENQUEUE"), ("allow", None, None)],
)
async def test_overlap_is_prefects_deployment_concurrency(
    recorded: Recorded, scheduler: PrefectCrewScheduler, overlap: str, limit: int | None,
    strategy: str | None,
) -> None:  # fmt: skip
    await scheduler.create(spec(overlap=overlap, cron=None, interval_seconds=90), paused=False)
    (body,) = recorded.bodies
    assert body["concurrency_limit"] == limit, "not the crew deployment's limit of 2"
    options = body["concurrency_options"]
    assert (options and options["collision_strategy"]) == (strategy or None)
    assert body["schedules"][0]["schedule"] == {"interval": 90, "timezone": "Europe/Oslo"}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ('Value error, Invalid timezone: "Mars/X" (specify in IANA tzdata format)', "timezone"),
        ('Value error, Invalid cron string: "61 * * * *"', "cron"),
        ("Field required", None),
    ],
)
async def test_prefects_422_names_the_field_it_refused(
    recorded: Recorded, scheduler: PrefectCrewScheduler, message: str, field: str | None
) -> None:
    detail = [
        {"loc": ["body", "schedules", 0, "schedule", "IntervalSchedule", "interval"],
         "msg": "Field required"},
        {"loc": ["body", "schedules", 0, "schedule", "CronSchedule"], "msg": message},
    ]  # fmt: skip
    body = {"exception_message": "Invalid request received.", "exception_detail": detail}
    recorded.answer = httpx.Response(422, json=body)
    with pytest.raises(ScheduleRefused) as refused:
        await scheduler.create(spec(), paused=True)
    assert refused.value.field == field


async def test_pause_delete_and_next_runs(
    router: respx.MockRouter, scheduler: PrefectCrewScheduler
) -> None:
    resume = router.post(f"{PREFECT}/deployments/dep-1/resume_deployment").respond(200, text="null")
    await scheduler.set_paused("dep-1", False)
    assert resume.called

    router.delete(f"{PREFECT}/deployments/dep-1").respond(204)
    await scheduler.delete("dep-1")
    router.delete(f"{PREFECT}/deployments/dep-gone").respond(404, json={"detail": "not found"})
    await scheduler.delete("dep-gone")  # gone already: fine
    router.delete(f"{PREFECT}/deployments/dep-odd").respond(409, json={"detail": "conflict"})
    with pytest.raises(OrchestratorRejected):
        await scheduler.delete("dep-odd")

    runs = [{"id": "r1", "expected_start_time": "2030-01-01T00:05:00Z"},
            {"id": "r2", "expected_start_time": "2030-01-01T00:10:00+00:00"}]  # fmt: skip
    filtered = router.post(f"{PREFECT}/flow_runs/filter").respond(200, json=runs)
    assert await scheduler.next_runs("dep-1", 2) == [1893456300.0, 1893456600.0]
    query = json.loads(filtered.calls.last.request.content)
    assert query["flow_runs"]["deployment_id"] == {"any_": ["dep-1"]}
    assert query["flow_runs"]["state"]["type"] == {"any_": ["SCHEDULED"]}
    assert query["sort"] == "EXPECTED_START_TIME_ASC" and query["limit"] == 2


async def test_prefect_away_is_dependency_unavailable(
    router: respx.MockRouter, scheduler: PrefectCrewScheduler
) -> None:
    router.get(f"{PREFECT}/deployments/name/run-crew-job/gpu").mock(
        side_effect=httpx.ConnectError("refused")
    )
    with pytest.raises(DependencyUnavailable):
        await scheduler.create(spec(), paused=True)


async def test_active_runs_are_those_holding_a_concurrency_slot(
    router: respx.MockRouter, scheduler: PrefectCrewScheduler
) -> None:
    filtered = router.post(f"{PREFECT}/flow_runs/filter").mock(
        side_effect=[httpx.Response(200, json=[{"id": "r1"}]), httpx.Response(200, json=[])]
    )
    assert await scheduler.has_active_runs("dep-1") is True
    assert await scheduler.has_active_runs("dep-1") is False
    query = json.loads(filtered.calls.last.request.content)["flow_runs"]
    assert query["deployment_id"] == {"any_": ["dep-1"]}
    assert set(query["state"]["type"]["any_"]) == {"PENDING", "RUNNING", "CANCELLING", "PAUSED",
                                                    "SCHEDULED"}, "waiting ones too"  # fmt: skip


async def test_a_pause_is_prefects_pause_and_cancels_the_runs_left_that_never_started(
    router: respx.MockRouter, scheduler: PrefectCrewScheduler
) -> None:
    """Prefect's pause deletes the scheduled runs but keeps those waiting for the overlap
    slot (`AwaitingConcurrencySlot`): they would run after the pause, and outlive a
    DELETE of the deployment. A run waiting to retry has started: it goes on."""
    pause = router.post(f"{PREFECT}/deployments/dep-1/pause_deployment").respond(200, text="null")
    left = [{"id": "waiting-1", "run_count": 0, "state_name": "AwaitingConcurrencySlot"},
            {"id": "waiting-2", "run_count": 0, "state_name": "AwaitingConcurrencySlot"},
            {"id": "retrying", "run_count": 1, "state_name": "AwaitingRetry"}]  # fmt: skip
    filtered = router.post(f"{PREFECT}/flow_runs/filter").respond(200, json=left)
    cancelled = router.post(url__regex=rf"{PREFECT}/flow_runs/[^/]+/set_state").respond(
        201, json={"status": "ACCEPT"}
    )
    await scheduler.set_paused("dep-1", True)
    assert pause.called
    query = json.loads(filtered.calls.last.request.content)["flow_runs"]
    assert query == {"deployment_id": {"any_": ["dep-1"]},
                     "state": {"type": {"any_": ["SCHEDULED"]}}}  # fmt: skip
    assert [call.request.url.path.split("/")[-2] for call in cancelled.calls] == [
        "waiting-1", "waiting-2"]  # fmt: skip
    states = [json.loads(call.request.content)["state"]["type"] for call in cancelled.calls]
    assert states == ["CANCELLED", "CANCELLED"]


async def test_run_info_is_prefects_run_or_none(
    router: respx.MockRouter, scheduler: PrefectCrewScheduler
) -> None:
    run = {"id": "r1", "deployment_id": "dep-1", "parameters": {"tenant": "tenant_a"}}
    router.get(f"{PREFECT}/flow_runs/r1").respond(200, json=run)
    router.get(f"{PREFECT}/flow_runs/r-gone").respond(404, json={"detail": "not found"})
    router.get(f"{PREFECT}/flow_runs/not-a-uuid").respond(422, json={"detail": []})
    router.get(f"{PREFECT}/flow_runs/adhoc").respond(200, json={"id": "adhoc"})
    found = await scheduler.run_info("r1")
    assert found is not None
    assert (found.deployment_ref, found.parameters) == ("dep-1", {"tenant": "tenant_a"})
    assert await scheduler.run_info("r-gone") is None
    assert await scheduler.run_info("not-a-uuid") is None
    adhoc = await scheduler.run_info("adhoc")
    assert adhoc is not None and adhoc.deployment_ref is None and adhoc.parameters == {}


async def test_started_runs_are_the_schedule_deployments_runs_by_start(
    router: respx.MockRouter, scheduler: PrefectCrewScheduler
) -> None:
    failed = {
        "id": "r1", "deployment_id": "dep-1", "run_count": 2,
        "parameters": {"tenant": "tenant_a", "schedule_id": "sch_0001"},
        "start_time": "2030-01-01T09:00:00.123456Z",
        "state": {"type": "FAILED", "name": "Failed", "message": "EdgeUnreachable"},
    }  # fmt: skip
    skipped = {**failed, "id": "r2", "run_count": 0, "start_time": "2030-01-01T09:01:00Z",
               "state": {"type": "CANCELLED", "name": "Cancelled"}}  # fmt: skip
    unstarted = {**failed, "id": "r3", "start_time": None}
    filtered = router.post(f"{PREFECT}/flow_runs/filter").respond(
        200, json=[failed, skipped, unstarted]
    )
    found = await scheduler.started_runs(
        after="2030-01-01T08:00:00Z", before="2030-01-01T10:00:00Z", limit=50
    )
    assert json.loads(filtered.calls.last.request.content) == {
        "flow_runs": {"start_time": {"after_": "2030-01-01T08:00:00Z",
                                     "before_": "2030-01-01T10:00:00Z", "is_null_": False}},
        "deployments": {"tags": {"all_": [SCHEDULE_TAG]}},
        "sort": "START_TIME_ASC",
        "limit": 50,
    }  # fmt: skip
    assert [(r.state.run_id, r.run_count, r.started_at) for r in found] == [
        ("r1", 2, "2030-01-01T09:00:00.123456Z"), ("r2", 0, "2030-01-01T09:01:00Z"),
    ]  # fmt: skip
    assert found[0].info.deployment_ref == "dep-1"
    assert found[0].info.parameters["schedule_id"] == "sch_0001"
    assert (found[0].state.phase, found[0].state.message) == (RunPhase.FAILED, "EdgeUnreachable")
