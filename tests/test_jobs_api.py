"""The jobs API with respx standing in for Prefect's REST API."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from edge.adapters.prefect import PrefectOrchestrator
from edge.app import create_app
from edge.handlers import task_handler
from edge.jobs.delivery import WebhookSender
from edge.jobs.reconciler import COST_PREFECT_READ, COST_READ, COST_STALE, COST_WORST_JOB
from edge.ports import DependencyUnavailable, RunPhase
from edge.settings import Settings
from shared.crews import CATALOG_PREFIX, CrewSpec
from shared.signing import new_secret, signed_headers
from tests.conftest import AUTH_A, AUTH_B, KEY_A, KEY_B
from tests.doubles.catalog import RESEARCH, SUMMARIZE, publish_shipped_crews
from tests.doubles.queues import RecordingQueue
from tests.support import sqlite_ports

PREFECT = "http://prefect.test/api"
DEPLOYMENT_GPU = "11111111-1111-1111-1111-111111111111"
DEPLOYMENT_CPU = "22222222-2222-2222-2222-222222222222"
EXECUTOR_SECRET = new_secret()
JOB = {"crew": "research", "inputs": {"topic": "edge AI"}}


class FakePrefect:
    """respx routes that behave like Prefect: one run per idempotency key."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.create_calls = 0
        self.fail_next: list[httpx.Response | Exception] = []
        self.missing_deployments: set[str] = set()
        self.deleted_runs: set[str] = set()
        self.state_changes: list[dict[str, Any]] = []
        self.workers: dict[str, list[dict[str, Any]]] = {}  # pool -> workers/filter answer
        self.state_ids = 0
        router.post(url__regex=rf"{PREFECT}/work_pools/[^/]+/workers/filter").mock(
            side_effect=self.pool_workers
        )
        router.get(url__regex=rf"{PREFECT}/deployments/name/run-crew-job/[a-z]+$").mock(
            side_effect=self.deployment
        )
        router.post(url__regex=rf"{PREFECT}/deployments/[^/]+/create_flow_run").mock(
            side_effect=self.create
        )
        self.filter_calls = 0
        self.refuse_filter = False
        router.post(f"{PREFECT}/flow_runs/filter").mock(side_effect=self.filter)
        router.get(url__regex=rf"{PREFECT}/flow_runs/[^/]+$").mock(side_effect=self.read)
        router.post(url__regex=rf"{PREFECT}/flow_runs/[^/]+/set_state").mock(
            side_effect=self.set_state
        )

    def deployment(self, request: httpx.Request) -> httpx.Response:
        pool = request.url.path.rsplit("/", 1)[1]
        if pool in self.missing_deployments:
            return httpx.Response(404, json={"detail": "Deployment not found"})
        ids = {"gpu": DEPLOYMENT_GPU, "cpu": DEPLOYMENT_CPU}
        return httpx.Response(200, json={"id": ids[pool], "name": pool})

    def create(self, request: httpx.Request) -> httpx.Response:
        self.create_calls += 1
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        body = json.loads(request.content)
        key = body["idempotency_key"]
        if key in self.by_key:
            return httpx.Response(200, json=self.runs[self.by_key[key]])
        run_id = f"run-{len(self.runs) + 1}"
        deployment_id = request.url.path.split("/")[-2]
        self.runs[run_id] = {"id": run_id, "parameters": body["parameters"], "tags": body["tags"],
                             "deployment_id": deployment_id,
                             "state": {"type": "SCHEDULED", "name": "Scheduled"}}  # fmt: skip
        self.by_key[key] = run_id
        return httpx.Response(201, json=self.runs[run_id])

    def read(self, request: httpx.Request) -> httpx.Response:
        run_id = request.url.path.rsplit("/", 1)[1]
        if run_id in self.deleted_runs:
            return httpx.Response(404, json={"detail": "Flow run not found"})
        return httpx.Response(200, json=self.runs[run_id])

    def filter(self, request: httpx.Request) -> httpx.Response:
        self.filter_calls += 1
        if self.refuse_filter:
            return httpx.Response(422, json={"detail": "limit too large"})
        body = json.loads(request.content)
        wanted = body["flow_runs"]["id"]["any_"]
        assert len(wanted) <= body["limit"] <= 200
        found = [self.runs[i] for i in wanted if i in self.runs and i not in self.deleted_runs]
        return httpx.Response(200, json=found)

    def pool_workers(self, request: httpx.Request) -> httpx.Response:
        pool = request.url.path.split("/")[-3]
        return httpx.Response(200, json=self.workers.get(pool, []))

    def new_state_id(self) -> str:
        self.state_ids += 1
        return f"state-{self.state_ids}"

    def set_state(self, request: httpx.Request) -> httpx.Response:
        run_id = request.url.path.split("/")[-2]
        body = json.loads(request.content)
        state = body["state"]
        self.state_changes.append({"run": run_id, **body})
        self.runs[run_id]["state"] = {"type": state["type"], "name": state["name"],
                                      "message": state.get("message", ""),
                                      "id": self.new_state_id()}  # fmt: skip
        return httpx.Response(201, json={"status": "ACCEPT"})

    def set(
        self, run_id: str, state_type: str, name: str = "", message: str = "", at: float = 0
    ) -> None:
        self.runs[run_id]["state"] = {"type": state_type, "name": name or state_type.title(),
                                      "message": message, "id": self.new_state_id()}  # fmt: skip
        if at:
            stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
            self.runs[run_id]["state"]["timestamp"] = stamp


@pytest.fixture
def prefect() -> Iterator[FakePrefect]:
    with respx.mock(assert_all_called=False) as router:
        yield FakePrefect(router)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


def jobs_settings(**overrides: Any) -> Settings:
    """The jobs API's settings in these tests: two tenants, Prefect behind respx."""
    return Settings(
        api_keys={KEY_A: "tenant_a", KEY_B: "tenant_b"},
        embed_model="fake-bow",
        prefect_api_url=PREFECT,
        executor_secret=EXECUTOR_SECRET,
        secret_key="k" * 40,
        stale_after_seconds=3600,
        **overrides,
    )


@pytest.fixture
async def jobs_app(tmp_path: Path, prefect: FakePrefect, queue: RecordingQueue) -> FastAPI:
    settings = jobs_settings()
    ports = sqlite_ports(
        tmp_path, orchestrator=PrefectOrchestrator(PREFECT, backoff=0.001), deliveries=queue
    )
    await publish_shipped_crews(ports.kv)
    return create_app(settings, ports)


