"""Why each delivery attempt failed: real sockets (a closed port, a silent server, a
self-signed TLS server, a name that does not resolve) and what the log says of them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from edge.jobs import delivery_log, webhook_urls
from edge.jobs.delivery import DELIVERY_WINDOW_SECONDS, MAX_LOGGED_DELIVERIES, WebhookSender
from edge.jobs.store import JobStore
from edge.jobs.webhook_urls import HostDoesNotResolve, UnsafeWebhookUrl
from edge.local.sqlite_kv import SqliteKV
from edge.ports import DependencyUnavailable
from tests.conftest import Clock
from tests.support import WebhookReceiver
from tests.test_webhook_delivery import HOOK, SETTINGS, message

LOCAL = dataclasses.replace(SETTINGS, allow_loopback_webhooks=True)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> JobStore:
    return JobStore(SqliteKV(tmp_path / "kv.sqlite3", clock=clock), ttl_seconds=86400)


def sender(store: JobStore, clock: Clock, **options: Any) -> WebhookSender:
    """Local mode's sender (addresses resolved and pinned), with a short deadline."""
    options = {"resolve_dns": True, "timeout_seconds": 0.5, **options}
    return WebhookSender(store, LOCAL, clock=clock, **options)


async def last_logged(store: JobStore) -> dict[str, Any]:
    return (await store.deliveries("tenant_a", "job_1"))[-1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[int]:
    """A TLS server whose certificate no CA signed (made by openssl for the test)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass  # the client refuses the certificate: no request comes
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()


async def test_a_500_is_logged_with_its_status_and_retried(store: JobStore, clock: Clock) -> None:
    with WebhookReceiver(status=500) as receiver:
        delay = await sender(store, clock).deliver(message(url=receiver.url))
    assert delay is not None
    logged = await last_logged(store)
    assert logged["status_code"] == 500 and logged["error"] == "http_status"
    assert logged["detail"] == "HTTP 500 Internal Server Error"
    assert logged["outcome"] == "retrying"
    assert logged["next_attempt_at"] == delivery_log.rfc3339(clock.now + delay, timespec="seconds")
    assert logged["message_id"] == message()["message_id"] and logged["redelivery"] is False


async def test_a_refused_connection_is_named_and_retried(store: JobStore, clock: Clock) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hooks"
    assert await sender(store, clock).deliver(message(url=url)) is not None
    logged = await last_logged(store)
    assert (logged["error"], logged["detail"]) == ("connection_refused", "connection refused")
    assert logged["status_code"] is None and logged["outcome"] == "retrying"


async def test_a_receiver_that_never_answers_is_a_timeout(
    store: JobStore, clock: Clock, silent_server: int
) -> None:
    url = f"http://127.0.0.1:{silent_server}/hooks"
    assert await sender(store, clock).deliver(message(url=url)) is not None
    logged = await last_logged(store)
    assert (logged["error"], logged["detail"]) == ("timeout", "no answer within 0.5 s")
    assert 400 <= logged["duration_ms"] < 5000, "measured, and bounded by the deadline"


@pytest.fixture
def trickling_server() -> Iterator[int]:
    """Answers a byte of headers every 0.1 s for 3 s: no single read waits 0.5 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        conn = listener.accept()[0]
        with conn:
            conn.recv(65536)
            try:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 30:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                pass  # the client gave up: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    thread.join(timeout=10)
    listener.close()


async def test_a_receiver_trickling_past_the_deadline_is_cut_off(
    store: JobStore, clock: Clock, trickling_server: int
) -> None:
    """The deadline covers the whole exchange: httpx's own timeout is per read."""
    url = f"http://127.0.0.1:{trickling_server}/hooks"
    assert await sender(store, clock).deliver(message(url=url)) is not None
    logged = await last_logged(store)
    assert logged["error"] == "timeout" and logged["duration_ms"] < 2000


async def test_an_untrusted_certificate_is_a_tls_error(
    store: JobStore, clock: Clock, self_signed_server: int
) -> None:
    url = f"https://127.0.0.1:{self_signed_server}/hooks"
    assert await sender(store, clock).deliver(message(url=url)) is not None
    logged = await last_logged(store)
    assert logged["error"] == "tls_error" and logged["detail"].startswith("TLS certificate: ")


@pytest.mark.parametrize("resolve_dns", [True, False])
async def test_a_name_that_does_not_resolve_is_a_dns_failure_and_retried(
    store: JobStore, clock: Clock, resolve_dns: bool
) -> None:
    """`.invalid` never resolves (RFC 6761): by the SSRF guard's own lookup (local mode)
    or by httpx's (the Worker's path)."""
    url = "https://hooks.invalid/hooks"
    delay = await sender(store, clock, resolve_dns=resolve_dns).deliver(message(url=url))
    assert delay is not None, "DNS can come back: retried"
    logged = await last_logged(store)
    assert (logged["error"], logged["detail"]) == ("dns_failure", "the host name does not resolve")


async def test_an_unsafe_url_is_refused_and_given_up(store: JobStore, clock: Clock) -> None:
    assert await sender(store, clock).deliver(message(url="https://10.0.0.7/hooks")) is None
    logged = await last_logged(store)
    assert logged["error"] == "url_refused" and logged["outcome"] == "gave_up"
    assert logged["detail"] == "the URL is not allowed: 10.0.0.7 is not a public address"
    assert logged["next_attempt_at"] is None


@respx.mock
async def test_no_signing_key_is_logged_and_nothing_is_sent(store: JobStore, clock: Clock) -> None:
    route = respx.post(HOOK).respond(204)
    unsigned = WebhookSender(store, dataclasses.replace(SETTINGS, secret_key=None), clock=clock)
    assert await unsigned.deliver(message()) is None
    assert route.call_count == 0
    logged = await last_logged(store)
    assert (logged["error"], logged["outcome"]) == ("not_signed", "gave_up")


@respx.mock
async def test_a_410_stops_retries_and_says_so(store: JobStore, clock: Clock) -> None:
    respx.post(HOOK).respond(410)
    assert await WebhookSender(store, SETTINGS, clock=clock).deliver(message()) is None
    logged = await last_logged(store)
    assert logged["outcome"] == "gave_up" and logged["status_code"] == 410
    assert logged["detail"] == "HTTP 410 Gone: the receiver asked for no more"


@respx.mock
async def test_the_last_attempt_says_it_gave_up_after_how_many(
    store: JobStore, clock: Clock
) -> None:
    respx.post(HOOK).respond(503)
    clock.now = 1_800_000_000.0 + DELIVERY_WINDOW_SECONDS + 1
    assert await WebhookSender(store, SETTINGS, clock=clock).deliver(message(attempt=20)) is None
    logged = await last_logged(store)
    assert logged["outcome"] == "gave_up" and logged["attempt"] == 20
    assert logged["detail"] == "HTTP 503 Service Unavailable; gave up after 20 attempts in 26 h"


@respx.mock
async def test_a_redelivery_is_tried_once_and_marked(store: JobStore, clock: Clock) -> None:
    respx.post(HOOK).respond(502)
    redelivery = message(redelivery=True)
    assert await WebhookSender(store, SETTINGS, clock=clock).deliver(redelivery) is None
    logged = await last_logged(store)
    assert logged["redelivery"] is True and logged["outcome"] == "gave_up"
    assert logged["detail"] == "HTTP 502 Bad Gateway; a redelivery is tried once"
    assert await store.sent_webhooks("tenant_a", "job_1") == [], "not kept as a new webhook"


@respx.mock
async def test_the_log_keeps_the_last_attempts_only(store: JobStore, clock: Clock) -> None:
    respx.post(HOOK).respond(500)
    webhooks = WebhookSender(store, SETTINGS, clock=clock)
    for attempt in range(1, MAX_LOGGED_DELIVERIES + 6):
        await webhooks.deliver(message(attempt=attempt))
    logged = await store.deliveries("tenant_a", "job_1")
    assert [e["attempt"] for e in logged] == list(range(6, MAX_LOGGED_DELIVERIES + 6))


@respx.mock
async def test_the_first_attempt_of_each_webhook_is_kept_for_redelivery(
    store: JobStore, clock: Clock
) -> None:
    respx.post(HOOK).respond(500)
    webhooks = WebhookSender(store, SETTINGS, clock=clock)

    def progress(n: int) -> dict[str, Any]:
        payload = {"type": "job.progress", "timestamp": f"t{n}", "data": {"n": n}}
        return message(event="job.progress", message_id=f"msg_p{n}", payload=payload)

    await webhooks.deliver(message(event="job.running", message_id="msg_r"))
    for n in range(3):
        await webhooks.deliver(progress(n))
    await webhooks.deliver({**progress(2), "attempt": 2})  # a retry: nothing new to keep
    await webhooks.deliver(message())
    sent = await store.sent_webhooks("tenant_a", "job_1")
    assert [(m["event"], m["message_id"]) for m in sent] == [
        ("job.running", "msg_r"),
        ("job.progress", "msg_p2"),
        ("job.succeeded", message()["message_id"]),
    ], "the last webhook of each event, in the order they were first sent"
    assert sent[1]["payload"] == progress(2)["payload"]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("TypeError: Network connection lost."), "connection_failed"),
        (httpx.ConnectError("Error: SSL certificate error"), "tls_error"),
        (httpx.ConnectError("connection refused by peer"), "connection_refused"),
        (httpx.ConnectError("DNS lookup failed"), "dns_failure"),
        (httpx.ReadTimeout("AbortError"), "timeout"),
        (httpx.RemoteProtocolError("Server disconnected"), "network_error"),
        (httpx.ReadError("reset"), "network_error"),
        (httpx.InvalidURL("bad"), "invalid_url"),
    ],
)
def test_runtime_errors_are_classified_by_kind_never_quoted(error: Exception, kind: str) -> None:
    """The Worker's fetch() errors carry words, not OS errors (`FetchTransport`); the
    log says the kind in edgecrew's words and never repeats the runtime's text."""
    attempt = delivery_log.failed(error, 15)
    assert attempt.error == kind
    assert str(error) not in attempt.detail
    assert attempt.retryable is (kind != "invalid_url")


