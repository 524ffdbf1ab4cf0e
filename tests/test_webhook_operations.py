"""Webhook operations through the local app: the delivery log, redelivery and the tenant's
default webhook, on the real SQLite ledger, KV and queue, drained by the consumer's own
handler, with local HTTP receivers."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook

from edge.app import create_app
from edge.handlers import task_handler
from edge.jobs.delivery import WebhookSender, next_attempt
from edge.jobs.redelivery import REDELIVER_INTERVAL_SECONDS, Redeliveries
from edge.local.sqlite_queue import SqliteQueue
from edge.ports import DependencyUnavailable
from edge.settings import Settings
from shared.jobs import DEFAULT_WEBHOOK_EVENTS
from shared.signing import new_secret, signed_headers
from tests.conftest import AUTH_A, AUTH_B, KEY_A, KEY_B, Clock, asgi_client
from tests.doubles.catalog import publish_shipped_crews
from tests.doubles.orchestrator import InMemoryOrchestrator
from tests.support import WebhookReceiver, sqlite_ports

EXECUTOR_SECRET = new_secret()
JOB = {"crew": "summarize", "inputs": {"text": "Paris is on the Seine."}}
PROBLEM = "application/problem+json"


@dataclass
class Edge:
    """The app, its client, its queue, and the clocks the test moves."""

    app: FastAPI
    api: httpx.AsyncClient
    queue: SqliteQueue
    queue_clock: Clock
    clock: Clock  # the sender's (signatures) and the redelivery limit's

    async def drain(self) -> int:
        """What the local consumer does: every due message through the Worker's handler."""
        sender = WebhookSender(
            self.app.state.jobs.store, self.app.state.settings,
            resolve_dns=True, clock=self.clock, timeout_seconds=0.5,
        )  # fmt: skip
        return await self.queue.drain_once(task_handler(self.app, sender), next_attempt)

    async def submit(self, webhook: dict[str, Any] | None = None, auth: Any = AUTH_A) -> str:
        body = JOB if webhook is None else {**JOB, "webhook": webhook}
        accepted = await self.api.post("/v1/jobs", json=body, headers=auth)
        assert accepted.status_code == 202, accepted.text
        return str(accepted.json()["id"])

    async def event(self, job_id: str, kind: str, tenant: str = "tenant_a") -> None:
        """An executor callback, signed as the worker signs it."""
        event: dict[str, Any] = {"tenant": tenant, "type": kind}
        if kind == "succeeded":
            event["result"] = {"output": "A river city."}
        if kind == "failed":
            event["error"] = {"kind": "CrewError", "message": "the crew gave up"}
        body = json.dumps(event).encode()
        headers = signed_headers(EXECUTOR_SECRET, f"evt-{job_id}-{kind}", int(time.time()), body)
        answer = await self.api.post(
            f"/v1/internal/jobs/{job_id}/events",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text

    async def job(self, job_id: str, auth: Any = AUTH_A) -> dict[str, Any]:
        answer = await self.api.get(f"/v1/jobs/{job_id}", headers=auth)
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job

    async def log(self, job_id: str) -> dict[str, Any]:
        answer = await self.api.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_A)
        assert answer.status_code == 200, answer.text
        log: dict[str, Any] = answer.json()
        return log

    async def redeliver(self, job_id: str, body: Any = None, auth: Any = AUTH_A) -> httpx.Response:
        path = f"/v1/jobs/{job_id}/deliveries/redeliver"
        if body is None:
            return await self.api.post(path, headers=auth)
        return await self.api.post(path, json=body, headers=auth)


def edge_app(tmp_path: Path, queue: SqliteQueue, **settings: Any) -> FastAPI:
    configured = Settings(
        **{
            "api_keys": {KEY_A: "tenant_a", KEY_B: "tenant_b"},
            "embed_model": "fake-bow",
            "prefect_api_url": "http://prefect.test/api",
            "executor_secret": EXECUTOR_SECRET,
            "secret_key": "k" * 40,
            "allow_loopback_webhooks": True,  # the receivers listen on loopback
            **settings,
        }
    )
    ports = sqlite_ports(tmp_path, orchestrator=InMemoryOrchestrator(), deliveries=queue)
    return create_app(configured, ports)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    queue_clock, clock = Clock(time.time()), Clock(time.time())
    queue = SqliteQueue(tmp_path / "queue.sqlite3", clock=queue_clock)
    app = edge_app(tmp_path, queue)
    app.state.redeliveries = Redeliveries(app.state.jobs, app.state.ports, clock=clock)
    await publish_shipped_crews(app.state.ports.kv)
    async with asgi_client(app) as api:
        yield Edge(app, api, queue, queue_clock, clock)