@pytest.fixture
async def api(
    jobs_app: FastAPI, make_client: Callable[[FastAPI], httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(jobs_app) as client:
        yield client


async def post_event(
    api: httpx.AsyncClient,
    job_id: str,
    event: dict[str, Any],
    message_id: str = "evt-1",
    secret: str = EXECUTOR_SECRET,
) -> httpx.Response:
    body = json.dumps({"tenant": "tenant_a", **event}).encode()
    headers = signed_headers(secret, message_id, int(time.time()), body)
    headers["Content-Type"] = "application/json"
    return await api.post(f"/v1/internal/jobs/{job_id}/events", content=body, headers=headers)


async def test_crews_are_listed_from_the_catalog(api: httpx.AsyncClient) -> None:
    crews = (await api.get("/v1/crews", headers=AUTH_A)).json()["crews"]
    assert {c["name"]: c["pool"] for c in crews} == {"research": "gpu", "summarize": "cpu"}
    assert crews[0] == {**RESEARCH.public(), "published_at": "2027-01-15T08:00:00.000Z"}


async def test_submit_answers_202_and_reaches_prefect_once(
    api: httpx.AsyncClient, prefect: FakePrefect
) -> None:
    response = await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["id"].startswith("job_")
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    (run,) = prefect.runs.values()
    assert run["parameters"] == {"job_id": body["id"], "tenant": "tenant_a", "crew": "research",
                                 "inputs": {"topic": "edge AI"}}  # fmt: skip
    assert "tenant:tenant_a" in run["tags"]
    job = (await api.get(body["urls"]["self"], headers=AUTH_A)).json()
    assert (job["status"], job["inputs"], job["result"]) == ("queued", JOB["inputs"], None)
    assert "tenant" not in job and "fingerprint" not in job


async def test_idempotency_key_same_body_same_job_different_body_422(
    api: httpx.AsyncClient, prefect: FakePrefect
) -> None:
    headers = {**AUTH_A, "Idempotency-Key": "order-42"}
    first = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()
    again = await api.post("/v1/jobs", json=dict(reversed(JOB.items())), headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert prefect.create_calls == 1 and len(prefect.runs) == 1
    changed = await api.post(
        "/v1/jobs", json={**JOB, "inputs": {"topic": "other"}}, headers=headers
    )
    assert changed.status_code == 422
    b_headers = {**AUTH_B, "Idempotency-Key": "order-42"}
    other_tenant = (await api.post("/v1/jobs", json=JOB, headers=b_headers)).json()
    assert other_tenant["id"] != first["id"], "keys are scoped per tenant"


async def test_prefect_5xx_is_retried_with_the_same_key(
    api: httpx.AsyncClient, prefect: FakePrefect
) -> None:
    prefect.fail_next = [httpx.Response(503), httpx.ReadTimeout("slow")]
    response = await api.post("/v1/jobs", json=JOB, headers={**AUTH_A, "Idempotency-Key": "k1"})
    assert response.json()["status"] == "queued"
    assert prefect.create_calls == 3 and len(prefect.runs) == 1


async def test_prefect_down_still_accepts_and_the_reconciler_submits_later(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    prefect.fail_next = [httpx.ConnectError("down")] * 3
    accepted = await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    assert accepted.status_code == 202 and accepted.json()["status"] == "submitting"
    assert prefect.runs == {}
    counts = await jobs_app.state.jobs.reconcile()
    assert counts == {"checked": 1, "changed": 1}
    job = (await api.get(f"/v1/jobs/{accepted.json()['id']}", headers=AUTH_A)).json()
    assert job["status"] == "queued" and len(prefect.runs) == 1


async def test_callbacks_move_the_job_and_fire_webhooks(
    api: httpx.AsyncClient, queue: RecordingQueue
) -> None:
    hooked = {**JOB, "webhook": {"url": "https://app.example.com/hooks",
                                 "events": ["job.running", "job.succeeded"]}}  # fmt: skip
    job_id = (await api.post("/v1/jobs", json=hooked, headers=AUTH_A)).json()["id"]
    assert (await post_event(api, job_id, {"type": "running"}, "e1")).json()["status"] == "running"
    progress = {"completed_tasks": 1, "total_tasks": 2, "current_task": "write"}
    await post_event(api, job_id, {"type": "progress", "progress": progress}, "e2")
    done = await post_event(api, job_id, {"type": "succeeded", "result": {"report": "r"}}, "e3")
    assert done.json()["status"] == "succeeded"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["result"] == {"report": "r"} and job["progress"]["completed_tasks"] == 2
    events = [message["event"] for message, _ in queue.sent]
    assert events == ["job.running", "job.succeeded"], "job.progress was not subscribed"
    final = queue.sent[-1][0]
    assert final["payload"]["data"]["status"] == "succeeded" and final["tenant"] == "tenant_a"


async def test_repeated_and_late_callbacks_change_nothing(
    api: httpx.AsyncClient, queue: RecordingQueue
) -> None:
    hooked = {**JOB, "webhook": {"url": "https://app.example.com/hooks"}}
    job_id = (await api.post("/v1/jobs", json=hooked, headers=AUTH_A)).json()["id"]
    await post_event(api, job_id, {"type": "succeeded", "result": "ok"}, "e1")
    again = await post_event(api, job_id, {"type": "succeeded", "result": "ok"}, "e1")
    assert again.json() == {"status": "duplicate"}
    failure = {"type": "failed", "error": {"kind": "X", "message": "m"}}
    late = await post_event(api, job_id, failure, "e2")
    assert late.json()["status"] == "succeeded", "terminal is final"
    assert [m["event"] for m, _ in queue.sent] == ["job.succeeded"]


@pytest.mark.parametrize(
    "mangle", ["no-signature", "wrong-secret", "old-timestamp", "tampered-body"]
)
async def test_bad_callback_signatures_are_401(api: httpx.AsyncClient, mangle: str) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    body = json.dumps({"tenant": "tenant_a", "type": "failed",
                       "error": {"kind": "x", "message": "y"}}).encode()  # fmt: skip
    secret = new_secret() if mangle == "wrong-secret" else EXECUTOR_SECRET
    stamp = int(time.time()) - (400 if mangle == "old-timestamp" else 0)
    headers = {} if mangle == "no-signature" else signed_headers(secret, "m1", stamp, body)
    if mangle == "tampered-body":
        body = body.replace(b"failed", b"cancelled")
    response = await api.post(f"/v1/internal/jobs/{job_id}/events", content=body,
                              headers={**headers, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "queued"


async def test_a_callback_for_another_tenants_job_is_404(api: httpx.AsyncClient) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_B)).json()["id"]
    response = await post_event(api, job_id, {"type": "running"})
    assert response.status_code == 404


async def test_reconciler_ends_crashed_and_cancelled_runs(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    crashed = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    cancelled = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    prefect.set("run-1", "CRASHED", "Crashed", "worker process exited with -9")
    prefect.set("run-2", "CANCELLED")
    jobs_app.state.jobs._settings = jobs_app.state.settings.__class__(
        **{**_fields(jobs_app.state.settings), "stale_after_seconds": 0}
    )
    counts = await jobs_app.state.jobs.reconcile()
    assert counts["changed"] == 2
    first = (await api.get(f"/v1/jobs/{crashed}", headers=AUTH_A)).json()
    assert first["status"] == "failed"
    assert first["error"] == {"kind": "Crashed", "message": "worker process exited with -9"}
    second = (await api.get(f"/v1/jobs/{cancelled}", headers=AUTH_A)).json()
    assert second["status"] == "cancelled"
    assert await jobs_app.state.jobs.reconcile() == {"checked": 0, "changed": 0}


def _fields(settings: Any) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


async def test_cancel_a_scheduled_run(api: httpx.AsyncClient, prefect: FakePrefect) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    response = await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLED"
    assert (await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_B)).status_code == 404


async def test_jobs_list_newest_first_with_status_filter(api: httpx.AsyncClient) -> None:
    ids = [(await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"] for _ in range(3)]
    await post_event(api, ids[1], {"type": "running"})
    listed = (await api.get("/v1/jobs?limit=2", headers=AUTH_A)).json()
    assert [j["id"] for j in listed["jobs"]] == [ids[2], ids[1]] and listed["cursor"]
    rest = (await api.get(f"/v1/jobs?limit=2&cursor={listed['cursor']}", headers=AUTH_A)).json()
    assert [j["id"] for j in rest["jobs"]] == [ids[0]]
    running = (await api.get("/v1/jobs?status=running", headers=AUTH_A)).json()
    assert [j["id"] for j in running["jobs"]] == [ids[1]]
    assert (await api.get("/v1/jobs", headers=AUTH_B)).json()["jobs"] == []


async def test_webhook_secret_is_per_tenant_and_stable(api: httpx.AsyncClient) -> None:
    a1 = (await api.get("/v1/webhooks/secret", headers=AUTH_A)).json()["secret"]
    a2 = (await api.get("/v1/webhooks/secret", headers=AUTH_A)).json()["secret"]
    b = (await api.get("/v1/webhooks/secret", headers=AUTH_B)).json()["secret"]
    assert a1 == a2 != b and a1.startswith("whsec_")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"crew": "nope", "inputs": {}}, "crew"),
        ({"crew": "research", "inputs": {}}, "topic"),
        ({"crew": "research", "inputs": {"topic": 3}}, "topic"),
        ({"crew": "research"}, "inputs"),
        ({**JOB, "webhook": {"url": "http://app.example.com/h"}}, "url"),
        ({**JOB, "webhook": {"url": "https://169.254.169.254/"}}, "url"),
        (
            {**JOB, "webhook": {"url": "https://a.example.com", "events": ["job.exploded"]}},
            "events",
        ),
        ({**JOB, "metadata": {"blob": "x" * 5000}}, "metadata"),
        ({**JOB, "extra": True}, "extra"),
    ],
)
async def test_bad_job_requests_are_422_and_create_nothing(
    api: httpx.AsyncClient, prefect: FakePrefect, body: dict[str, Any], where: str
) -> None:
    response = await api.post("/v1/jobs", json=body, headers=AUTH_A)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert any(where in json.dumps(e["loc"]) for e in response.json()["errors"])
    assert prefect.create_calls == 0
    assert (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"] == []


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tkey"])
async def test_bad_idempotency_keys_are_422(api: httpx.AsyncClient, key: str) -> None:
    response = await api.post("/v1/jobs", json=JOB, headers={**AUTH_A, "Idempotency-Key": key})
    assert response.status_code == 422


async def test_unknown_and_malformed_job_ids_are_problems(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/jobs/job_" + "0" * 26, headers=AUTH_A)).status_code == 404
    assert (await api.get("/v1/jobs/../../etc", headers=AUTH_A)).status_code == 404
    assert (await api.get("/v1/jobs/nope", headers=AUTH_A)).status_code == 404


async def test_a_burst_is_accepted_at_once_and_fed_to_prefect_through_the_queue(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    jobs_app.state.jobs.direct_limit = 0  # as if 8 hand-overs were already in flight
    accepted = await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    assert accepted.status_code == 202 and accepted.json()["status"] == "submitting"
    assert prefect.create_calls == 0
    ((message, delay),) = queue.sent
    assert delay == 0
    job_id = accepted.json()["id"]
    assert message == {"kind": "submit", "tenant": "tenant_a", "job_id": job_id, "attempt": 1}
    handle = task_handler(
        jobs_app, WebhookSender(jobs_app.state.jobs.store, jobs_app.state.settings)
    )
    assert await handle(message) is None
    job = (await api.get(f"/v1/jobs/{accepted.json()['id']}", headers=AUTH_A)).json()
    assert job["status"] == "queued" and len(prefect.runs) == 1
    assert await handle(message) is None and prefect.create_calls == 1, "handled twice: no-op"


async def test_a_queued_hand_over_backs_off_while_prefect_is_down(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    prefect.fail_next = [httpx.ConnectError("down")] * 6
    accepted = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()
    assert accepted["status"] == "submitting"
    ((message, _),) = queue.sent
    handle = task_handler(
        jobs_app, WebhookSender(jobs_app.state.jobs.store, jobs_app.state.settings)
    )
    assert await handle(message) == 5
    assert await handle({**message, "attempt": 2}) is None  # Prefect is back
    job = (await api.get(f"/v1/jobs/{accepted['id']}", headers=AUTH_A)).json()
    assert job["status"] == "queued" and len(prefect.runs) == 1


async def test_webhooks_are_refused_while_no_signing_key_is_configured(
    api: httpx.AsyncClient, jobs_app: FastAPI, prefect: FakePrefect
) -> None:
    jobs_app.state.settings = dataclasses.replace(jobs_app.state.settings, secret_key=None)
    hooked = {**JOB, "webhook": {"url": "https://app.example.com/hooks"}}
    response = await api.post("/v1/jobs", json=hooked, headers=AUTH_A)
    assert response.status_code == 503 and prefect.create_calls == 0
    assert (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).status_code == 202


async def test_cancelling_a_finished_run_changes_nothing(
    api: httpx.AsyncClient, prefect: FakePrefect
) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    prefect.set("run-1", "COMPLETED")
    response = await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert prefect.runs["run-1"]["state"]["type"] == "COMPLETED", "never forced to CANCELLING"


async def test_a_deployment_prefect_does_not_know_fails_the_job(
    api: httpx.AsyncClient, prefect: FakePrefect, queue: RecordingQueue
) -> None:
    prefect.missing_deployments.add("cpu")
    body = {"crew": "summarize", "inputs": {"text": "x"}}
    accepted = (await api.post("/v1/jobs", json=body, headers=AUTH_A)).json()
    assert accepted["status"] == "failed", "a permanent refusal is not retried forever"
    job = (await api.get(f"/v1/jobs/{accepted['id']}", headers=AUTH_A)).json()
    assert job["error"]["kind"] == "SubmitRejected"
    assert [m for m, _ in queue.sent if m.get("kind") == "submit"] == []


async def test_a_run_deleted_from_prefect_ends_the_job(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    prefect.deleted_runs.add("run-1")
    jobs_app.state.jobs._settings = dataclasses.replace(
        jobs_app.state.settings, stale_after_seconds=0
    )
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["error"]["kind"]) == ("failed", "RunLost")
    cancel = await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert cancel.status_code == 202 and cancel.json()["status"] == "failed"


async def test_a_key_reused_after_its_job_expired_starts_a_new_run(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """Prefect remembers idempotency keys as long as runs exist; our records expire (TTL).
    A key used again after that is a new job, not the old run's result."""
    headers = {**AUTH_A, "Idempotency-Key": "monthly-report"}
    first = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()
    prefect.set("run-1", "COMPLETED")
    jobs = jobs_app.state.jobs
    await jobs_app.state.ports.kv.delete(f"job:tenant_a:{first['id']}")  # what the TTL does
    later = time.time() + jobs.store.ttl_seconds  # ...by this time at the earliest
    jobs._clock = lambda: later

    again = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()

    assert again["id"] == first["id"], "the id still comes from tenant + key"
    assert again["status"] == "queued" and len(prefect.runs) == 2
    assert prefect.runs["run-2"]["state"]["type"] == "SCHEDULED"


async def test_a_retry_that_cannot_see_kvs_copy_gets_the_job_from_the_ledger(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """KV is eventually consistent: a retry landing on another Cloudflare location may
    not see the copy the first request wrote. The ledger has the job all the same, and
    a read there is not a 404 either."""
    headers = {**AUTH_A, "Idempotency-Key": "order-77"}
    first = (await api.post("/v1/jobs", json=JOB, headers=headers)).json()
    await jobs_app.state.ports.kv.delete(f"job:tenant_a:{first['id']}")  # not seen there

    again = await api.post("/v1/jobs", json=JOB, headers=headers)
    read = await api.get(f"/v1/jobs/{first['id']}", headers=AUTH_A)

    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert len(prefect.runs) == 1 and prefect.create_calls == 1, "asked once, one run"
    assert read.status_code == 200 and read.json()["status"] == "queued"


async def test_a_lost_result_is_timed_from_the_runs_end_not_from_the_last_callback(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    jobs_app.state.jobs._settings = dataclasses.replace(
        jobs_app.state.settings, stale_after_seconds=0
    )
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    record = await jobs_app.state.jobs.store.get("tenant_a", job_id)
    # a long crew, silent for an hour
    await jobs_app.state.jobs._change(record, None, heard_at=time.time() - 3600)

    prefect.set("run-1", "COMPLETED", at=time.time() - 5)  # its `succeeded` may be in flight
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == "queued", "a result still on its way is not declared lost"

    prefect.set("run-1", "COMPLETED", at=time.time() - 601)
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["error"]["kind"]) == ("failed", "ResultLost")


async def test_the_reconciler_reads_stale_runs_in_batches_and_resumes_where_it_stopped(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """A Worker invocation has a subrequest budget: each pass spends at most its budget,
    reads Prefect once per page instead of once per job, and the next pass resumes
    after the last page it finished (two of these jobs stay active, so starting over
    from the top would check them again instead of reaching the others)."""
    for _ in range(5):
        await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    jobs = jobs_app.state.jobs
    jobs._settings = dataclasses.replace(jobs_app.state.settings, stale_after_seconds=0)
    listed, _ = await jobs.store.active(limit=10, cursor=None)
    order = [(await jobs.store.get(t, j)) for t, j in listed]  # the reconciler's order
    runs = [job["flow_run_id"] for job in order]
    for run in runs[:2]:
        prefect.set(run, "RUNNING")
    for run in runs[2:4]:
        prefect.set(run, "CRASHED", "Crashed", "worker lost")
    prefect.deleted_runs.add(runs[4])
    reads = prefect.filter_calls

    # One page of two stale jobs at their worst case, and no room for a second: the
    # pass's reserve and its listing, the first job, then room for the second's worst.
    worst = COST_WORST_JOB  # what the reconciler keeps room for, per job
    budget = 1 + 1 + (COST_READ + COST_STALE) + (COST_READ + worst + COST_PREFECT_READ)
    passes = [await jobs.reconcile(batch=2, budget=budget) for _ in range(4)]

    assert passes == [{"checked": 2, "changed": 2}] * 2 + [
        {"checked": 1, "changed": 1},
        {"checked": 2, "changed": 0},  # wrapped around: only the running two are left
    ]
    assert prefect.filter_calls - reads == 4, "one Prefect read per page, not per job"
    final = [(await jobs.store.get("tenant_a", job["id"])) for job in order]
    assert [j["status"] for j in final] == ["running"] * 2 + ["failed"] * 3
    assert [j["error"]["kind"] for j in final[2:]] == ["Crashed", "Crashed", "RunLost"]


async def test_a_refused_batch_read_falls_back_to_one_read_per_run(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    prefect.set("run-1", "CANCELLED")
    jobs = jobs_app.state.jobs
    jobs._settings = dataclasses.replace(jobs_app.state.settings, stale_after_seconds=0)
    prefect.refuse_filter = True  # e.g. a server whose page size limit is below ours
    assert await jobs.reconcile() == {"checked": 1, "changed": 1}
    assert (await jobs.store.get("tenant_a", job_id))["status"] == "cancelled"


def held_by(prefect: FakePrefect, run_id: str, worker: str, *, online: bool) -> None:
    """The run is held by `worker` (labelled as Prefect's workers label their runs)."""
    prefect.runs[run_id]["labels"] = {"prefect.worker.name": worker}
    prefect.runs[run_id]["work_pool_name"] = "gpu"
    status = "ONLINE" if online else "OFFLINE"
    prefect.workers["gpu"] = [
        {"name": "other", "status": "ONLINE"},
        {"name": worker, "status": status},
    ]


def unsticking(jobs_app: FastAPI, **timeouts: int) -> None:
    jobs_app.state.jobs._settings = dataclasses.replace(
        jobs_app.state.settings, stale_after_seconds=0, **timeouts
    )


@pytest.mark.parametrize(
    ("pid", "run_after", "job_after"),
    [(None, "SCHEDULED", "queued"), ("host:4242", "CRASHED", "failed")],
    ids=["never-started-goes-back-to-the-pool", "started-but-never-running-ends-crashed"],
)
async def test_a_run_claimed_by_a_worker_that_went_offline_is_recovered(
    api: httpx.AsyncClient,
    prefect: FakePrefect,
    jobs_app: FastAPI,
    queue: RecordingQueue,
    pid: str | None,
    run_after: str,
    job_after: str,
) -> None:
    unsticking(jobs_app, claim_timeout_seconds=60)
    body = {**JOB, "webhook": {"url": "https://hooks.example.com/x"}}
    job_id = (await api.post("/v1/jobs", json=body, headers=AUTH_A)).json()["id"]
    prefect.runs["run-1"]["infrastructure_pid"] = pid
    held_by(prefect, "run-1", "w1", online=False)
    prefect.set("run-1", "PENDING", at=time.time() - 30)  # a claim this young is left alone
    assert await jobs_app.state.jobs.reconcile() == {"checked": 1, "changed": 0}
    assert prefect.state_changes == []

    prefect.set("run-1", "PENDING", at=time.time() - 61)  # ...and its worker is offline
    await jobs_app.state.jobs.reconcile()
    ((change,),) = [prefect.state_changes]
    assert change["state"]["type"] == run_after
    assert change["force"] is (run_after == "SCHEDULED")
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["status"] == job_after
    if job_after == "failed":
        assert job["error"]["kind"] == "Crashed"
        assert [message["event"] for message, _ in queue.sent] == ["job.failed"]
    else:
        assert queue.sent == [], "back in the pool: the job is still promised"


async def test_a_slow_start_on_a_live_worker_is_left_alone(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """A Docker worker pulling a large image keeps a live run Pending for minutes."""
    unsticking(jobs_app, claim_timeout_seconds=60)
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    held_by(prefect, "run-1", "w1", online=True)
    prefect.set("run-1", "PENDING", at=time.time() - 3600)
    await jobs_app.state.jobs.reconcile()
    assert prefect.state_changes == []
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "queued"


async def test_a_claim_naming_no_worker_is_recovered_only_as_a_last_resort(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    unsticking(jobs_app, claim_timeout_seconds=60)
    await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    prefect.set("run-1", "PENDING", at=time.time() - 61)
    await jobs_app.state.jobs.reconcile()
    assert prefect.state_changes == [], "who holds it is unknown: not yet"
    prefect.set("run-1", "PENDING", at=time.time() - 601)  # ten times the timeout
    await jobs_app.state.jobs.reconcile()
    assert [c["state"]["type"] for c in prefect.state_changes] == ["SCHEDULED"]


async def test_the_claim_message_of_edgecrews_worker_names_its_holder(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """Between its claim and its labels, edgecrew's worker is named by the claim."""
    unsticking(jobs_app, claim_timeout_seconds=60)
    await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    prefect.runs["run-1"]["work_pool_name"] = "gpu"
    prefect.workers["gpu"] = [{"name": "edgecrew-h-1", "status": "OFFLINE"}]
    prefect.set("run-1", "PENDING", "Pending", "Claimed by worker edgecrew-h-1", time.time() - 61)
    await jobs_app.state.jobs.reconcile()
    assert [c["state"]["type"] for c in prefect.state_changes] == ["SCHEDULED"]


async def test_reading_a_job_never_changes_its_run(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    unsticking(jobs_app, claim_timeout_seconds=60)
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    held_by(prefect, "run-1", "w1", online=False)
    prefect.set("run-1", "PENDING", at=time.time() - 61)
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).status_code == 200
    assert prefect.state_changes == [], "only the reconciler unsticks runs"


async def test_reading_a_job_prefect_has_not_taken_never_submits_it(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    unsticking(jobs_app)  # every job is stale: a read that could submit would do it now
    prefect.fail_next = [httpx.ConnectError("down")] * 3
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    calls = prefect.create_calls
    read = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert read["status"] == "submitting" and prefect.create_calls == calls
    assert prefect.runs == {}, "the hand-over is the queue's and the reconciler's"
    await jobs_app.state.jobs.reconcile()
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "queued"


async def test_a_cancel_no_live_worker_can_confirm_ends_the_job_cancelled(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    unsticking(jobs_app, cancel_timeout_seconds=120)
    body = {**JOB, "webhook": {"url": "https://hooks.example.com/x"}}
    job_id = (await api.post("/v1/jobs", json=body, headers=AUTH_A)).json()["id"]
    prefect.set("run-1", "RUNNING", at=time.time() - 300)
    await api.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLING"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "queued"

    held_by(prefect, "run-1", "w1", online=False)  # its worker died meanwhile
    prefect.set("run-1", "CANCELLING", at=time.time() - 121)
    await jobs_app.state.jobs.reconcile()
    assert prefect.runs["run-1"]["state"]["type"] == "CANCELLED"
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "cancelled"
    assert [message["event"] for message, _ in queue.sent][-1] == "job.cancelled"


async def test_a_run_that_moved_on_since_it_was_judged_stuck_is_left_alone(
    prefect: FakePrefect, jobs_app: FastAPI, api: httpx.AsyncClient
) -> None:
    await api.post("/v1/jobs", json=JOB, headers=AUTH_A)
    orchestrator = jobs_app.state.ports.orchestrator
    prefect.set("run-1", "PENDING", at=time.time() - 61)
    observed = await orchestrator.read("run-1")
    prefect.set("run-1", "PENDING", at=time.time())  # released and claimed again meanwhile
    state = await orchestrator.recover(observed)
    assert state.phase is RunPhase.CLAIMED and prefect.state_changes == []


# --- the crew catalog: workers publish, jobs follow it --------------------------------------

TRANSLATE = CrewSpec(
    name="translate",
    description="Detect a text's language, then translate it.",
    pool="cpu",
    inputs={
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1}},
        "required": ["text"],
    },
    kind="flow",
    tasks=("detect", "translate"),
    version="1.0.0+0123456789ab",
)


def publish_body(*specs: CrewSpec, pool: str = "cpu") -> dict[str, Any]:
    return {"worker": f"{pool}-worker-1", "pool": pool, "crews": [s.public() for s in specs]}


async def publish(
    api: httpx.AsyncClient, body: Any, *, secret: str = EXECUTOR_SECRET, signed: bool = True
) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = signed_headers(secret, "pub-1", int(time.time()), raw) if signed else {}
    headers["Content-Type"] = "application/json"
    return await api.post("/v1/internal/crews", content=raw, headers=headers)


async def listed_crews(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get("/v1/crews", headers=AUTH_A)
    assert response.status_code == 200, response.text
    crews: list[dict[str, Any]] = response.json()["crews"]
    return crews


async def test_a_signed_publish_shows_up_in_the_crew_list(api: httpx.AsyncClient) -> None:
    response = await publish(api, publish_body(TRANSLATE))
    assert (response.status_code, response.json()) == (200, {"crews": ["translate"]})
    crews = await listed_crews(api)
    assert [c["name"] for c in crews] == ["research", "summarize", "translate"]
    published = crews[2].pop("published_at")
    assert crews[2] == TRANSLATE.public() and "published_by" not in crews[2]
    age = time.time() - datetime.fromisoformat(published).timestamp()
    assert published.endswith("Z") and 0 <= age < 60


@pytest.mark.parametrize("mangle", ["unsigned", "wrong-secret"])
async def test_an_unsigned_publish_is_401_and_changes_nothing(
    api: httpx.AsyncClient, mangle: str
) -> None:
    before = await listed_crews(api)
    secret = new_secret() if mangle == "wrong-secret" else EXECUTOR_SECRET
    response = await publish(
        api, publish_body(TRANSLATE), secret=secret, signed=mangle != "unsigned"
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert await listed_crews(api) == before


#: A rule `input_errors` could not enforce: refused at publish, never advertised.
PATTERNED = dataclasses.replace(
    TRANSLATE,
    inputs={"type": "object", "properties": {"text": {"type": "string", "format": "email"}}},
)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(
            publish_body(TRANSLATE, pool="gpu"),
            "crews translate are not in pool 'gpu'",
            id="other-pool",
        ),
        pytest.param(
            publish_body(TRANSLATE, TRANSLATE), "each crew may be published once", id="twice"
        ),
        pytest.param(
            publish_body(TRANSLATE, dataclasses.replace(TRANSLATE, name="Translate 2")),
            "crew name 'Translate 2' must match",
            id="one-bad-name-among-good",
        ),
        pytest.param(
            publish_body(PATTERNED), "text: unsupported keywords format", id="unenforced-rule"
        ),
        pytest.param(
            {**publish_body(TRANSLATE), "worker": ""}, "worker must be a name", id="no-worker"
        ),
        pytest.param({**publish_body(TRANSLATE), "worker": 7}, "worker", id="worker-type"),
        pytest.param({**publish_body(), "crews": "translate"}, "crews", id="crews-type"),
        pytest.param({**publish_body(), "crews": ["translate"]}, "crews", id="entry-type"),
        pytest.param(["translate"], "body", id="not-an-object"),
    ],
)
async def test_a_bad_publish_is_422_and_leaves_the_catalog_alone(
    api: httpx.AsyncClient, body: Any, needle: str
) -> None:
    before = await listed_crews(api)
    response = await publish(api, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"] and problem["errors"][0]["loc"][0] == "body"
    assert needle in json.dumps(problem), problem
    assert await listed_crews(api) == before, "nothing of a refused publish is kept"


async def test_a_new_version_replaces_the_entry_and_is_logged(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    newer = dataclasses.replace(RESEARCH, version="0.2.0+fedcba987654", tasks=("only_task",))
    with caplog.at_level(logging.INFO, logger="edgecrew.catalog"):
        assert (await publish(api, publish_body(newer, pool="gpu"))).status_code == 200
    (research,) = [c for c in await listed_crews(api) if c["name"] == "research"]
    assert (research["version"], research["tasks"]) == ("0.2.0+fedcba987654", ["only_task"])
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edgecrew.catalog"]
    assert f"version {RESEARCH.version} -> 0.2.0+fedcba987654" in line
    assert "gpu-worker-1" in line and "test-worker" in line


async def test_a_crew_published_later_is_accepted_once_published(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    job = {"crew": "translate", "inputs": {"text": "Bonjour"}}
    refused = await api.post("/v1/jobs", json=job, headers=AUTH_A)
    assert refused.status_code == 422 and prefect.create_calls == 0
    await publish(api, publish_body(TRANSLATE))

    accepted = await api.post("/v1/jobs", json=job, headers=AUTH_A)
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"
    record = await jobs_app.state.jobs.store.get("tenant_a", accepted.json()["id"])
    assert (record["pool"], record["crew_version"]) == ("cpu", TRANSLATE.version)
    (run,) = prefect.runs.values()
    assert run["deployment_id"] == DEPLOYMENT_CPU, "handed to the cpu pool's deployment"


async def test_an_unknown_crew_is_422_naming_the_published_ones(
    api: httpx.AsyncClient, prefect: FakePrefect
) -> None:
    response = await api.post("/v1/jobs", json={"crew": "nope", "inputs": {}}, headers=AUTH_A)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    msg = "unknown crew; GET /v1/crews lists them (research, summarize)"
    assert response.json()["errors"] == [{"loc": ["body", "crew"], "msg": msg}]
    malformed = await api.post("/v1/jobs", json={"crew": "No Such", "inputs": {}}, headers=AUTH_A)
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["loc"] == ["body", "crew"]
    assert prefect.create_calls == 0


@pytest.mark.parametrize(
    ("crew", "inputs", "deployment"),
    [(RESEARCH, {"topic": "edge AI"}, DEPLOYMENT_GPU), (SUMMARIZE, {"text": "t"}, DEPLOYMENT_CPU)],
    ids=["gpu", "cpu"],
)
async def test_a_job_keeps_its_crews_pool_and_version(
    api: httpx.AsyncClient,
    prefect: FakePrefect,
    jobs_app: FastAPI,
    crew: CrewSpec,
    inputs: dict[str, Any],
    deployment: str,
) -> None:
    body = {"crew": crew.name, "inputs": inputs}
    job_id = (await api.post("/v1/jobs", json=body, headers=AUTH_A)).json()["id"]
    record = await jobs_app.state.jobs.store.get("tenant_a", job_id)
    assert (record["pool"], record["crew_version"]) == (crew.pool, crew.version)
    assert prefect.runs["run-1"]["deployment_id"] == deployment
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["crew_version"] == crew.version


async def test_the_running_event_records_the_version_the_worker_runs(
    api: httpx.AsyncClient,
) -> None:
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    too_long = await post_event(api, job_id, {"type": "running", "crew_version": "v" * 201})
    assert too_long.status_code == 422
    running = {"type": "running", "crew_version": "0.1.1+worker000001"}
    assert (await post_event(api, job_id, running, "e1")).json()["status"] == "running"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["crew_version"] == "0.1.1+worker000001"
    later = await post_event(api, job_id, {"type": "succeeded", "result": "ok"}, "e2")
    assert later.json()["status"] == "succeeded"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["crew_version"] == "0.1.1+worker000001", "kept to the end"


async def test_a_version_that_arrives_after_prefects_running_fires_no_second_webhook(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    hooked = {**JOB, "webhook": {"url": "https://app.example.com/h", "events": ["job.running"]}}
    job_id = (await api.post("/v1/jobs", json=hooked, headers=AUTH_A)).json()["id"]
    unsticking(jobs_app)  # stale at once: a read asks Prefect, which says RUNNING
    prefect.set("run-1", "RUNNING")
    assert (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()["status"] == "running"

    running = {"type": "running", "crew_version": "0.1.1+worker000001"}
    assert (await post_event(api, job_id, running, "e1")).json()["status"] == "running"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert job["crew_version"] == "0.1.1+worker000001"
    assert [m["event"] for m, _ in queue.sent] == ["job.running"], "one job.running only"


async def older_record_without_pool(jobs_app: FastAPI, prefect: FakePrefect, api: Any) -> str:
    """A job accepted while Prefect was down, its record written before jobs kept a pool."""
    prefect.fail_next = [httpx.ConnectError("down")] * 3
    job_id: str = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    jobs = jobs_app.state.jobs
    record = await jobs.store.get("tenant_a", job_id)
    await jobs._change(record, None, pool=None, crew_version=None)
    return job_id


async def test_an_older_record_is_handed_to_its_crews_pool_from_the_catalog(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    job_id = await older_record_without_pool(jobs_app, prefect, api)
    assert await jobs_app.state.jobs.reconcile() == {"checked": 1, "changed": 1}
    assert prefect.runs["run-1"]["deployment_id"] == DEPLOYMENT_GPU
    record = await jobs_app.state.jobs.store.get("tenant_a", job_id)
    assert (record["status"], record["pool"]) == ("queued", "gpu")


async def test_an_older_record_for_a_crew_gone_from_the_catalog_fails(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    job_id = await older_record_without_pool(jobs_app, prefect, api)
    await jobs_app.state.ports.kv.delete(CATALOG_PREFIX + "research")
    assert await jobs_app.state.jobs.reconcile() == {"checked": 1, "changed": 1}
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["error"]["kind"]) == ("failed", "UnknownCrew")
    assert "'research' is no longer in the catalog" in job["error"]["message"]
    assert prefect.runs == {}


async def test_a_store_that_is_down_is_503_for_crews_and_jobs(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    class LockedDatabase:
        def execute(self, *args: Any) -> None:
            raise sqlite3.OperationalError("database is locked")

    jobs_app.state.ports.kv._db = LockedDatabase()
    for response in [
        await api.get("/v1/crews", headers=AUTH_A),
        await api.post("/v1/jobs", json=JOB, headers=AUTH_A),
    ]:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
    assert prefect.create_calls == 0


async def test_a_corrupt_catalog_entry_is_left_out_not_a_500(
    api: httpx.AsyncClient, jobs_app: FastAPI
) -> None:
    await jobs_app.state.ports.kv.put(CATALOG_PREFIX + "summarize", "{not json")
    assert [c["name"] for c in await listed_crews(api)] == ["research"]
    job = {"crew": "summarize", "inputs": {"text": "t"}}
    response = await api.post("/v1/jobs", json=job, headers=AUTH_A)
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "crew"]


async def test_a_retried_submit_gets_its_job_even_after_the_crews_schema_changed(
    api: httpx.AsyncClient, prefect: FakePrefect
) -> None:
    """A 202 is a promise: the client's retry must find the job, not a new 422."""
    headers = {**AUTH_A, "Idempotency-Key": "before-the-rollout"}
    first = await api.post("/v1/jobs", json=JOB, headers=headers)
    assert first.status_code == 202
    stricter = {**dict(RESEARCH.inputs), "required": ["topic", "audience"]}
    rolled_out = dataclasses.replace(RESEARCH, inputs=stricter, version="2.0.0+x")
    taken = await publish(api, publish_body(rolled_out, pool=RESEARCH.pool))
    assert taken.status_code == 200, taken.text
    retried = await api.post("/v1/jobs", json=JOB, headers=headers)
    assert retried.status_code == 202 and retried.json()["id"] == first.json()["id"]
    assert prefect.create_calls == 1
    fresh = await api.post("/v1/jobs", json=JOB, headers={**AUTH_A, "Idempotency-Key": "after"})
    assert fresh.status_code == 422 and "audience" in fresh.text, "new jobs meet the new schema"


# --- races that Workers KV alone (no compare-and-set) left open --------------------------------


class SlowReads:
    """Network latency on every read of a job record: what a read saw is answered 50 ms
    later, so two requests (at two Cloudflare locations) both read before either wrote."""

    def __init__(self) -> None:
        self.found_nothing = 0

    def wrap(self, read: Callable[..., Any]) -> Callable[..., Any]:
        async def slow(*args: Any, **kwargs: Any) -> Any:
            if any(str(a).startswith(("job:", "job_")) for a in args):
                value = await read(*args, **kwargs)
                self.found_nothing += value is None
                await asyncio.sleep(0.05)  # the answer is on its way back meanwhile
                return value
            return await read(*args, **kwargs)

        return slow


async def test_two_first_requests_under_one_key_with_different_bodies_make_one_job(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """Both pass the existence check before either writes. One gets its job; the other
    is told the key is taken, and the job keeps the winner's body end to end."""
    ports = jobs_app.state.ports
    reads = SlowReads()
    ports.kv.get = reads.wrap(ports.kv.get)
    ports.ledger.read = reads.wrap(ports.ledger.read)
    headers = {**AUTH_A, "Idempotency-Key": "invoice-9"}
    bodies = [{**JOB, "inputs": {"topic": topic}} for topic in ("first", "second")]

    answers = await asyncio.gather(
        *(api.post("/v1/jobs", json=body, headers=headers) for body in bodies)
    )

    assert reads.found_nothing >= 2, "both requests really read before either wrote"
    assert sorted(a.status_code for a in answers) == [202, 422]
    (won,) = [a for a in answers if a.status_code == 202]
    (lost,) = [a for a in answers if a.status_code == 422]
    assert lost.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    topic = bodies[answers.index(won)]["inputs"]["topic"]
    job = (await api.get(f"/v1/jobs/{won.json()['id']}", headers=AUTH_A)).json()
    assert job["inputs"] == {"topic": topic}
    (run,) = prefect.runs.values()
    assert run["parameters"]["inputs"] == {"topic": topic}, "Prefect runs what was accepted"


async def test_a_callback_landing_during_a_reconciler_pass_is_not_undone(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    """The pass reads the job (running), asks Prefect (the run crashed after reporting),
    and meanwhile the worker's `succeeded` arrives. The pass's `failed`, built on what
    it read, must not overwrite the result, nor send a second terminal webhook."""
    hooked = {**JOB, "webhook": {"url": "https://app.example.com/h"}}
    job_id = (await api.post("/v1/jobs", json=hooked, headers=AUTH_A)).json()["id"]
    await post_event(api, job_id, {"type": "running"}, "e1")
    jobs = jobs_app.state.jobs
    jobs._settings = dataclasses.replace(jobs_app.state.settings, stale_after_seconds=0)
    prefect.set("run-1", "CRASHED", "Crashed", "the worker died after reporting")
    orchestrator = jobs_app.state.ports.orchestrator
    read_many = orchestrator.read_many

    async def callback_meanwhile(run_ids: list[str]) -> Any:
        states = await read_many(run_ids)
        done = await post_event(api, job_id, {"type": "succeeded", "result": "the report"}, "e2")
        assert done.json()["status"] == "succeeded"
        return states

    orchestrator.read_many = callback_meanwhile
    assert await jobs.reconcile() == {"checked": 1, "changed": 1}

    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["result"], job["error"]) == ("succeeded", "the report", None)
    assert [m["event"] for m, _ in queue.sent if "event" in m] == ["job.succeeded"]


# --- a writer that fails part-way: the next touch of the job repairs what it left ------------


def fail_once(kv: Any, key_prefix: str) -> list[str]:
    """The next KV put of a key with this prefix fails as KV does when overloaded."""
    put, failed = kv.put, []

    async def put_or_fail(key: str, *args: Any, **kwargs: Any) -> None:
        if key.startswith(key_prefix) and not failed:
            failed.append(key)
            raise DependencyUnavailable("Workers KV", "put failed: 429", 1)
        await put(key, *args, **kwargs)

    kv.put = put_or_fail
    return failed


async def test_a_callback_whose_copy_failed_is_repaired_by_its_retry(
    api: httpx.AsyncClient, jobs_app: FastAPI, queue: RecordingQueue
) -> None:
    """The ledger took `succeeded`, then KV refused the copy: the callback answered 503.
    The executor's retry changes nothing in the ledger, but finds KV's copy behind it and
    brings it up, and the terminal webhook is sent (again, under the same message id)."""
    hooked = {**JOB, "webhook": {"url": "https://app.example.com/h"}}
    job_id = (await api.post("/v1/jobs", json=hooked, headers=AUTH_A)).json()["id"]
    failed = fail_once(jobs_app.state.ports.kv, "job:")
    event = {"type": "succeeded", "result": "the report"}

    first = await post_event(api, job_id, event, "e1")
    again = await post_event(api, job_id, event, "e1")

    assert failed and first.status_code == 503 and again.status_code == 200
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["result"]) == ("succeeded", "the report")
    listed = (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"]
    assert [j["status"] for j in listed] == ["succeeded"]
    assert await jobs_app.state.jobs.store.active(limit=10, cursor=None) == ([], None)
    sent = [m for m, _ in queue.sent if m.get("event") == "job.succeeded"]
    assert sent and len({m["message_id"] for m in sent}) == 1, "one message, maybe twice"


async def test_a_job_whose_first_copy_failed_is_handed_over_on_the_retry(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """The ledger took the job, then KV refused the active-list mark: the POST answered
    503 and the reconciler cannot see the job. The client's retry with the same key gets
    the job, and its copy and hand-over are made then."""
    failed = fail_once(jobs_app.state.ports.kv, "active:")
    headers = {**AUTH_A, "Idempotency-Key": "retry-me"}

    first = await api.post("/v1/jobs", json=JOB, headers=headers)
    again = await api.post("/v1/jobs", json=JOB, headers=headers)

    assert failed and first.status_code == 503 and again.status_code == 202
    assert again.json()["status"] == "submitting" and not prefect.runs
    assert await jobs_app.state.jobs.reconcile() == {"checked": 1, "changed": 1}
    (run,) = prefect.runs.values()
    job = (await api.get(f"/v1/jobs/{again.json()['id']}", headers=AUTH_A)).json()
    assert job["status"] == "queued" and run["parameters"]["job_id"] == job["id"]


async def test_a_job_recorded_before_the_ledger_is_adopted_by_the_reconciler(
    api: httpx.AsyncClient, prefect: FakePrefect, jobs_app: FastAPI
) -> None:
    """A KV record with no revision (written by an edge without the ledger): the
    reconciler's pass still ends it when its run crashed."""
    job_id = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()["id"]
    jobs = jobs_app.state.jobs
    record = await jobs.store.get("tenant_a", job_id)
    jobs_app.state.ports.ledger._db.execute("DELETE FROM jobs")  # as if never there
    old = {k: v for k, v in record.items() if k not in {"revision", "expires_at"}}
    await jobs.store.save(old, previous=None)
    jobs._settings = dataclasses.replace(jobs_app.state.settings, stale_after_seconds=0)
    prefect.set("run-1", "CRASHED", "Crashed", "worker lost")

    assert await jobs.reconcile() == {"checked": 1, "changed": 1}

    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert (job["status"], job["error"]["kind"]) == ("failed", "Crashed")
    adopted = await jobs_app.state.ports.ledger.read("tenant_a", job_id, now=time.time())
    assert adopted is not None and adopted["status"] == "failed"


async def test_a_cancel_after_a_hand_over_that_timed_out_stops_the_run_prefect_made(
    api: httpx.AsyncClient,
    prefect: FakePrefect,
    jobs_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect made the run but answered after the request's budget: the job stays
    `submitting`. A cancel then must find that run (the same key answers with it) and
    stop it, not only mark the job."""
    monkeypatch.setattr("edge.jobs.service.SUBMIT_BUDGET_SECONDS", 0.05)
    orchestrator = jobs_app.state.ports.orchestrator
    submit = orchestrator.submit

    async def late(*args: Any, **kwargs: Any) -> Any:
        state = await submit(*args, **kwargs)
        await asyncio.sleep(0.3)  # the answer is late; the run exists already
        return state

    orchestrator.submit = late
    accepted = (await api.post("/v1/jobs", json=JOB, headers=AUTH_A)).json()
    assert accepted["status"] == "submitting" and list(prefect.runs) == ["run-1"]

    cancelled = (await api.post(f"/v1/jobs/{accepted['id']}/cancel", headers=AUTH_A)).json()

    assert cancelled["status"] == "cancelled"
    assert list(prefect.runs) == ["run-1"], "found with the same key, not a second run"
    assert [c["run"] for c in prefect.state_changes] == ["run-1"]
    assert prefect.state_changes[0]["state"]["type"] in {"CANCELLING", "CANCELLED"}
