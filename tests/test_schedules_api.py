"""The schedules API against a recording fake of its port (the Prefect adapter has its own
tests, tests/test_prefect_schedules.py; the real stack runs in tests/test_schedules_stack.py)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from edge.adapters.prefect import PrefectOrchestrator
from edge.app import create_app
from edge.local.numpy_index import NumpyVectorIndex
from edge.local.sqlite_kv import SqliteKV
from edge.ports import OrchestratorRejected, Ports, ScheduledRunInfo
from shared.signing import signed_headers
from tests.conftest import AUTH_A, AUTH_B
from tests.doubles.catalog import publish_shipped_crews
from tests.doubles.models import RecordingEmbedder, RecordingGenerator
from tests.doubles.queues import RecordingQueue
from tests.doubles.scheduler import RecordingScheduler
from tests.support import sqlite_ports
from tests.test_jobs_api import EXECUTOR_SECRET, PREFECT, jobs_settings

EVERY_HOUR = {"crew": "research", "inputs": {"topic": "edge AI"}, "cron": "0 * * * *"}


@pytest.fixture
def scheduler() -> RecordingScheduler:
    return RecordingScheduler()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def edge_settings() -> dict[str, Any]:
    """Settings of the edge beyond `jobs_settings`' (a test parametrizes this to change them)."""
    return {}


@pytest.fixture
async def schedules_app(
    tmp_path: Path,
    scheduler: RecordingScheduler,
    queue: RecordingQueue,
    edge_settings: dict[str, Any],
) -> FastAPI:
    ports = sqlite_ports(
        tmp_path,
        # Never called by these tests: a scheduled run is in Prefect already.
        orchestrator=PrefectOrchestrator(PREFECT, backoff=0.001),
        scheduler=scheduler,
        deliveries=queue,
    )
    await publish_shipped_crews(ports.kv)
    return create_app(
        jobs_settings(**{"schedule_min_interval_seconds": 30, **edge_settings}), ports
    )