@pytest.fixture
def receiver() -> Any:
    with WebhookReceiver() as running:
        yield running


async def tenant_secret(edge: Edge) -> str:
    return str((await edge.api.get("/v1/webhooks/secret", headers=AUTH_A)).json()["secret"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = answer.json()
    assert problem["status"] == status
    return problem


# --- the delivery log -----------------------------------------------------------------


async def test_a_failing_receiver_is_logged_with_why_then_delivered_on_retry(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    receiver.status = 500
    job_id = await edge.submit({"url": receiver.url})
    await edge.event(job_id, "succeeded")
    assert await edge.drain() == 1
    (failed,) = (await edge.job(job_id))["deliveries"]
    assert failed["status_code"] == 500 and failed["error"] == "http_status"
    assert failed["detail"] == "HTTP 500 Internal Server Error"
    assert failed["outcome"] == "retrying" and failed["next_attempt_at"] is not None
    assert failed["event"] == "job.succeeded" and failed["attempt"] == 1
    assert failed["message_id"] == receiver.received[0]["headers"]["webhook-id"]

    receiver.status = 204
    assert await edge.drain() == 0, "the retry waits for its backoff"
    edge.queue_clock.advance(31)
    assert await edge.drain() == 1
    log = await edge.log(job_id)
    assert [(d["attempt"], d["outcome"]) for d in log["deliveries"]] == [
        (1, "retrying"),
        (2, "delivered"),
    ]
    ids = {hook["headers"]["webhook-id"] for hook in receiver.received}
    assert ids == {failed["message_id"]}, "one webhook-id on every attempt"
    assert log["sent"] == [
        {"message_id": failed["message_id"], "event": "job.succeeded", "sent_at": failed["at"]}
    ]


async def test_a_refused_connection_is_logged_as_such(edge: Edge) -> None:
    job_id = await edge.submit({"url": f"http://127.0.0.1:{closed_port()}/hooks"})
    await edge.event(job_id, "succeeded")
    await edge.drain()
    (logged,) = (await edge.job(job_id))["deliveries"]
    assert (logged["error"], logged["detail"]) == ("connection_refused", "connection refused")
    assert logged["status_code"] is None and logged["outcome"] == "retrying"


async def test_a_receiver_slower_than_the_deadline_is_logged_as_a_timeout(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    receiver.delay = 2.0
    job_id = await edge.submit({"url": receiver.url})
    await edge.event(job_id, "succeeded")
    await edge.drain()
    (logged,) = (await edge.log(job_id))["deliveries"]
    assert (logged["error"], logged["detail"]) == ("timeout", "no answer within 0.5 s")
    assert logged["outcome"] == "retrying" and logged["duration_ms"] >= 400


# --- redelivery -------------------------------------------------------------------------


async def test_a_redelivery_sends_the_same_webhook_id_signed_afresh(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    job_id = await edge.submit({"url": receiver.url})
    await edge.event(job_id, "succeeded")
    await edge.drain()
    edge.clock.advance(60)  # a fresh timestamp, still within the receivers' 5 minutes

    answer = await edge.redeliver(job_id)
    assert answer.status_code == 202, answer.text
    first = receiver.received[0]
    queued = answer.json()
    assert queued["message_id"] == first["headers"]["webhook-id"]
    assert (queued["job_id"], queued["event"]) == (job_id, "job.succeeded")
    assert await edge.drain() == 1

    again = receiver.received[1]
    assert again["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert again["body"] == first["body"], "the webhook as it was sent"
    stamps = [int(hook["headers"]["webhook-timestamp"]) for hook in (first, again)]
    assert stamps[1] - stamps[0] >= 60
    secret = await tenant_secret(edge)
    for hook in (first, again):  # raises unless the signature is the tenant's and fresh
        Webhook(secret).verify(hook["body"], hook["headers"])
    assert again["headers"]["webhook-signature"] != first["headers"]["webhook-signature"]

    logged = (await edge.log(job_id))["deliveries"]
    assert [(d["redelivery"], d["outcome"]) for d in logged] == [
        (False, "delivered"),
        (True, "delivered"),
    ]
    assert logged[1]["message_id"] == queued["message_id"] and logged[1]["attempt"] == 1


async def test_a_webhook_is_redelivered_by_its_id_or_its_event(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    job_id = await edge.submit({"url": receiver.url, "events": ["job.running", "job.succeeded"]})
    await edge.event(job_id, "running")
    await edge.event(job_id, "succeeded")
    await edge.drain()
    running, succeeded = (await edge.log(job_id))["sent"]
    assert (running["event"], succeeded["event"]) == ("job.running", "job.succeeded")

    by_id = await edge.redeliver(job_id, {"message_id": running["message_id"]})
    assert by_id.status_code == 202 and by_id.json()["event"] == "job.running"
    edge.clock.advance(REDELIVER_INTERVAL_SECONDS)
    by_event = await edge.redeliver(job_id, {"event": "job.succeeded"})
    assert by_event.json()["message_id"] == succeeded["message_id"]
    assert await edge.drain() == 2
    redelivered = [
        (json.loads(h["body"])["type"], h["headers"]["webhook-id"]) for h in receiver.received[2:]
    ]
    assert redelivered == [
        ("job.running", running["message_id"]),
        ("job.succeeded", succeeded["message_id"]),
    ]


async def test_redeliveries_of_one_job_are_spaced_out(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    job_id = await edge.submit({"url": receiver.url})
    await edge.event(job_id, "succeeded")
    await edge.drain()
    assert (await edge.redeliver(job_id)).status_code == 202
    edge.clock.advance(REDELIVER_INTERVAL_SECONDS - 3)
    refused = await edge.redeliver(job_id)
    assert_problem(refused, 429)
    assert refused.headers["Retry-After"] == "3"
    assert edge.queue.pending() == 1, "only the first was queued"
    edge.clock.advance(3)
    assert (await edge.redeliver(job_id)).status_code == 202


async def test_what_cannot_be_redelivered_is_a_problem_and_queues_nothing(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    hooked = await edge.submit({"url": receiver.url})
    unhooked = await edge.submit()
    assert_problem(await edge.redeliver(hooked), 409)  # nothing sent yet
    await edge.event(hooked, "succeeded")
    await edge.event(unhooked, "succeeded")
    await edge.drain()
    pending = edge.queue.pending()

    assert "no webhook" in assert_problem(await edge.redeliver(unhooked), 409)["detail"]
    assert_problem(await edge.redeliver(hooked, {"message_id": "msg_nope"}), 404)
    assert_problem(await edge.redeliver(hooked, {"event": "job.failed"}), 404)
    assert_problem(await edge.redeliver("job_" + "0" * 26), 404)
    assert_problem(await edge.redeliver("not-a-job"), 404)
    assert_problem(await edge.redeliver(hooked, auth=AUTH_B), 404), "another tenant's job"
    assert_problem(await edge.api.get(f"/v1/jobs/{hooked}/deliveries", headers=AUTH_B), 404)
    for body in (
        {"message_id": "a", "event": "job.succeeded"},
        {"event": "job.exploded"},
        {"message_id": ""},
        {"message_id": 7},
        {"url": "https://elsewhere.example.com/"},
        [],
    ):
        assert_problem(await edge.redeliver(hooked, body), 422)
    path = f"/v1/jobs/{hooked}/deliveries/redeliver"
    as_text = {**AUTH_A, "Content-Type": "text/plain"}
    assert_problem(await edge.api.post(path, content=b"{}", headers=as_text), 415)
    as_json = {**AUTH_A, "Content-Type": "application/json"}
    assert_problem(await edge.api.post(path, content=b"{nope", headers=as_json), 400)
    assert edge.queue.pending() == pending, "nothing was queued"
    assert len(receiver.received) == 1


# --- the tenant's default webhook -----------------------------------------------------


async def test_the_default_webhook_is_used_when_a_job_names_none(edge: Edge) -> None:
    with WebhookReceiver() as default, WebhookReceiver() as own:
        put = await edge.api.put("/v1/webhooks", json={"url": default.url}, headers=AUTH_A)
        assert put.status_code == 200, put.text
        assert put.json()["events"] == list(DEFAULT_WEBHOOK_EVENTS)
        assert (await edge.api.get("/v1/webhooks", headers=AUTH_A)).json() == put.json()

        defaulted = await edge.submit()
        named = await edge.submit({"url": own.url, "events": ["job.succeeded"]})
        job = await edge.job(defaulted)
        assert job["webhook"] == {"url": default.url, "events": put.json()["events"],
                                  "default": True}  # fmt: skip
        assert (await edge.job(named))["webhook"]["default"] is False
        for job_id in (defaulted, named):
            await edge.event(job_id, "succeeded")
        await edge.drain()
    assert [json.loads(h["body"])["data"]["id"] for h in default.received] == [defaulted]
    assert [json.loads(h["body"])["data"]["id"] for h in own.received] == [named]
    Webhook(await tenant_secret(edge)).verify(default.received[0]["body"],
                                              default.received[0]["headers"])  # fmt: skip


async def test_a_change_of_the_default_leaves_accepted_jobs_alone(edge: Edge) -> None:
    with WebhookReceiver() as first, WebhookReceiver() as second:
        await edge.api.put("/v1/webhooks", json={"url": first.url}, headers=AUTH_A)
        early = await edge.submit()
        await edge.api.put("/v1/webhooks", json={"url": second.url}, headers=AUTH_A)
        later = await edge.submit()
        deleted = await edge.api.delete("/v1/webhooks", headers=AUTH_A)
        assert deleted.status_code == 204
        last = await edge.submit()
        for job_id in (early, later, last):
            await edge.event(job_id, "succeeded")
        await edge.drain()
    assert [json.loads(h["body"])["data"]["id"] for h in first.received] == [early]
    assert [json.loads(h["body"])["data"]["id"] for h in second.received] == [later]
    assert (await edge.job(last))["webhook"] is None
    assert_problem(await edge.api.get("/v1/webhooks", headers=AUTH_A), 404)
    assert (await edge.api.delete("/v1/webhooks", headers=AUTH_A)).status_code == 204


async def test_default_webhooks_are_per_tenant(edge: Edge, receiver: WebhookReceiver) -> None:
    await edge.api.put("/v1/webhooks", json={"url": receiver.url}, headers=AUTH_A)
    assert_problem(await edge.api.get("/v1/webhooks", headers=AUTH_B), 404)
    assert (await edge.api.delete("/v1/webhooks", headers=AUTH_B)).status_code == 204
    theirs = await edge.submit(auth=AUTH_B)
    assert (await edge.job(theirs, auth=AUTH_B))["webhook"] is None
    await edge.event(theirs, "succeeded", tenant="tenant_b")
    await edge.drain()
    assert receiver.received == [], "tenant_a's default never receives tenant_b's jobs"
    assert (await edge.api.get("/v1/webhooks", headers=AUTH_A)).json()["url"] == receiver.url


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"url": "https://10.0.0.7/hooks"}, 422, "url"),
        ({"url": "https://169.254.169.254/latest"}, 422, "url"),
        ({"url": "http://hooks.example.com/x"}, 422, "url"),
        ({"url": "https://hooks.example.com", "events": ["job.exploded"]}, 422, "events"),
        ({"url": "https://hooks.example.com", "events": []}, 422, "events"),
        ({"url": "https://hooks.example.com", "secret": "x"}, 422, "secret"),
        ({"events": ["job.failed"]}, 422, "url"),
        ({"url": "https://" + "a" * 2100 + ".com"}, 422, "url"),
    ],
)
async def test_a_bad_default_is_a_problem_and_changes_nothing(
    edge: Edge, body: dict[str, Any], status: int, field: str
) -> None:
    kept = {"url": "https://hooks.example.com/edgecrew", "events": ["job.failed"]}
    assert (await edge.api.put("/v1/webhooks", json=kept, headers=AUTH_A)).status_code == 200
    problem = assert_problem(await edge.api.put("/v1/webhooks", json=body, headers=AUTH_A), status)
    assert any(field in error["loc"] for error in problem["errors"]), problem
    now = (await edge.api.get("/v1/webhooks", headers=AUTH_A)).json()
    assert {k: now[k] for k in kept} == kept


async def test_a_default_body_that_is_not_json_is_refused(edge: Edge) -> None:
    as_text = {**AUTH_A, "Content-Type": "text/plain"}
    answer = await edge.api.put("/v1/webhooks", content=b'{"url": "x"}', headers=as_text)
    assert_problem(answer, 415)
    assert_problem(await edge.api.get("/v1/webhooks", headers=AUTH_A), 404)


async def test_defaults_and_redelivery_need_the_signing_key(tmp_path: Path) -> None:
    app = edge_app(tmp_path, SqliteQueue(tmp_path / "q.sqlite3"), secret_key=None)
    async with asgi_client(app) as api:
        body = {"url": "https://hooks.example.com/x"}
        assert_problem(await api.put("/v1/webhooks", json=body, headers=AUTH_A), 503)
        job = "job_" + "0" * 26
        assert_problem(await api.post(f"/v1/jobs/{job}/deliveries/redeliver", headers=AUTH_A), 503)


async def test_an_ingestion_without_a_webhook_gets_the_default(
    edge: Edge, receiver: WebhookReceiver
) -> None:
    default = {"url": receiver.url, "events": ["job.failed", "job.cancelled"]}
    assert (await edge.api.put("/v1/webhooks", json=default, headers=AUTH_A)).status_code == 200
    body = {"documents": [{"id": "doc-1", "text": "Paris is on the Seine."}]}
    accepted = await edge.api.post("/v1/ingestions", json=body, headers=AUTH_A)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    job = await edge.job(job_id)
    assert job["webhook"] == {"url": receiver.url, "events": ["job.failed", "job.cancelled"],
                              "default": True}  # fmt: skip
    await edge.event(job_id, "failed")
    assert await edge.drain() == 1
    (hook,) = receiver.received
    delivered = json.loads(hook["body"])
    assert (delivered["type"], delivered["data"]["id"]) == ("job.failed", job_id)


# --- what the review found ------------------------------------------------------------

TOKEN = "RECEIVER-TOKEN-9f3a"  # a receiver's own secret, in its URL's query string


async def test_a_token_in_the_url_is_never_shown_sent_nor_logged(
    edge: Edge, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Receivers put tokens in query strings; edgecrew posts to the URL as given, and
    shows it elsewhere without its query (so nothing that shows a job gives the token)."""
    # The edge's levels (`edge.local.bootstrap`): INFO, httpx's WARNING (no line a
    # request); edgecrew's own lines down to DEBUG. The handler takes the last level set.
    caplog.set_level(logging.WARNING, logger="httpx")
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="edgecrew")
    tokened = f"{receiver.url}?token={TOKEN}"
    dead = f"http://127.0.0.1:{closed_port()}/hooks?token={TOKEN}"
    put = await edge.api.put("/v1/webhooks", json={"url": tokened}, headers=AUTH_A)
    assert put.status_code == 200, put.text
    assert put.json()["url"] == f"{receiver.url}?…"
    got = await edge.api.get("/v1/webhooks", headers=AUTH_A)
    assert got.json()["url"] == f"{receiver.url}?…"

    named = await edge.submit({"url": tokened, "events": ["job.running", "job.succeeded"]})
    defaulted = await edge.submit()
    unreachable = await edge.submit({"url": dead})
    receiver.status = 500  # the failure paths log too
    await edge.event(named, "running")
    for job_id in (named, defaulted, unreachable):
        await edge.event(job_id, "succeeded")
    await edge.drain()
    receiver.status = 204
    edge.queue_clock.advance(31)
    await edge.drain()
    edge.clock.advance(REDELIVER_INTERVAL_SECONDS)
    redelivered = await edge.redeliver(named)
    assert redelivered.status_code == 202
    await edge.drain()

    assert len(receiver.received) >= 5, "the token does not stop delivery"
    for hook in receiver.received:
        assert TOKEN.encode() not in hook["body"]
        data = json.loads(hook["body"])["data"]
        assert "webhook" not in data, "the payload keeps the shape it always had"
    shown = [put, got, redelivered]
    for job_id in (named, defaulted, unreachable):
        shown.append(await edge.api.get(f"/v1/jobs/{job_id}", headers=AUTH_A))
        shown.append(await edge.api.get(f"/v1/jobs/{job_id}/deliveries", headers=AUTH_A))
    shown.append(await edge.api.get("/v1/jobs", headers=AUTH_A))
    shown.append(await edge.api.post(f"/v1/jobs/{unreachable}/cancel", headers=AUTH_A))
    for answer in shown:
        assert TOKEN not in answer.text, answer.request.url
    job = await edge.job(named)
    assert job["webhook"]["url"] == f"{receiver.url}?…"
    assert (await edge.job(defaulted))["webhook"] == {
        "url": f"{receiver.url}?…", "events": list(DEFAULT_WEBHOOK_EVENTS),
        "default": True,
    }  # fmt: skip
    unreachable_log = (await edge.log(unreachable))["deliveries"]
    assert unreachable_log and unreachable_log[0]["error"] == "connection_refused"
    assert "unreachable" in caplog.text, "the failure was logged (without its URL)"
    assert TOKEN not in caplog.text


async def test_a_default_that_became_unusable_is_refused_at_submit(tmp_path: Path) -> None:
    """Checked as a named webhook is, when a job takes it: a default set while loopback
    was allowed (or one the SSRF guard refuses since) would otherwise be a 202 whose
    webhooks are never sent."""
    queue = SqliteQueue(tmp_path / "q.sqlite3")
    documents = {"documents": [{"id": "doc-1", "text": "Paris is on the Seine."}]}
    with WebhookReceiver() as receiver:
        before = edge_app(tmp_path, queue)
        await publish_shipped_crews(before.state.ports.kv)
        async with asgi_client(before) as api:
            put = await api.put("/v1/webhooks", json={"url": receiver.url}, headers=AUTH_A)
            assert put.status_code == 200
        after = edge_app(tmp_path, queue, allow_loopback_webhooks=False)
        async with asgi_client(after) as api:
            for path, body in (("/v1/jobs", JOB), ("/v1/ingestions", documents)):
                problem = assert_problem(await api.post(path, json=body, headers=AUTH_A), 422)
                assert "default webhook is not usable" in problem["detail"]
                assert "https" in problem["detail"], "and why"
                assert problem["errors"][0]["loc"] == ["body", "webhook"]
            own = {**JOB, "webhook": {"url": "https://hooks.example.com/x"}}
            assert (await api.post("/v1/jobs", json=own, headers=AUTH_A)).status_code == 202
            listed = (await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"]
            assert len(listed) == 1, "the refused submissions made no job"

    unsigned = edge_app(tmp_path, queue, secret_key=None)
    async with asgi_client(unsigned) as api:
        for path, body in (("/v1/jobs", JOB), ("/v1/ingestions", documents)):
            answer = await api.post(path, json=body, headers=AUTH_A)
            problem = assert_problem(answer, 503)
            assert "default webhook" in problem["detail"]
            assert "EDGECREW_SECRET_KEY" in problem["detail"]
            assert answer.headers["Retry-After"] == "60"
        assert len((await api.get("/v1/jobs", headers=AUTH_A)).json()["jobs"]) == 1


async def test_a_redelivery_the_queue_did_not_take_does_not_hold_the_slot(
    edge: Edge, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await edge.submit({"url": receiver.url})
    await edge.event(job_id, "succeeded")
    await edge.drain()

    async def down(body: Any, delay_seconds: int = 0) -> None:
        raise DependencyUnavailable("delivery queue", "the queue is down", 5)

    monkeypatch.setattr(edge.queue, "send", down)
    assert_problem(await edge.redeliver(job_id), 503)
    monkeypatch.undo()
    again = await edge.redeliver(job_id)
    assert again.status_code == 202, "not a 429: nothing was redelivered before"
    assert await edge.drain() == 1
    assert len(receiver.received) == 2


async def test_a_url_with_a_control_character_is_refused_as_a_default(edge: Edge) -> None:
    for url in ("https://hooks.example.com/\u0000", "https://hooks.example.com/a b"):
        answer = await edge.api.put("/v1/webhooks", json={"url": url}, headers=AUTH_A)
        problem = assert_problem(answer, 422)
        assert problem["errors"][0]["loc"] == ["body", "url"]
        named = await edge.api.post("/v1/jobs", json={**JOB, "webhook": {"url": url}},
                                    headers=AUTH_A)  # fmt: skip
        assert_problem(named, 422)
    assert_problem(await edge.api.get("/v1/webhooks", headers=AUTH_A), 404)
