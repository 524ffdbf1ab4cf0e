"""The Worker's queue consumer and cron trigger through edge/entry.py's entrypoint, in Pyodide.

`Default.queue(batch)` and `Default.scheduled(controller)` are called as workerd calls them
(`_WorkerClient.handle`): the batch is a JS `QueueController` of `QueueMessage`s, the
controller a JS `ScheduledController` (run_adapters.mjs), and the SDK wraps them on the way
in. Prefect and webhook receivers are the FakeNetwork behind `fetch()`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from adapter_checks import Ctx, _WorkerClient, check, publish_summarize_crew
from pyodide.ffi import jsnull

from edge.jobs.reconciler import RECONCILE_CURSOR_KEY

KEY = "key-a-0123456789"  # tenant_a's API key in the app env
ACKED = {"batch": [], "messages": [["ack"]]}  # one message, acked, nothing retried


async def _worker(ctx: Ctx, **variables: str) -> tuple[_WorkerClient, Any]:
    """A fresh Worker over fresh bindings (plus `variables`), its catalog published."""
    env = ctx.helpers.appEnv()
    for name, value in variables.items():
        setattr(env, name, value)
    client = _WorkerClient(env)
    await publish_summarize_crew(client, ctx.helpers.executorSecret)
    return client, env


async def _submit(client: _WorkerClient, webhook: str | None = None) -> dict[str, Any]:
    job: dict[str, Any] = {"crew": "summarize", "inputs": {"text": "Long."}}
    if webhook:
        job["webhook"] = {"url": webhook}
    status, _, text = await client.call("POST", "/v1/jobs", job, key=KEY)
    assert status == 202, (status, text)
    accepted: dict[str, Any] = json.loads(text)
    return accepted


async def _job(client: _WorkerClient, job_id: str) -> dict[str, Any]:
    status, _, text = await client.call("GET", f"/v1/jobs/{job_id}", key=KEY)
    assert status == 200, (status, text)
    job: dict[str, Any] = json.loads(text)
    return job


def _sent(env: Any) -> list[list[Any]]:
    """What the Worker sent to its queue: [body] or [body, options] per message."""
    return [c["args"] for c in json.loads(env.WEBHOOKS.callsJson()) if c["method"] == "send"]


def _fetched(network: Any) -> list[list[str]]:
    return [c["args"] for c in json.loads(network.callsJson())]


async def _consume(client: _WorkerClient, env: Any, messages: int) -> dict[str, Any]:
    """Hand what was queued since the last batch to `Default.queue`; how it was settled."""
    batch = env.WEBHOOKS.nextBatch()
    assert batch.messages.length == messages, json.loads(env.WEBHOOKS.messagesJson())
    await client.handle("queue", batch)
    settled: dict[str, Any] = json.loads(batch.settledJson())
    return settled


@check("sdk")
async def check_the_queue_hands_a_deferred_job_to_prefect(ctx: Ctx) -> None:
    """Prefect unreachable: the job stays `submitting` with a submit message queued; the
    consumer retries it (delayed 5 s) while Prefect is down, and hands it over after."""
    network = ctx.helpers.network
    client, env = await _worker(ctx)
    network.unreachable("prefect.test")
    try:
        accepted = await _submit(client)
        assert accepted["status"] == "submitting", accepted
        submit = {"kind": "submit", "tenant": "tenant_a", "job_id": accepted["id"], "attempt": 1}
        assert _sent(env) == [[submit]], _sent(env)
        assert (settled := await _consume(client, env, 1)) == ACKED, settled
        assert _sent(env)[1:] == [[{**submit, "attempt": 2}, {"delaySeconds": 5}]], _sent(env)
        assert (await _job(client, accepted["id"]))["status"] == "submitting"
    finally:
        network.reachable("prefect.test")
    assert network.runOf(accepted["id"]) is jsnull, "no run while Prefect was unreachable"
    assert (settled := await _consume(client, env, 1)) == ACKED, settled
    assert len(_sent(env)) == 2, _sent(env)  # handed over: nothing queued again
    assert (await _job(client, accepted["id"]))["status"] == "queued"
    run = network.runOf(accepted["id"])
    assert run is not jsnull and run.state.type == "SCHEDULED", run


def _signature_ok(secret: str, headers: dict[str, str], body: str) -> bool:
    """Standard Webhooks, recomputed here rather than with shared/signing.py's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split(" "))