@pytest.fixture
async def api(
    schedules_app: FastAPI, make_client: Callable[[FastAPI], httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(schedules_app) as client:
        yield client


async def create(api: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await api.post("/v1/schedules", json=body, headers={**AUTH_A, **headers})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/schedules/{response.json()['id']}"
    return dict(response.json())


async def register(
    api: httpx.AsyncClient, schedule_id: str, run_id: str, tenant: str = "tenant_a"
) -> httpx.Response:
    body = json.dumps({"tenant": tenant, "flow_run_id": run_id}).encode()
    message_id = f"schedule-run:{schedule_id}:{run_id}"
    headers = signed_headers(EXECUTOR_SECRET, message_id, int(time.time()), body)
    headers["Content-Type"] = "application/json"
    url = f"/v1/internal/schedules/{schedule_id}/runs"
    return await api.post(url, content=body, headers=headers)


async def test_a_schedule_is_made_paused_in_prefect_then_started_and_recorded(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    body = {**EVERY_HOUR, "timezone": "Europe/Oslo", "overlap": "queue",
            "metadata": {"team": "ops"}}  # fmt: skip
    schedule = await create(api, body)
    assert schedule["id"].startswith("sch_") and schedule["paused"] is False
    assert (schedule["cron"], schedule["interval_seconds"]) == ("0 * * * *", None)
    assert (schedule["timezone"], schedule["overlap"]) == ("Europe/Oslo", "queue")
    assert schedule["urls"]["jobs"] == f"/v1/jobs?schedule_id={schedule['id']}"
    assert "tenant" not in schedule and "deployment_ref" not in schedule
    (name, spec), (second, (ref, paused)) = scheduler.calls
    assert (name, second, paused) == ("create", "set_paused", False)
    assert spec.deployment == "run-crew-job/gpu" and spec.overlap == "queue"
    assert spec.parameters == {
        "job_id": "", "tenant": "tenant_a", "crew": "research", "inputs": {"topic": "edge AI"},
        "schedule_id": schedule["id"],
    }  # fmt: skip
    assert scheduler.schedules[ref].paused is False

    scheduler.schedules[ref].due = [1_900_000_000.0, 1_900_003_600.0]
    found = (await api.get(schedule["urls"]["self"], headers=AUTH_A)).json()
    assert found["next_runs"] == ["2030-03-17T17:46:40.000Z", "2030-03-17T18:46:40.000Z"]
    assert found["metadata"] == {"team": "ops"}
    listed = (await api.get("/v1/schedules", headers=AUTH_A)).json()
    assert listed["schedules"] == [{"id": schedule["id"], "crew": "research", "paused": False,
                                    "created_at": schedule["created_at"]}]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"cron": "61 * * * *"}, "cron", "minute"),
        ({"cron": "* * * *"}, "cron", "5"),
        ({"cron": "@reboot"}, "cron", "macro"),
        ({"cron": "0 9 31 2 *"}, "cron", "never"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "IANA"),
        ({"timezone": "utc"}, "timezone", "IANA"),
        ({"interval_seconds": 60}, "interval_seconds", "not both"),
        ({"cron": None}, "interval_seconds", "give cron or interval_seconds"),
        ({"cron": None, "interval_seconds": 29}, "interval_seconds", "at least 30"),
        ({"cron": None, "interval_seconds": 0}, "interval_seconds", "greater than"),
        ({"cron": None, "interval_seconds": "60"}, "interval_seconds", "integer"),
        ({"overlap": "sometimes"}, "overlap", "skip"),
        ({"crew": "nope"}, "crew", "GET /v1/crews"),
        ({"inputs": {}}, "topic", "required"),
        ({"webhook": {"url": "http://10.0.0.1/hook"}}, "url", ""),
    ],
)
async def test_bad_schedules_are_422_naming_the_field_and_make_nothing(
    api: httpx.AsyncClient,
    scheduler: RecordingScheduler,
    change: dict[str, Any],
    field: str,
    says: str,
) -> None:
    body = {k: v for k, v in {**EVERY_HOUR, **change}.items() if v is not None}
    response = await api.post("/v1/schedules", json=body, headers=AUTH_A)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert any(e["loc"][0] == "body" and field in map(str, e["loc"]) for e in errors), errors
    assert any(says in e["msg"] for e in errors), errors
    assert scheduler.calls == []
    assert (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"] == []


async def test_an_interval_schedule_with_a_time_zone(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    body = {"crew": "summarize", "inputs": {"text": "t"}, "interval_seconds": 3600,
            "timezone": "America/New_York"}  # fmt: skip
    schedule = await create(api, body)
    assert (schedule["cron"], schedule["interval_seconds"]) == (None, 3600)
    assert schedule["overlap"] == "skip", "the default: no pile-up of runs"
    ((_, spec), _) = scheduler.calls
    assert (spec.deployment, spec.timezone, spec.cron) == ("run-crew-job/cpu", "America/New_York",
                                                           None)  # fmt: skip


async def test_another_tenants_schedule_is_a_404_everywhere(api: httpx.AsyncClient) -> None:
    schedule = await create(api, EVERY_HOUR)
    url = schedule["urls"]["self"]
    assert (await api.get(url, headers=AUTH_B)).status_code == 404
    assert (await api.post(f"{url}/pause", headers=AUTH_B)).status_code == 404
    assert (await api.post(f"{url}/resume", headers=AUTH_B)).status_code == 404
    assert (await api.delete(url, headers=AUTH_B)).status_code == 404
    assert (await api.get("/v1/schedules", headers=AUTH_B)).json()["schedules"] == []
    assert (await api.get(url, headers=AUTH_A)).json()["paused"] is False, "untouched"
    assert (await register(api, schedule["id"], "run-1", tenant="tenant_b")).status_code == 404
    not_an_id = await api.get("/v1/schedules/job_0123", headers=AUTH_A)
    assert not_an_id.status_code == 404


async def test_pause_resume_and_delete_go_to_prefect(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    schedule = await create(api, EVERY_HOUR)
    url = schedule["urls"]["self"]
    ref = f"dep-{schedule['id']}"
    paused = await api.post(f"{url}/pause", headers=AUTH_A)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert scheduler.schedules[ref].paused is True
    assert (await api.get(url, headers=AUTH_A)).json()["paused"] is True
    listed = (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"]
    assert listed[0]["paused"] is True
    resumed = await api.post(f"{url}/resume", headers=AUTH_A)
    assert resumed.json()["paused"] is False and scheduler.schedules[ref].paused is False

    assert (await api.delete(url, headers=AUTH_A)).status_code == 204
    assert ref not in scheduler.schedules, "the deployment is removed"
    assert (await api.get(url, headers=AUTH_A)).status_code == 404
    assert (await api.delete(url, headers=AUTH_A)).status_code == 404
    assert (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"] == []
    gone = await register(api, schedule["id"], "run-late")
    assert gone.status_code == 410, "a run that started before the delete makes no job"


async def test_a_deployment_with_a_run_under_way_is_removed_once_the_run_ends(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """Prefect 3.9 cannot end a run whose deployment was deleted while the run held its
    concurrency slot: the deployment is paused now and removed by a later sweep."""
    schedule = await create(api, EVERY_HOUR)
    ref = f"dep-{schedule['id']}"
    scheduler.schedules[ref].active_runs = 1
    assert (await api.delete(schedule["urls"]["self"], headers=AUTH_A)).status_code == 204
    assert (await api.get(schedule["urls"]["self"], headers=AUTH_A)).status_code == 404
    assert scheduler.schedules[ref].paused is True, "no new runs"
    sweep = schedules_app.state.schedules.sweep
    assert await sweep() == 0 and ref in scheduler.schedules, "its run is still under way"
    scheduler.schedules[ref].active_runs = 0
    scheduler.down.add("delete")
    assert await sweep() == 0, "Prefect away: kept for the next sweep"
    assert await sweep() == 1 and ref not in scheduler.schedules
    assert await sweep() == 0


async def test_the_same_idempotency_key_is_the_same_schedule(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    first = await create(api, EVERY_HOUR, **{"Idempotency-Key": "hourly"})
    again = await create(api, dict(reversed(EVERY_HOUR.items())), **{"Idempotency-Key": "hourly"})
    assert again == first
    assert [name for name, _ in scheduler.calls] == ["create", "set_paused"]
    other = {**EVERY_HOUR, "cron": "0 0 * * *"}
    keyed = {**AUTH_A, "Idempotency-Key": "hourly"}
    reused = await api.post("/v1/schedules", json=other, headers=keyed)
    assert reused.status_code == 422
    assert reused.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    mine = await create(api, EVERY_HOUR, **{"Idempotency-Key": "hourly-b"})
    assert mine["id"] != first["id"]
    theirs = await api.post("/v1/schedules", json=EVERY_HOUR,
                            headers={**AUTH_B, "Idempotency-Key": "hourly"})  # fmt: skip
    assert theirs.status_code == 201 and theirs.json()["id"] != first["id"], "keys are per tenant"


@pytest.mark.parametrize("fails", ["create", "set_paused"])
async def test_prefect_down_at_create_is_a_503_leaving_nothing_and_a_retry_finishes_it(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, fails: str
) -> None:
    scheduler.down.add(fails)
    key = {"Idempotency-Key": "nightly"}
    down = await api.post("/v1/schedules", json=EVERY_HOUR, headers={**AUTH_A, **key})
    assert down.status_code == 503 and down.headers["retry-after"]
    assert down.headers["content-type"] == "application/problem+json"
    assert scheduler.schedules == {}, "what Prefect made is removed again"
    assert (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"] == []
    retried = await create(api, EVERY_HOUR, **key)
    (made,) = scheduler.schedules.values()
    assert made.spec.schedule_id == retried["id"] and made.paused is False


async def test_no_orchestrator_configured_is_a_503(
    tmp_path: Path, make_client: Callable[[FastAPI], httpx.AsyncClient]
) -> None:
    ports = Ports(
        kv=SqliteKV(tmp_path / "kv.sqlite3"),
        vectors=NumpyVectorIndex(tmp_path / "v.sqlite3", dimensions=384),
        embedder=RecordingEmbedder(),
        generator=RecordingGenerator(),
    )
    await publish_shipped_crews(ports.kv)
    async with make_client(create_app(jobs_settings(), ports)) as client:
        response = await client.post("/v1/schedules", json=EVERY_HOUR, headers=AUTH_A)
    assert response.status_code == 503 and "scheduler" in response.json()["detail"]


async def test_a_run_registers_once_as_a_job_with_the_schedules_webhook(
    api: httpx.AsyncClient, queue: RecordingQueue, scheduler: RecordingScheduler
) -> None:
    hook = {"url": "https://hooks.example.com/in", "events": ["job.running", "job.succeeded"]}
    schedule = await create(api, {**EVERY_HOUR, "webhook": hook, "metadata": {"k": 1}})
    scheduler.start_run(schedule["id"], "3f0c2f4e-run-1")
    scheduler.start_run(schedule["id"], "3f0c2f4e-run-2")
    first = await register(api, schedule["id"], "3f0c2f4e-run-1")
    assert first.status_code == 200, first.text
    job_id = first.json()["job_id"]
    assert first.json()["status"] == "queued"
    again = await register(api, schedule["id"], "3f0c2f4e-run-1")
    assert again.json() == first.json(), "one job per run, however often it registers"
    other = await register(api, schedule["id"], "3f0c2f4e-run-2")
    assert other.json()["job_id"] != job_id

    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["crew"]) == ("queued", "research")
    assert job["inputs"] == EVERY_HOUR["inputs"]
    assert job["schedule_id"] == schedule["id"] and job["metadata"] == {"k": 1}
    assert job["urls"]["schedule"] == schedule["urls"]["self"]
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_B)).status_code == 404
    listed = (await api.get(schedule["urls"]["jobs"], headers=AUTH_A)).json()["jobs"]
    assert {j["id"] for j in listed} == {job_id, other.json()["job_id"]}
    assert all(j["schedule_id"] == schedule["id"] for j in listed)
    submitted = await api.post("/v1/jobs", json={"crew": "research", "inputs": {"topic": "x"}},
                               headers=AUTH_A)  # fmt: skip
    assert submitted.status_code in (202, 503)  # Prefect is not there; the job is recorded
    all_jobs = (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"]
    assert len(all_jobs) == 3
    assert len((await api.get(schedule["urls"]["jobs"], headers=AUTH_A)).json()["jobs"]) == 2

    # From here on it is a job like any other: the executor's events move it, and the
    # schedule's webhook hears of it.
    body = json.dumps({"tenant": "tenant_a", "type": "succeeded", "result": {"ok": 1}}).encode()
    headers = signed_headers(EXECUTOR_SECRET, f"{job_id}:succeeded", int(time.time()), body)
    headers["Content-Type"] = "application/json"
    done = await api.post(f"/v1/internal/jobs/{job_id}/events", content=body, headers=headers)
    assert done.json() == {"status": "succeeded"}
    hooks = [m for m, _ in queue.sent if m.get("job_id") == job_id]
    assert [m["event"] for m in hooks] == ["job.succeeded"]
    assert hooks[0]["url"] == hook["url"]
    assert hooks[0]["payload"]["data"]["schedule_id"] == schedule["id"]
    as_json = {**AUTH_A, "Accept": "application/json"}
    page = await api.get(f"/v1/jobs/{job_id}/events", headers=as_json)
    events = page.json()["events"]
    assert [e["type"] for e in events] == ["job.queued", "job.succeeded"]


async def test_a_run_of_a_schedule_naming_no_webhook_gets_the_tenants_default(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    default = {"url": "https://hooks.example.com/default", "events": ["job.failed"]}
    assert (await api.put("/v1/webhooks", json=default, headers=AUTH_A)).status_code == 200
    own = {"url": "https://hooks.example.com/own", "events": ["job.succeeded"]}
    plain, named = await create(api, EVERY_HOUR), await create(api, {**EVERY_HOUR, "webhook": own})
    for schedule, run in ((plain, "run-plain"), (named, "run-named")):
        scheduler.start_run(schedule["id"], run)
    plain_job = (await register(api, plain["id"], "run-plain")).json()["job_id"]
    named_job = (await register(api, named["id"], "run-named")).json()["job_id"]
    recorded = {
        job_id: await schedules_app.state.jobs.current("tenant_a", job_id)
        for job_id in (plain_job, named_job)
    }
    assert recorded[plain_job]["webhook"] == {**default, "default": True}
    assert recorded[named_job]["webhook"]["url"] == own["url"]


async def test_a_run_of_a_schedule_not_visible_yet_is_a_404_and_unsigned_calls_401(
    api: httpx.AsyncClient,
) -> None:
    schedule = await create(api, EVERY_HOUR)
    body = json.dumps({"tenant": "tenant_a", "flow_run_id": "run-1"}).encode()
    signed_for_another = signed_headers(
        EXECUTOR_SECRET, f"schedule-run:sch_{'1' * 26}:run-1", int(time.time()), body
    )
    replayed = await api.post(
        f"/v1/internal/schedules/{schedule['id']}/runs", content=body,
        headers={**signed_for_another, "Content-Type": "application/json"},
    )  # fmt: skip
    assert replayed.status_code == 401, "a call signed for another schedule's run"
    unknown = await register(api, "sch_" + "0" * 26, "run-1")
    assert unknown.status_code == 404
    unsigned = await api.post(
        f"/v1/internal/schedules/sch_{'0' * 26}/runs",
        json={"tenant": "tenant_a", "flow_run_id": "run-1"},
    )
    assert unsigned.status_code == 401


async def test_a_deployment_removed_in_prefect_by_hand_is_a_503_and_can_still_be_deleted(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    schedule = await create(api, EVERY_HOUR)
    del scheduler.schedules[f"dep-{schedule['id']}"]
    url = schedule["urls"]["self"]
    paused = await api.post(f"{url}/pause", headers=AUTH_A)
    assert paused.status_code == 503 and "HTTP 404" in paused.json()["detail"]
    assert (await api.get(url, headers=AUTH_A)).json()["next_runs"] == []
    assert (await api.delete(url, headers=AUTH_A)).status_code == 204
    assert (await api.get(url, headers=AUTH_A)).status_code == 404


async def test_a_crew_deployment_prefect_does_not_have_is_a_503_leaving_nothing(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    async def refuse(spec: object, *, paused: bool) -> str:
        raise OrchestratorRejected("GET deployments/name/run-crew-job/gpu: HTTP 404",
                                   status_code=404)  # fmt: skip

    scheduler.create = refuse  # type: ignore[method-assign]
    response = await api.post("/v1/schedules", json=EVERY_HOUR, headers=AUTH_A)
    assert response.status_code == 503 and response.headers["retry-after"] == "60"
    assert (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"] == []


async def test_the_key_of_a_deleted_schedule_is_a_409_and_its_deployment_still_goes(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    key = {"Idempotency-Key": "nightly"}
    schedule = await create(api, EVERY_HOUR, **key)
    ref = f"dep-{schedule['id']}"
    scheduler.schedules[ref].active_runs = 1
    assert (await api.delete(schedule["urls"]["self"], headers=AUTH_A)).status_code == 204
    again = await api.post("/v1/schedules", json=EVERY_HOUR, headers={**AUTH_A, **key})
    assert again.status_code == 409, again.text
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert schedule["id"] in again.json()["detail"]
    assert scheduler.schedules[ref].paused is True, "the deleted one is not started again"
    scheduler.schedules[ref].active_runs = 0
    assert await schedules_app.state.schedules.sweep() == 1
    assert ref not in scheduler.schedules


async def test_a_schedule_made_again_under_its_id_keeps_the_deployment_the_sweep_had(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """The same key once the tombstone expired: the same id, so Prefect's upsert hands
    back the deployment a delete left for the sweep; the sweep must leave it alone."""
    key = {"Idempotency-Key": "nightly"}
    schedule = await create(api, EVERY_HOUR, **key)
    ref = f"dep-{schedule['id']}"
    scheduler.schedules[ref].active_runs = 1
    assert (await api.delete(schedule["urls"]["self"], headers=AUTH_A)).status_code == 204
    kv = schedules_app.state.ports.kv
    await kv.delete(f"schedule:tenant_a:{schedule['id']}")  # the day is over
    remade = await create(api, EVERY_HOUR, **key)
    assert remade["id"] == schedule["id"] and scheduler.schedules[ref].paused is False
    scheduler.schedules[ref].active_runs = 0
    assert await schedules_app.state.schedules.sweep() == 0
    assert ref in scheduler.schedules and scheduler.schedules[ref].paused is False
    assert (await api.get(remade["urls"]["self"], headers=AUTH_A)).status_code == 200


async def test_the_sweep_leaves_a_deployment_a_live_schedule_owns(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """A marker the create could not clear (or one written by an older edge) is dropped,
    not acted on, when the schedule it names is live and points at that deployment."""
    schedule = await create(api, EVERY_HOUR)
    ref = f"dep-{schedule['id']}"
    kv = schedules_app.state.ports.kv
    await kv.put(f"schedule-deleting:{ref}", json.dumps({"tenant": "tenant_a",
                                                          "id": schedule["id"]}))  # fmt: skip
    assert await schedules_app.state.schedules.sweep() == 0
    assert ref in scheduler.schedules
    assert await kv.get(f"schedule-deleting:{ref}") is None


async def test_a_run_prefect_does_not_have_as_the_schedules_is_a_409_making_no_job(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    """The signature proves the executor sent the call, not that the run is the
    schedule's: else any run could become (and be cancelled as) this tenant's job."""
    mine = await create(api, EVERY_HOUR)
    other = await create(api, {**EVERY_HOUR, "cron": "0 0 * * *"})
    scheduler.start_run(other["id"], "run-of-other")
    scheduler.runs["a-job-run"] = ScheduledRunInfo("dep-of-a-crew", {"tenant": "tenant_a"})
    forged = ScheduledRunInfo(f"dep-{mine['id']}", {"tenant": "tenant_b",
                                                     "schedule_id": mine["id"]})  # fmt: skip
    scheduler.runs["other-tenant"] = forged
    for run_id in ("no-such-run", "run-of-other", "a-job-run", "other-tenant"):
        refused = await register(api, mine["id"], run_id)
        assert refused.status_code == 409, (run_id, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    listed = (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"]
    assert listed == [], "nothing made"
    assert (await register(api, other["id"], "run-of-other")).status_code == 200


async def test_a_run_of_a_schedule_being_deleted_makes_no_job(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """The deletion marker is there before the tombstone (and may outlive it)."""
    schedule = await create(api, EVERY_HOUR)
    run = scheduler.start_run(schedule["id"], "run-1")
    kv = schedules_app.state.ports.kv
    owner = json.dumps({"tenant": "tenant_a", "id": schedule["id"]})
    await kv.put(f"schedule-deleting:dep-{schedule['id']}", owner)
    assert (await register(api, schedule["id"], run)).status_code == 410


async def test_a_resume_racing_a_delete_does_not_bring_the_schedule_back(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """The delete lands while the resume waits on Prefect: the resume must neither
    overwrite the tombstone nor leave the deployment running."""
    schedule = await create(api, EVERY_HOUR)
    url = schedule["urls"]["self"]
    ref = f"dep-{schedule['id']}"
    scheduler.schedules[ref].active_runs = 1  # the deployment stays, paused, for the sweep
    assert (await api.post(f"{url}/pause", headers=AUTH_A)).status_code == 200
    real = scheduler.set_paused
    raced = False

    async def set_paused(asked: str, paused: bool) -> None:
        nonlocal raced
        if not paused and not raced:
            raced = True
            await schedules_app.state.schedules.delete("tenant_a", schedule["id"])
        await real(asked, paused)

    scheduler.set_paused = set_paused  # type: ignore[method-assign]
    resumed = await api.post(f"{url}/resume", headers=AUTH_A)
    assert resumed.status_code == 404, resumed.text
    assert (await api.get(url, headers=AUTH_A)).status_code == 404, "still deleted"
    assert scheduler.schedules[ref].paused is True, "the resume undid itself"
    assert (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"] == []


async def test_a_resume_while_the_schedule_is_being_deleted_asks_prefect_nothing(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    schedule = await create(api, EVERY_HOUR)
    ref = f"dep-{schedule['id']}"
    owner = json.dumps({"tenant": "tenant_a", "id": schedule["id"], "since": time.time()})
    await schedules_app.state.ports.kv.put(f"schedule-deleting:{ref}", owner)
    scheduler.calls.clear()
    resumed = await api.post(f"{schedule['urls']['self']}/resume", headers=AUTH_A)
    assert resumed.status_code == 404 and scheduler.calls == []
    assert await schedules_app.state.schedules.sweep() == 0, "a delete under way: left alone"
    assert ref in scheduler.schedules


async def test_a_delete_prefect_fails_part_way_is_a_503_and_can_be_retried(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    schedule = await create(api, EVERY_HOUR)
    url = schedule["urls"]["self"]
    scheduler.down.add("has_active_runs")
    assert (await api.delete(url, headers=AUTH_A)).status_code == 503
    assert (await api.get(url, headers=AUTH_A)).status_code == 200, "not deleted"
    run = scheduler.start_run(schedule["id"], "run-1")
    assert (await register(api, schedule["id"], run)).status_code == 200, "still takes runs"
    assert (await api.delete(url, headers=AUTH_A)).status_code == 204
    assert f"dep-{schedule['id']}" not in scheduler.schedules


async def test_the_sweep_moves_on_past_deployments_whose_runs_go_on(
    api: httpx.AsyncClient, scheduler: RecordingScheduler, schedules_app: FastAPI
) -> None:
    """Markers whose runs go on must not keep the sweep from the ones after them."""
    made = [await create(api, {**EVERY_HOUR, "metadata": {"n": n}}) for n in range(5)]
    for schedule in made:
        scheduler.schedules[f"dep-{schedule['id']}"].active_runs = 1
        assert (await api.delete(schedule["urls"]["self"], headers=AUTH_A)).status_code == 204
    markers = sorted(f"dep-{s['id']}" for s in made)  # the order KV lists them in
    for ref in markers[-2:]:
        scheduler.schedules[ref].active_runs = 0
    sweep = schedules_app.state.schedules.sweep
    removed = [await sweep(limit=2) for _ in range(3)]
    assert sum(removed) == 2 and all(ref not in scheduler.schedules for ref in markers[-2:])
    assert all(ref in scheduler.schedules for ref in markers[:3])
    scheduler.schedules[markers[0]].active_runs = 0
    assert sum([await sweep(limit=2) for _ in range(3)]) == 1, "round again from the start"


async def test_creates_under_one_key_that_both_missed_the_replay_list_once_and_delete_clean(
    api: httpx.AsyncClient, schedules_app: FastAPI
) -> None:
    """Two creates of one key at once (or KV not showing the first one yet): each writes
    its own index entry under its own time; the listing and the delete must cope."""
    service = schedules_app.state.schedules
    moments = iter(range(1_800_000_000, 1_800_000_100))
    service._clock = lambda: float(next(moments))
    replay = service.replay

    async def missed(*args: Any) -> None:
        return None

    service.replay = missed
    key = {"Idempotency-Key": "nightly"}
    first = await create(api, EVERY_HOUR, **key)
    second = await create(api, EVERY_HOUR, **key)
    service.replay = replay
    assert first["id"] == second["id"]
    listed = (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"]
    assert [s["id"] for s in listed] == [first["id"]]
    assert (await api.delete(first["urls"]["self"], headers=AUTH_A)).status_code == 204
    assert (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"] == []
    index = await schedules_app.state.ports.kv.list(prefix="schedules:tenant_a:")
    assert index.keys == [], "no orphaned entry"


async def test_a_cron_is_kept_as_checked_without_the_spaces_around_it(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    schedule = await create(api, {**EVERY_HOUR, "cron": "  0 * * * *\t"})
    ((_, spec), _) = scheduler.calls
    assert schedule["cron"] == spec.cron == "0 * * * *"


async def test_a_schedules_deadline_is_each_run_jobs_from_its_start(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    schedule = await create(api, {**EVERY_HOUR, "deadline_seconds": 900})
    assert schedule["deadline_seconds"] == 900
    run = scheduler.start_run(schedule["id"], "run-1")
    before = time.time()
    job_id = (await register(api, schedule["id"], run)).json()["job_id"]
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    deadline = datetime.fromisoformat(job["deadline_at"]).timestamp()
    assert before + 900 - 1 <= deadline <= time.time() + 900 + 1
    plain = await create(api, {**EVERY_HOUR, "cron": "0 0 * * *"})
    assert plain["deadline_seconds"] is None
    run = scheduler.start_run(plain["id"], "run-2")
    job_id = (await register(api, plain["id"], run)).json()["job_id"]
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["deadline_at"] is None
    too_long = await api.post("/v1/schedules", json={**EVERY_HOUR, "deadline_seconds": 10**9},
                              headers=AUTH_A)  # fmt: skip
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["loc"] == ["body", "deadline_seconds"]


@pytest.mark.parametrize("edge_settings", [{"max_schedules_per_tenant": 2}])
async def test_a_tenant_at_its_schedule_cap_is_a_409_making_nothing(
    api: httpx.AsyncClient, scheduler: RecordingScheduler
) -> None:
    first = await create(api, EVERY_HOUR, **{"Idempotency-Key": "first"})
    second = await create(api, {**EVERY_HOUR, "cron": "0 0 * * *"})
    assert (await api.post(f"{second['urls']['self']}/pause", headers=AUTH_A)).status_code == 200
    made = len(scheduler.schedules)
    scheduler.calls.clear()
    over = await api.post("/v1/schedules", json={**EVERY_HOUR, "cron": "5 * * * *"},
                          headers=AUTH_A)  # fmt: skip
    assert over.status_code == 409, over.text
    assert over.headers["content-type"] == "application/problem+json"
    problem = over.json()
    assert problem["type"] == "urn:edgecrew:problem:conflict" and problem["limit"] == 2
    assert "2 schedules" in problem["detail"]
    assert "EDGECREW_MAX_SCHEDULES_PER_TENANT" in problem["detail"]
    assert scheduler.calls == [] and len(scheduler.schedules) == made, "no deployment made"
    listed = (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"]
    assert {s["id"] for s in listed} == {first["id"], second["id"]}, "a paused one counts"

    replayed = await create(api, EVERY_HOUR, **{"Idempotency-Key": "first"})
    assert replayed["id"] == first["id"], "a retry of a schedule made is no new one"
    theirs = await api.post("/v1/schedules", json=EVERY_HOUR, headers=AUTH_B)
    assert theirs.status_code == 201, "the cap is per tenant"

    # A deleted schedule no longer counts, even one whose deployment waits for its run.
    scheduler.schedules[f"dep-{first['id']}"].active_runs = 1
    assert (await api.delete(first["urls"]["self"], headers=AUTH_A)).status_code == 204
    assert f"dep-{first['id']}" in scheduler.schedules, "deferred: its run is under way"
    third = await create(api, {**EVERY_HOUR, "cron": "5 * * * *"})
    still_over = await api.post("/v1/schedules", json={**EVERY_HOUR, "cron": "6 * * * *"},
                                headers=AUTH_A)  # fmt: skip
    assert still_over.status_code == 409
    assert (await api.delete(second["urls"]["self"], headers=AUTH_A)).status_code == 204
    assert (await api.delete(third["urls"]["self"], headers=AUTH_A)).status_code == 204
    assert (await api.post("/v1/schedules", json=EVERY_HOUR, headers=AUTH_A)).status_code == 201


@pytest.mark.parametrize("edge_settings", [{"max_schedules_per_tenant": 0}])
async def test_a_cap_of_zero_is_no_cap(api: httpx.AsyncClient) -> None:
    for minute in range(3):
        await create(api, {**EVERY_HOUR, "cron": f"{minute} * * * *"})
    listed = (await api.get("/v1/schedules", headers=AUTH_A)).json()["schedules"]
    assert len(listed) == 3


async def test_the_count_against_the_cap_is_one_per_schedule_and_stops_at_the_cap(
    schedules_app: FastAPI, scheduler: RecordingScheduler, api: httpx.AsyncClient
) -> None:
    """Two creates under one key that both missed the replay leave two index entries of
    one schedule: it counts once. The count reads no further than the cap."""
    service = schedules_app.state.schedules
    replay = service.replay

    async def missed(*args: Any) -> None:
        return None

    service.replay = missed
    for _ in range(2):
        await create(api, EVERY_HOUR, **{"Idempotency-Key": "twice"})
    service.replay = replay
    await create(api, {**EVERY_HOUR, "cron": "0 0 * * *"})
    store = service.store
    entries = await schedules_app.state.ports.kv.list(prefix="schedules:tenant_a:")
    assert len(entries.keys) == 3
    assert await store.count("tenant_a", up_to=100) == 2
    assert await store.count("tenant_a", up_to=1) == 1
    assert await store.count("tenant_b", up_to=100) == 0
