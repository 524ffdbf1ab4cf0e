"""The reconciler's adoption of schedule runs whose registration was lost
(`edge.schedules.adoption`), against the recording fake of the scheduler port and the
real SQLite ledger and KV; tests/test_schedules_stack.py runs one through real Prefect."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from edge.jobs.ids import scheduled_job_id
from edge.ports import RunPhase, ScheduledRunInfo
from edge.schedules.adoption import (
    ADOPT_BUDGET,
    COST_WORST_RUN,
    WATERMARK_KEY,
)
from edge.schedules.service import ScheduleService
from edge.settings import Settings
from tests.conftest import AUTH_A
from tests.doubles.queues import RecordingQueue
from tests.doubles.scheduler import RecordingScheduler
from tests.test_schedules_api import EVERY_HOUR, create, register
from tests.test_schedules_api import api as api
from tests.test_schedules_api import edge_settings as edge_settings
from tests.test_schedules_api import queue as queue
from tests.test_schedules_api import scheduler as scheduler
from tests.test_schedules_api import schedules_app as schedules_app

SETTLE_SECONDS = Settings(api_keys={}).schedule_adopt_after_seconds
HOOK = {"url": "https://hooks.example.com/in", "events": ["job.running", "job.failed"]}
LOST = "Flow run encountered an exception: EdgeUnreachable: POST /v1/internal/schedules/..."


def service(app: FastAPI) -> ScheduleService:
    found: ScheduleService = app.state.schedules
    return found


def ago(seconds: float) -> float:
    return time.time() - seconds


async def jobs_of(api: httpx.AsyncClient, schedule: dict[str, Any]) -> list[dict[str, Any]]:
    return list((await api.get(schedule["urls"]["jobs"], headers=AUTH_A)).json()["jobs"])


async def test_a_run_that_never_registered_becomes_a_failed_job_with_its_webhook(
    api: httpx.AsyncClient,
    scheduler: RecordingScheduler,
    queue: RecordingQueue,
    schedules_app: FastAPI,
) -> None:
    """The edge was down when the run started: the flow failed (twice) before its crew
    ran, and Prefect has a failed run no job was made for."""
    schedule = await create(api, {**EVERY_HOUR, "webhook": HOOK, "metadata": {"k": 1}})
    run = scheduler.start_run(schedule["id"], "3f0c2f4e-lost")
    scheduler.run_moved(run, started_at=ago(600), message=LOST)

    assert await service(schedules_app).adopt_lost_runs() == 1
    job_id = scheduled_job_id("tenant_a", run)
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == "failed" and job["schedule_id"] == schedule["id"]
    assert job["error"] == {"kind": "Failed", "message": LOST}
    assert (job["inputs"], job["metadata"]) == (EVERY_HOUR["inputs"], {"k": 1})
    hooks = [m for m, _ in queue.sent if m.get("job_id") == job_id]
    assert [m["event"] for m in hooks] == ["job.failed"], "the webhook still goes"
    assert hooks[0]["url"] == HOOK["url"]

    assert await service(schedules_app).adopt_lost_runs() == 0, "looked at once"
    await schedules_app.state.ports.kv.delete(WATERMARK_KEY)  # as if it were looked at again
    assert await service(schedules_app).adopt_lost_runs() == 0, "one job per run"
    late = await register(api, schedule["id"], run)
    assert late.json() == {"job_id": job_id, "status": "failed"}, "a late registration finds it"
    assert [j["id"] for j in await jobs_of(api, schedule)] == [job_id]
    assert len([m for m, _ in queue.sent if m.get("job_id") == job_id]) == 1


async def test_runs_that_need_no_job_or_have_one_are_left_alone(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    schedule = await create(api, EVERY_HOUR)
    other = await create(api, {**EVERY_HOUR, "cron": "0 0 * * *"})
    skipped = scheduler.start_run(schedule["id"], "run-skipped")  # `overlap: skip`, a pause
    scheduler.run_moved(skipped, started_at=ago(900), phase=RunPhase.CANCELLED, run_count=0)
    told_off = scheduler.start_run(schedule["id"], "run-completed")  # 410 / 404 at its start
    scheduler.run_moved(told_off, started_at=ago(890), phase=RunPhase.SUCCEEDED, run_count=1)
    registered = scheduler.start_run(schedule["id"], "run-registered")
    assert (await register(api, schedule["id"], registered)).status_code == 200
    scheduler.run_moved(registered, started_at=ago(880), phase=RunPhase.RUNNING, run_count=1)
    # A run of `other`'s deployment naming `schedule`, and one naming no schedule.
    scheduler.runs["forged"] = ScheduledRunInfo(f"dep-{other['id']}", {
        "tenant": "tenant_a", "schedule_id": schedule["id"]})  # fmt: skip
    scheduler.run_moved("forged", started_at=ago(870))
    scheduler.runs["odd"] = ScheduledRunInfo(f"dep-{other['id']}", {"tenant": "a:b" * 40})
    scheduler.run_moved("odd", started_at=ago(860))
    young = scheduler.start_run(schedule["id"], "run-young")  # still registering, maybe
    scheduler.run_moved(young, started_at=ago(SETTLE_SECONDS - 30), phase=RunPhase.RUNNING,
                        run_count=1)  # fmt: skip

    assert await service(schedules_app).adopt_lost_runs() == 0
    assert [j["id"] for j in await jobs_of(api, other)] == []
    assert [j["id"] for j in await jobs_of(api, schedule)] == [
        scheduled_job_id("tenant_a", registered)
    ]
    # Once settled, a run under way without a job is one (its worker may be gone).
    service(schedules_app)._clock = lambda: time.time() + 60
    assert await service(schedules_app).adopt_lost_runs() == 1
    adopted = (await api.get(f"/v1/jobs/{scheduled_job_id('tenant_a', young)}",
                             headers=AUTH_A)).json()  # fmt: skip
    assert adopted["status"] == "running"
    again = await register(api, schedule["id"], young)
    assert again.json()["job_id"] == adopted["id"], "its registration, late, finds that job"


async def test_runs_of_deleted_schedules_make_no_job(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """As at registration (410): the deployment gone, or kept for a run under way."""
    removed, kept = (
        await create(api, EVERY_HOUR),
        await create(api, {**EVERY_HOUR, "cron": "0 0 * * *"}),
    )
    for schedule, run_id in ((removed, "run-removed"), (kept, "run-kept")):
        scheduler.run_moved(scheduler.start_run(schedule["id"], run_id), started_at=ago(600))
    scheduler.schedules[f"dep-{kept['id']}"].active_runs = 1
    for schedule in (removed, kept):
        assert (await api.delete(schedule["urls"]["self"], headers=AUTH_A)).status_code == 204
    assert f"dep-{kept['id']}" in scheduler.schedules, "paused, for the sweep"
    assert await service(schedules_app).adopt_lost_runs() == 0
    assert (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"] == []


async def test_a_pass_keeps_to_its_budget_and_the_next_goes_on_from_the_watermark(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    schedule = await create(api, EVERY_HOUR)
    lost = [scheduler.start_run(schedule["id"], f"run-{n}") for n in range(7)]
    for n, run in enumerate(lost):
        scheduler.run_moved(run, started_at=ago(3000 - 10 * n))
    adopt = service(schedules_app).adopt_lost_runs
    passes = []
    while sum(passes) < len(lost):
        calls = len(scheduler.listed)
        passes.append(await adopt(page=2))
        pages = len(scheduler.listed) - calls
        # The watermark's read and write, each page, each adoption at its worst.
        assert 2 + 3 * pages + COST_WORST_RUN * passes[-1] <= ADOPT_BUDGET
        assert len(passes) < 10, passes
    assert passes[0] == 2 and all(passes), "a page of two, then room for one more page"
    assert await adopt() == 0
    jobs = {j["id"] for j in await jobs_of(api, schedule)}
    assert jobs == {scheduled_job_id("tenant_a", run) for run in lost}
    tiny = 2 + 3 + COST_WORST_RUN - 1
    before = len(scheduler.listed)
    assert await adopt(budget=tiny) == 0 and len(scheduler.listed) == before, "no room: no call"


async def test_prefect_away_leaves_the_watermark_for_the_next_pass(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    schedule = await create(api, EVERY_HOUR)
    scheduler.run_moved(scheduler.start_run(schedule["id"], "run-1"), started_at=ago(600))
    kv = schedules_app.state.ports.kv
    await service(schedules_app).adopt_lost_runs()  # sets the watermark
    mark = await kv.get(WATERMARK_KEY)
    run = scheduler.start_run(schedule["id"], "run-2")
    scheduler.run_moved(run, started_at=time.time())
    service(schedules_app)._clock = lambda: time.time() + SETTLE_SECONDS + 10
    scheduler.down.add("started_runs")
    assert await service(schedules_app).adopt_lost_runs() == 0
    assert await kv.get(WATERMARK_KEY) == mark
    assert await service(schedules_app).adopt_lost_runs() == 1


@pytest.mark.parametrize("edge_settings", [{"max_schedules_per_tenant": 1}])
async def test_an_adopted_run_is_a_job_even_when_the_tenant_is_at_its_cap(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """The cap is on schedules, not on their runs' jobs."""
    schedule = await create(api, EVERY_HOUR)
    scheduler.run_moved(scheduler.start_run(schedule["id"], "run-1"), started_at=ago(600))
    assert await service(schedules_app).adopt_lost_runs() == 1