@check("sdk")
async def check_the_queue_delivers_signed_webhooks_over_fetch(ctx: Ctx) -> None:
    """A job's webhook leaves through fetch() with Standard Webhooks headers that verify
    against the tenant's secret, and is logged; a receiver's 500 queues the next attempt
    (same webhook-id) with a delay, and is logged too."""
    network = ctx.helpers.network
    client, env = await _worker(ctx)
    status, _, text = await client.call("GET", "/v1/webhooks/secret", key=KEY)
    assert status == 200, (status, text)
    secret = json.loads(text)["secret"]
    job = await _submit(client, webhook="https://hooks.test/edgecrew")
    event = {"tenant": "tenant_a", "type": "succeeded", "result": {"output": "Short."}}
    path = f"/v1/internal/jobs/{job['id']}/events"
    status, text = await client.signed(path, "done-1", ctx.helpers.executorSecret, event)
    assert status == 200, (status, text)
    [[message]] = _sent(env)
    assert (message["event"], message["url"]) == ("job.succeeded", "https://hooks.test/edgecrew")

    assert (settled := await _consume(client, env, 1)) == ACKED, settled
    hook = json.loads(network.hooksJson())[-1]
    assert hook["path"] == "/edgecrew", hook
    assert ["POST", "/edgecrew"] in _fetched(network)  # fetch() is the only way out of Pyodide
    headers = hook["headers"]
    assert headers["webhook-id"] == message["message_id"], headers
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300, headers
    assert _signature_ok(secret, headers, hook["body"]), headers
    assert not _signature_ok(secret, headers, hook["body"] + " "), "a changed body must fail"
    payload = json.loads(hook["body"])
    assert payload["type"] == "job.succeeded", payload
    assert (payload["data"]["id"], payload["data"]["status"]) == (job["id"], "succeeded"), payload
    deliveries = (await _job(client, job["id"]))["deliveries"]
    assert [(d["event"], d["attempt"], d["status_code"]) for d in deliveries] == [
        ("job.succeeded", 1, 204)
    ], deliveries
    assert len(_sent(env)) == 1, "delivered: nothing queued again"

    network.answerHooksAt("/failing", 500)
    other = await _submit(client, webhook="https://hooks.test/failing")
    status, _, text = await client.call("POST", f"/v1/jobs/{other['id']}/cancel", key=KEY)
    assert (status, json.loads(text)["status"]) == (202, "cancelled"), (status, text)
    [[cancelled]] = _sent(env)[1:]
    assert (settled := await _consume(client, env, 1)) == ACKED, settled
    [retry, options] = _sent(env)[-1]
    assert retry == {**cancelled, "attempt": 2}, retry
    assert 15 <= options["delaySeconds"] <= 30, options  # the first step: 30 s, equal jitter
    assert json.loads(network.hooksJson())[-1]["path"] == "/failing"
    deliveries = (await _job(client, other["id"]))["deliveries"]
    assert [(d["event"], d["attempt"], d["status_code"]) for d in deliveries] == [
        ("job.cancelled", 1, 500)
    ], deliveries
    why = {k: deliveries[0][k] for k in ("outcome", "error", "detail", "message_id")}
    assert why == {"outcome": "retrying", "error": "http_status",
                   "detail": "HTTP 500 Internal Server Error",
                   "message_id": cancelled["message_id"]}, deliveries  # fmt: skip

    # Redelivery of the first job's webhook: through the queue and fetch() again, with the
    # same webhook-id and body, signed afresh.
    path = f"/v1/jobs/{job['id']}/deliveries/redeliver"
    status, _, text = await client.call("POST", path, {}, key=KEY)
    assert status == 202 and json.loads(text)["message_id"] == message["message_id"], text
    [redelivery] = _sent(env)[-1]
    assert redelivery["redelivery"] is True and redelivery["payload"] == message["payload"]
    await _consume(client, env, 2)  # the second job's retry, then the redelivery
    first, again = [h for h in json.loads(network.hooksJson()) if h["path"] == "/edgecrew"]
    assert again["headers"]["webhook-id"] == message["message_id"], again
    assert first == hook, "sent twice in all: once, then redelivered"
    assert again["body"] == hook["body"] and _signature_ok(secret, again["headers"], again["body"])
    logged = (await _job(client, job["id"]))["deliveries"][-1]
    assert (logged["redelivery"], logged["outcome"]) == (True, "delivered"), logged


@check("sdk")
async def check_the_cron_pass_ends_jobs_whose_runs_crashed_or_vanished(ctx: Ctx) -> None:
    """One reconciler pass (Default.scheduled): a crashed run and a deleted one end their
    jobs, a waiting run is left alone; a cursor KV refuses is dropped, the pass starts
    over, and the finished pass removes the cursor key."""
    network = ctx.helpers.network
    # Every job is stale at once, so the pass looks at each (the default waits 60 s).
    client, env = await _worker(ctx, EDGECREW_STALE_AFTER_SECONDS="0")
    crashed = await _submit(client, webhook="https://hooks.test/crashed")
    vanished = await _submit(client)
    waiting = await _submit(client)
    network.moveRun(crashed["id"], "CRASHED")
    network.deleteRun(vanished["id"])
    await env.KV.put(RECONCILE_CURSOR_KEY, "cursor-kv-no-longer-accepts")
    fetched = len(_fetched(network))
    kv_calls = len(json.loads(env.KV.callsJson()))

    await client.handle("scheduled", ctx.helpers.scheduledController("*/5 * * * *"))

    async def record(job: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(await env.KV.get(f"job:tenant_a:{job['id']}"))
        return found

    ended = await record(crashed)
    assert (ended["status"], ended["error"]["kind"]) == ("failed", "Crashed"), ended
    ended = await record(vanished)
    assert (ended["status"], ended["error"]["kind"]) == ("failed", "RunLost"), ended
    assert (await record(waiting))["status"] == "queued"
    assert (await _job(client, crashed["id"]))["status"] == "failed"
    assert ["POST", "/api/flow_runs/filter"] in _fetched(network)[fetched:]  # one batched read
    [notice] = [body for body, *_ in _sent(env) if body.get("event") == "job.failed"]
    assert notice["job_id"] == crashed["id"], notice

    kv = json.loads(env.KV.callsJson())[kv_calls:]
    lists = [c["args"][0] for c in kv if c["method"] == "list"]
    assert lists[0].get("cursor") == "cursor-kv-no-longer-accepts", lists
    assert "cursor" not in lists[1] and lists[1]["prefix"] == "active:", lists
    assert {"method": "delete", "args": [RECONCILE_CURSOR_KEY]} in kv, kv
    assert (await env.KV.get(RECONCILE_CURSOR_KEY)) is jsnull
