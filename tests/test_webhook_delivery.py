"""Client webhook delivery (respx as the client's endpoint) and the SQLite queue."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from standardwebhooks import Webhook

from edge.jobs import webhook_urls
from edge.jobs.delivery import (
    DELIVERY_WINDOW_SECONDS,
    MAX_RETRY_SECONDS,
    WebhookSender,
    next_attempt,
    retry_delay,
)
from edge.jobs.store import JobStore, index_key
from edge.local.sqlite_kv import SqliteKV
from edge.local.sqlite_queue import SqliteQueue
from edge.settings import Settings
from shared.signing import derived_secret
from tests.conftest import Clock

HOOK = "https://app.example.com/hooks"
SETTINGS = Settings(api_keys={}, secret_key="m" * 40)


def message(**changes: Any) -> dict[str, Any]:
    base = {
        "tenant": "tenant_a",
        "job_id": "job_1",
        "event": "job.succeeded",
        "url": HOOK,
        "message_id": "msg_job_1_job.succeeded_t",
        "attempt": 1,
        "first_attempt_at": 1_800_000_000.0,
        "payload": {"type": "job.succeeded", "timestamp": "t", "data": {"id": "job_1"}},
    }
    return {**base, **changes}


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> JobStore:
    jobs = JobStore(SqliteKV(tmp_path / "kv.sqlite3", clock=clock), ttl_seconds=86400)
    job = {
        "id": "job_1",
        "tenant": "tenant_a",
        "crew": "research",
        "status": "succeeded",
        "created_at": "t",
        "index_key": index_key("tenant_a", 1, "job_1"),
    }
    await jobs.save(job, previous=None)
    return jobs


def sender(store: JobStore, clock: Clock, **settings: Any) -> WebhookSender:
    configured = Settings(**{**SETTINGS.__dict__, **settings}) if settings else SETTINGS
    return WebhookSender(store, configured, clock=clock)


def test_retry_delays_grow_then_cap_with_jitter() -> None:
    assert retry_delay(1, lambda lo, hi: hi) == 30
    assert retry_delay(2, lambda lo, hi: hi) == 60
    assert retry_delay(1, lambda lo, hi: lo) == 15
    assert retry_delay(30, lambda lo, hi: hi) == MAX_RETRY_SECONDS
    delays = [retry_delay(n) for n in range(1, 25)]
    assert sum(delays) > 24 * 3600 * 0.5 and max(delays) <= MAX_RETRY_SECONDS


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 30])
def test_each_wait_is_between_half_the_ceiling_and_all_of_it(attempt: int) -> None:
    """As docs/api.md says ("equal jitter"), whatever the random draw."""
    ceiling = min(30 * 2 ** (attempt - 1), MAX_RETRY_SECONDS)
    for _ in range(200):
        assert ceiling // 2 <= retry_delay(attempt) <= ceiling


@respx.mock
async def test_success_is_signed_verifiable_and_logged(store: JobStore, clock: Clock) -> None:
    route = respx.post(HOOK).respond(204)
    clock.now = time.time()  # the reference verifier checks against the real clock
    assert await sender(store, clock).deliver(message()) is None
    request = route.calls[0].request
    secret = derived_secret("m" * 40, "webhooks:tenant_a")
    headers = dict(request.headers)
    Webhook(secret).verify(request.content, headers)  # raises if the signature is wrong
    assert headers["webhook-id"] == "msg_job_1_job.succeeded_t"
    assert json.loads(request.content)["type"] == "job.succeeded"
    (logged,) = await store.deliveries("tenant_a", "job_1")
    assert logged == {
        "event": "job.succeeded",
        "attempt": 1,
        "status_code": 204,
        "at": logged["at"],
        "message_id": "msg_job_1_job.succeeded_t",
        "redelivery": False,
        "outcome": "delivered",
        "error": None,
        "detail": "HTTP 204 No Content",
        "duration_ms": logged["duration_ms"],
        "next_attempt_at": None,
    }
    assert 0 <= logged["duration_ms"] < 10_000
    job = await store.get("tenant_a", "job_1")
    assert job is not None and job["status"] == "succeeded", "the record itself is untouched"


@respx.mock
@pytest.mark.parametrize(
    ("reply", "retried"),
    [
        (httpx.Response(500), True),
        (httpx.Response(429), True),
        (httpx.Response(302, headers={"Location": "http://169.254.169.254/"}), True),
        (httpx.ConnectTimeout("slow"), True),
        (httpx.Response(410), False),
        (httpx.Response(200), False),
    ],
)
async def test_outcomes(store: JobStore, clock: Clock, reply: Any, retried: bool) -> None:
    route = respx.post(HOOK).mock(side_effect=[reply])
    delay = await sender(store, clock).deliver(message())
    assert (delay is not None) is retried
    assert route.call_count == 1, "redirects are never followed"


@respx.mock
async def test_retries_stop_after_the_delivery_window(store: JobStore, clock: Clock) -> None:
    respx.post(HOOK).respond(503)
    clock.now = 1_800_000_000.0 + DELIVERY_WINDOW_SECONDS + 1
    assert await sender(store, clock).deliver(message(attempt=20)) is None


@respx.mock
async def test_unsafe_urls_are_not_called_at_delivery(store: JobStore, clock: Clock) -> None:
    route = respx.post("https://10.0.0.7/hooks").respond(200)
    delay = await sender(store, clock).deliver(message(url="https://10.0.0.7/hooks"))
    assert route.call_count == 0 and delay is None, "never sent, and not retried either"
    (logged,) = await store.deliveries("tenant_a", "job_1")
    assert logged["status_code"] is None


@respx.mock
async def test_delivery_connects_to_the_address_it_checked(
    store: JobStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to a public address when checked, to a private
    one a moment later. The request must go to the address that was checked."""
    answers = iter(["93.184.216.34", "10.0.0.7"])

    async def rebinding(host: str, port: int) -> list[Any]:
        return [(2, 1, 6, "", (next(answers), port))]

    monkeypatch.setattr(webhook_urls, "_resolve", rebinding)
    route = respx.post("https://93.184.216.34/hooks").respond(204)
    private = respx.post("https://10.0.0.7/hooks").respond(204)
    named = respx.post(HOOK).respond(204)
    checked = WebhookSender(store, SETTINGS, clock=clock, resolve_dns=True)

    assert await checked.deliver(message()) is None
    assert route.call_count == 1 and private.call_count == 0 and named.call_count == 0
    request = route.calls.last.request
    assert request.headers["host"] == "app.example.com", "the server still sees its name"
    assert request.extensions["sni_hostname"] == "app.example.com", "and TLS checks it"
    assert request.headers["webhook-signature"].startswith("v1,")