def test_the_guards_refusals_and_dns_failures_differ() -> None:
    assert not delivery_log.refused(UnsafeWebhookUrl("x is not a public address")).retryable
    assert delivery_log.refused(HostDoesNotResolve("'a.b' does not resolve")).retryable


# --- what the review found ------------------------------------------------------------


class WriteLimitedKV(SqliteKV):
    """Workers KV refusing writes to one key (its 429 for more than one write a second)."""

    async def put(self, key: str, value: str, **options: Any) -> None:  # type: ignore[override]
        if key.startswith("webhooks-sent:"):
            raise DependencyUnavailable("key-value store", "429 too many writes to one key", 1)
        await super().put(key, value, **options)


async def test_keeping_a_webhook_for_redelivery_never_blocks_its_delivery(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    limited = JobStore(WriteLimitedKV(tmp_path / "kv.sqlite3", clock=clock), ttl_seconds=86400)
    with WebhookReceiver() as receiver, caplog.at_level(logging.WARNING):
        delay = await sender(limited, clock).deliver(message(url=receiver.url))
    assert delay is None and len(receiver.received) == 1, "delivered all the same"
    logged = await last_logged(limited)
    assert logged["outcome"] == "delivered", "and logged"
    assert "not kept for redelivery" in caplog.text


class SlowReadKV(SqliteKV):
    """KV reads that take a while: two consumer invocations interleave."""

    async def get(self, key: str) -> str | None:
        value = await super().get(key)
        await asyncio.sleep(0.05)
        return value


@respx.mock
async def test_two_webhooks_of_a_job_delivered_at_once_are_both_kept(
    tmp_path: Path, clock: Clock
) -> None:
    respx.post(HOOK).respond(204)
    slow = JobStore(SlowReadKV(tmp_path / "kv.sqlite3", clock=clock), ttl_seconds=86400)
    first, second = (
        WebhookSender(slow, SETTINGS, clock=clock),
        WebhookSender(slow, SETTINGS, clock=clock),
    )
    await asyncio.gather(
        first.deliver(message(event="job.running", message_id="msg_r")),
        second.deliver(message()),
    )
    sent = await slow.sent_webhooks("tenant_a", "job_1")
    assert [m["event"] for m in sent] == ["job.running", "job.succeeded"]


async def test_webhooks_refused_before_any_post_are_not_kept_as_sent(
    store: JobStore, clock: Clock
) -> None:
    """Only webhooks edgecrew tried to POST are listed (and redeliverable): one the
    SSRF guard or a missing signing key stopped never went anywhere."""
    await WebhookSender(store, SETTINGS, clock=clock).deliver(message(url="https://10.0.0.7/x"))
    unsigned = dataclasses.replace(SETTINGS, secret_key=None)
    await WebhookSender(store, unsigned, clock=clock).deliver(message(message_id="msg_2"))
    assert [d["error"] for d in await store.deliveries("tenant_a", "job_1")] == [
        "url_refused",
        "not_signed",
    ]
    assert await store.sent_webhooks("tenant_a", "job_1") == []

    down = message(url=f"http://127.0.0.1:{closed_port()}/hooks", message_id="msg_3")
    await sender(store, clock).deliver(down)
    sent = await store.sent_webhooks("tenant_a", "job_1")
    assert [m["message_id"] for m in sent] == ["msg_3"], "a receiver that was down: kept"


@respx.mock
async def test_one_deadline_covers_every_address_of_the_host(
    store: JobStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each address fails slowly (a connect that times out); three of them take longer
    than the deadline, which is for the whole attempt, not per address."""

    async def three_addresses(host: str, port: int) -> list[Any]:
        return [(2, 1, 6, "", (f"93.184.216.{n}", port)) for n in (1, 2, 3)]

    finished: list[str] = []

    async def slow_connect(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        finished.append(request.url.host)
        raise httpx.ConnectTimeout("slow", request=request)

    monkeypatch.setattr(webhook_urls, "_resolve", three_addresses)
    respx.post(url__regex=r"https://93\.184\.216\.\d/hooks").mock(side_effect=slow_connect)
    checked = WebhookSender(store, SETTINGS, clock=clock, resolve_dns=True, timeout_seconds=0.5)
    assert await checked.deliver(message()) is not None, "retried later"
    assert finished == ["93.184.216.1"], "the deadline ran out on the second address"
    logged = await last_logged(store)
    assert (logged["error"], logged["detail"]) == ("timeout", "no answer within 0.5 s")
