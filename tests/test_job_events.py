"""`GET /v1/jobs/{id}/events`: the job's event log, streamed (SSE) and paged (JSON).

httpx's ASGI transport returns a response only once the app has finished it, so the live
streams here are read with a small ASGI driver (`open_stream`) that hands over each
chunk as the app sends it, and tells the app when the client has gone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import respx
from fastapi import FastAPI

import shared.jobs
from edge.adapters.prefect import PrefectOrchestrator
from edge.app import create_app
from edge.jobs import events as job_events
from edge.local.sqlite_kv import SqliteKV
from tests.conftest import AUTH_A, AUTH_B, asgi_client
from tests.doubles.catalog import publish_shipped_crews
from tests.doubles.queues import RecordingQueue
from tests.support import sqlite_ports
from tests.test_jobs_api import JOB, PREFECT, FakePrefect, jobs_settings, post_event

WAIT = 5.0  # seconds a test waits for an event before it fails


@pytest.fixture
def prefect() -> Iterator[FakePrefect]:
    with respx.mock(assert_all_called=False) as router:
        yield FakePrefect(router)


AppFactory = Callable[..., FastAPI]


@pytest.fixture
async def make_app(tmp_path: Path, prefect: FakePrefect) -> AppFactory:
    kv = SqliteKV(tmp_path / "kv.sqlite3")
    await publish_shipped_crews(kv)

    def build(**stream_settings: Any) -> FastAPI:
        settings = jobs_settings(**stream_settings)
        ports = sqlite_ports(
            tmp_path, kv=kv, orchestrator=PrefectOrchestrator(PREFECT, backoff=0.001),
            deliveries=RecordingQueue(),
        )  # fmt: skip
        return create_app(settings, ports)

    return build


class Stream:
    """The client side of one streamed response: SSE messages as they arrive."""

    def __init__(self, status: int, headers: dict[str, str], chunks: asyncio.Queue[bytes | None]):
        self.status, self.headers, self._chunks = status, headers, chunks
        self._buffer, self.ended = "", False

    async def next(self) -> dict[str, str] | None:
        """The next message (`{"comment": ...}` for a comment), None once the stream ended."""
        while "\n\n" not in self._buffer:
            chunk = await asyncio.wait_for(self._chunks.get(), WAIT)
            if chunk is None:
                self.ended = True
                return None
            self._buffer += chunk.decode()
        block, self._buffer = self._buffer.split("\n\n", 1)
        message: dict[str, str] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            message[field or "comment"] = value.removeprefix(" ")
        return message

    async def event(self) -> dict[str, Any]:
        """The next event (comments skipped), parsed, with its SSE fields checked."""
        while (message := await self.next()) is not None:
            if "data" in message:
                event: dict[str, Any] = json.loads(message["data"])
                assert (message["event"], message["id"]) == (event["type"], str(event["id"]))
                return event
        raise AssertionError("the stream ended")

    async def rest(self) -> list[dict[str, Any]]:
        """Every event until the stream ends."""
        found = []
        while (message := await self.next()) is not None:
            if "data" in message:
                found.append(json.loads(message["data"]))
        return found


@asynccontextmanager
async def open_stream(app: FastAPI, url: str, headers: dict[str, str]) -> AsyncIterator[Stream]:
    """GET `url` from the app in-process, reading its body as it is sent."""
    parts = urlsplit(url)
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    gone = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.set_result(message)
        elif message["type"] == "http.response.body":
            chunks.put_nowait(message.get("body", b""))
            if not message.get("more_body"):
                chunks.put_nowait(None)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": parts.path, "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234), "server": ("edge.test", 80),
    }  # fmt: skip
    task = asyncio.create_task(app(scope, receive, send))
    start = await asyncio.wait_for(started, WAIT)
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    try:
        yield Stream(start["status"], response_headers, chunks)
    finally:
        gone.set()
        await asyncio.wait_for(task, WAIT)


@pytest.fixture
async def api(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app()) as client:
        yield client


async def submitted(client: httpx.AsyncClient) -> str:
    accepted = await client.post("/v1/jobs", json=JOB, headers=AUTH_A)
    assert accepted.json()["status"] == "queued"
    return str(accepted.json()["id"])


PROGRESS = {"completed_tasks": 1, "total_tasks": 2, "current_task": "write"}


@pytest.mark.parametrize("wake", [True, False], ids=["woken-in-process", "polling-only"])
async def test_a_connected_stream_gets_each_event_as_it_happens_and_ends_after_the_last(
    make_app: AppFactory, wake: bool
) -> None:
    # Woken: a poll interval far longer than the test proves the change itself wakes it.
    app = make_app(job_events_poll_seconds=60 if wake else 0.05)
    app.state.jobs.changes.enabled = wake
    async with asgi_client(app) as client:
        job_id = await submitted(client)
        async with open_stream(app, f"/v1/jobs/{job_id}/events", AUTH_A) as stream:
            assert stream.status == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            queued = await stream.event()
            assert (queued["type"], queued["data"]["status"]) == ("job.queued", "queued")
            await post_event(client, job_id, {"type": "running"}, "e1")
            assert (await stream.event())["type"] == "job.running"
            await post_event(client, job_id, {"type": "progress", "progress": PROGRESS}, "e2")
            progress = await stream.event()
            assert progress["data"]["progress"] == PROGRESS
            await post_event(client, job_id, {"type": "succeeded", "result": {"r": 1}}, "e3")
            done = await stream.event()
            assert done["type"] == "job.succeeded" and done["data"]["result"] == {"r": 1}
            assert await stream.rest() == [] and stream.ended, "ends after the terminal event"
    ids = [queued["id"], progress["id"], done["id"]]
    assert ids == sorted(set(ids))


async def test_a_resumed_stream_loses_nothing_and_repeats_nothing(
    make_app: AppFactory,
) -> None:
    app = make_app(job_events_poll_seconds=0.05)
    async with asgi_client(app) as client:
        job_id = await submitted(client)
        await post_event(client, job_id, {"type": "running"}, "e1")
        url = f"/v1/jobs/{job_id}/events"
        async with open_stream(app, url, AUTH_A) as stream:
            first = [await stream.event(), await stream.event()]
        # Dropped here: what happens meanwhile must arrive on the reconnect.
        await post_event(client, job_id, {"type": "progress", "progress": PROGRESS}, "e2")
        failed = {"type": "failed", "error": {"kind": "K", "message": "m"}}
        await post_event(client, job_id, failed, "e3")
        resume = {**AUTH_A, "Last-Event-ID": str(first[-1]["id"])}
        async with open_stream(app, f"{url}?after=0", resume) as stream:  # the header wins
            rest = await stream.rest()
        log = (await client.get(url, headers={**AUTH_A, "Accept": "application/json"})).json()
    assert [e["type"] for e in first] == ["job.queued", "job.running"]
    assert [e["type"] for e in rest] == ["job.progress", "job.failed"]
    assert rest[-1]["data"]["error"] == {"kind": "K", "message": "m"}
    assert first + rest == log["events"] and log["next"] is None


async def test_after_in_the_query_resumes_like_last_event_id(api: httpx.AsyncClient) -> None:
    job_id = await submitted(api)
    await post_event(api, job_id, {"type": "running"}, "e1")
    await post_event(api, job_id, {"type": "cancelled"}, "e2")
    url = f"/v1/jobs/{job_id}/events"
    everything = await api.get(url, headers=AUTH_A)  # a finished job: the stream just ends
    assert everything.headers["content-type"].startswith("text/event-stream")
    ids = [int(line[4:]) for line in everything.text.splitlines() if line.startswith("id: ")]
    assert len(ids) == 3
    after = await api.get(f"{url}?after={ids[0]}", headers=AUTH_A)
    assert [int(line[4:]) for line in after.text.splitlines() if line.startswith("id: ")] == ids[1:]


async def test_the_json_page_pages_through_the_log(api: httpx.AsyncClient) -> None:
    job_id = await submitted(api)
    json_only = {**AUTH_A, "Accept": "application/json"}
    url = f"/v1/jobs/{job_id}/events"
    page = (await api.get(url, headers=json_only)).json()
    assert [e["type"] for e in page["events"]] == ["job.queued"]
    assert page["next"] == page["events"][0]["id"], "not ended: poll again from here"
    await post_event(api, job_id, {"type": "running"}, "e1")
    for n in (1, 2):
        progress = {**PROGRESS, "completed_tasks": n}
        await post_event(api, job_id, {"type": "progress", "progress": progress}, f"p{n}")
    await post_event(api, job_id, {"type": "succeeded", "result": "done"}, "e2")
    seen, cursor = [], 0
    while cursor is not None:
        page = (await api.get(f"{url}?after={cursor}&limit=2", headers=json_only)).json()
        assert len(page["events"]) <= 2
        seen += page["events"]
        cursor = page["next"]
    assert [e["type"] for e in seen] == [
        "job.queued", "job.running", "job.progress", "job.progress", "job.succeeded"
    ]  # fmt: skip
    assert seen[-1]["data"]["result"] == "done"
    job = (await api.get(f"/v1/jobs/{job_id}", headers=AUTH_A)).json()
    assert "events" not in job and "events_trimmed" not in job, "the job's JSON is unchanged"


async def test_another_tenants_job_and_unknown_ids_are_404(api: httpx.AsyncClient) -> None:
    job_id = await submitted(api)
    for headers in (AUTH_B, {**AUTH_B, "Accept": "application/json"}):
        response = await api.get(f"/v1/jobs/{job_id}/events", headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    unknown = "job_" + "0" * 26
    assert (await api.get(f"/v1/jobs/{unknown}/events", headers=AUTH_A)).status_code == 404
    assert (await api.get(f"/v1/jobs/{job_id}/events")).status_code == 401


@pytest.mark.parametrize(
    ("query", "header", "loc"),
    [("?after=99", None, ["query", "after"]), ("", "99", ["header", "Last-Event-ID"]),
     ("?after=-1", None, ["query", "after"]), ("", "abc", ["header", "Last-Event-ID"])],
)  # fmt: skip
async def test_a_cursor_past_the_log_or_malformed_is_422(
    api: httpx.AsyncClient, query: str, header: str | None, loc: list[str]
) -> None:
    job_id = await submitted(api)
    headers = AUTH_A if header is None else {**AUTH_A, "Last-Event-ID": header}
    response = await api.get(f"/v1/jobs/{job_id}/events{query}", headers=headers)
    assert response.status_code == 422
    assert [e["loc"][:2] for e in response.json()["errors"]] == [loc]


async def test_a_quiet_stream_sends_heartbeats(make_app: AppFactory) -> None:
    app = make_app(job_events_poll_seconds=0.05, job_events_heartbeat_seconds=0.1)
    async with asgi_client(app) as client:
        job_id = await submitted(client)
        async with open_stream(app, f"/v1/jobs/{job_id}/events", AUTH_A) as stream:
            assert (await stream.event())["type"] == "job.queued"
            assert await stream.next() == {"comment": "ping"}
            assert await stream.next() == {"comment": "ping"}


@pytest.mark.parametrize("bound", ["seconds", "polls"])
async def test_a_stream_ends_at_its_bounds_with_a_retry_hint(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    if bound == "polls":
        monkeypatch.setattr(job_events, "MAX_POLLS", 3)
    app = make_app(
        job_events_poll_seconds=0.05, job_events_max_seconds=1 if bound == "seconds" else 60
    )
    async with asgi_client(app) as client:
        job_id = await submitted(client)
        async with open_stream(app, f"/v1/jobs/{job_id}/events", AUTH_A) as stream:
            assert (await stream.event())["type"] == "job.queued"
            last = await stream.next()
            assert last is not None and last["retry"] == str(job_events.RETRY_MS)
            assert await stream.next() is None


async def test_a_resume_from_before_the_kept_window_gets_a_snapshot(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.jobs, "EVENTS_KEPT", 3)
    app = make_app()
    async with asgi_client(app) as api:
        job_id = await submitted(api)
        await post_event(api, job_id, {"type": "running"}, "e1")
        for n in (1, 2, 3):
            progress = {**PROGRESS, "completed_tasks": n, "total_tasks": 4}
            await post_event(api, job_id, {"type": "progress", "progress": progress}, f"p{n}")
        record = await app.state.jobs.current("tenant_a", job_id)
        kept, trimmed = record["events"], record["events_trimmed"]
        json_only = {**AUTH_A, "Accept": "application/json"}
        url = f"/v1/jobs/{job_id}/events"
        stale = (await api.get(f"{url}?after={trimmed - 1}", headers=json_only)).json()
        inside = (await api.get(f"{url}?after={trimmed}", headers=json_only)).json()
    assert [e["data"]["progress"]["completed_tasks"] for e in kept] == [1, 2, 3]
    (snapshot,) = stale["events"]
    assert snapshot["type"] == "job.snapshot" and snapshot["id"] == kept[-1]["id"]
    assert snapshot["data"] == {"status": "running", "progress": kept[-1]["data"]["progress"]}
    assert stale["next"] == snapshot["id"], "the stream goes on from the snapshot"
    assert inside["events"] == kept, "a resume inside the window is exact"


def test_only_changes_that_move_a_job_log_an_event() -> None:
    job = {"status": "running", "revision": 4, "events": [], "progress": None}
    base = {"at": "2027-01-01T00:00:00Z", "expires_at": 1.0}
    versioned = shared.jobs.apply_change(
        job, {**base, "event": {"type": "running", "crew_version": "2"}}
    )
    assert versioned is not None and versioned["events"] == [], "a version is not an event"
    flagged = shared.jobs.apply_change(job, {**base, "set": {"handover_unsure": True}})
    assert flagged is not None and flagged["events"] == []
    moved = shared.jobs.apply_change(job, {**base, "event": {"type": "cancelled"}})
    assert moved is not None and [(e["id"], e["type"]) for e in moved["events"]] == [
        (5, "job.cancelled")
    ]


async def test_a_reader_that_has_every_event_of_an_ended_job_gets_204(
    api: httpx.AsyncClient,
) -> None:
    """A browser's EventSource reconnects after a stream that closes with 200; 204 is
    what stops it once the terminal event has been seen."""
    job_id = await submitted(api)
    await post_event(api, job_id, {"type": "succeeded", "result": {"r": 1}}, "e1")
    as_json = {**AUTH_A, "Accept": "application/json"}
    log = (await api.get(f"/v1/jobs/{job_id}/events", headers=as_json)).json()
    last = log["events"][-1]["id"]
    again = await api.get(
        f"/v1/jobs/{job_id}/events", headers={**AUTH_A, "Last-Event-ID": str(last)}
    )
    assert again.status_code == 204 and again.content == b""
    earlier = await api.get(
        f"/v1/jobs/{job_id}/events", headers={**AUTH_A, "Last-Event-ID": str(last - 1)}
    )
    assert earlier.status_code == 200 and "job.succeeded" in earlier.text


def test_a_long_task_text_is_cut_in_the_log_not_copied_five_hundred_times() -> None:
    job = {"id": "j", "tenant": "t", "status": "running", "progress": None, "events": [],
           "revision": 3, "updated_at": "t0"}  # fmt: skip
    step = {"completed_tasks": 1, "total_tasks": 3, "current_task": "x" * 100_000}
    change = {"at": "t1", "expires_at": 1e12, "event": {"type": "progress", "progress": step}}
    after = shared.jobs.apply_change(job, change)
    assert after is not None
    assert after["progress"]["current_task"] == "x" * 100_000, "the job keeps it whole"
    assert len(after["events"][-1]["data"]["progress"]["current_task"]) == 256