@respx.mock
async def test_an_unreachable_address_falls_through_to_the_hosts_next_one(
    store: JobStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def two_addresses(host: str, port: int) -> list[Any]:
        return [
            (10, 1, 6, "", ("2606:4700::1111", port, 0, 0)),
            (2, 1, 6, "", ("93.184.216.34", port)),
        ]

    monkeypatch.setattr(webhook_urls, "_resolve", two_addresses)
    ipv6 = respx.post("https://[2606:4700::1111]/hooks").mock(
        side_effect=httpx.ConnectError("down")
    )
    ipv4 = respx.post("https://93.184.216.34/hooks").respond(204)
    checked = WebhookSender(store, SETTINGS, clock=clock, resolve_dns=True)

    assert await checked.deliver(message()) is None, "delivered"
    assert ipv6.call_count == 1 and ipv4.call_count == 1
    assert ipv4.calls.last.request.headers["host"] == "app.example.com"

    ipv4.mock(side_effect=httpx.ConnectTimeout("down too"))
    assert await checked.deliver(message()) is not None, "none answered: retried later"


async def test_pinned_deliveries_never_share_a_connection_between_hosts(
    store: JobStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two webhook hosts on one IP: with a pooled connection the second host's request
    would ride the first host's connection (over TLS: its certificate never checked).
    A real server on loopback counts the TCP connections."""
    seen: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive on the server side

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers["Host"], self.client_address[1]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    async def loopback(host: str, port: int) -> list[Any]:
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(webhook_urls, "_resolve", loopback)
    local = dataclasses.replace(SETTINGS, allow_loopback_webhooks=True)
    checked = WebhookSender(store, local, clock=clock, resolve_dns=True)
    try:
        # Plain http goes to loopback addresses only: two spellings of "a host" here,
        # both resolved (by the stub) to the one IP the server listens on.
        for host in ("[::1]", "127.0.0.1", "[::1]"):
            url = f"http://{host}:{port}/hooks"
            assert await checked.deliver(message(url=url)) is None
    finally:
        server.shutdown()
        server.server_close()
    hosts = [f"[::1]:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"]
    assert [host for host, _ in seen] == hosts
    assert len({client_port for _, client_port in seen}) == 3, "a new connection each time"


async def test_queue_delays_retries_and_redelivers_after_a_crash(
    tmp_path: Path, clock: Clock
) -> None:
    queue = SqliteQueue(tmp_path / "q.sqlite3", lease_seconds=60, clock=clock)
    await queue.send({"n": 1})
    await queue.send({"n": 2}, delay_seconds=30)
    seen: list[dict[str, Any]] = []

    async def handler(body: dict[str, Any]) -> int | None:
        seen.append(body)
        if body["n"] == 1 and body.get("attempt", 1) == 1:
            return 10  # ask for another attempt in 10 s
        return None

    def bump(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "attempt": body.get("attempt", 1) + 1}

    assert await queue.drain_once(handler, bump) == 1
    clock.advance(10)
    assert await queue.drain_once(handler, bump) == 1
    assert seen[-1] == {"n": 1, "attempt": 2}
    clock.advance(20)
    assert await queue.drain_once(handler, bump) == 1 and seen[-1] == {"n": 2}
    assert queue.pending() == 0

    await queue.send({"n": 3})

    async def crash(body: dict[str, Any]) -> int | None:
        raise RuntimeError("handler died")

    assert await queue.drain_once(crash, bump) == 1
    assert await queue.drain_once(handler, bump) == 0, "leased, invisible"
    clock.advance(61)
    assert await queue.drain_once(handler, bump) == 1 and queue.pending() == 0


async def test_a_send_wakes_the_consumer_before_its_next_poll(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.sqlite3")
    delivered = asyncio.Event()

    async def handler(body: dict[str, Any]) -> int | None:
        delivered.set()
        return None

    consumer = asyncio.create_task(queue.consume(handler, dict, poll_seconds=3600))
    try:
        await asyncio.sleep(0.05)  # the consumer found nothing and now waits
        await queue.send({"n": 1})
        # Without the wake-up this would wait for the hour-long poll.
        await asyncio.wait_for(delivered.wait(), timeout=10)
    finally:
        consumer.cancel()
    assert queue.pending() == 0


def test_next_attempt_keeps_the_webhook_id() -> None:
    later = next_attempt(message())
    assert later["attempt"] == 2 and later["message_id"] == message()["message_id"]
