"""A job's event log, as a page or a server-sent event stream (`GET /v1/jobs/{id}/events`).

Events live in the job's ledger record: each change that moves the job appends one, with
the change's revision as its id (`shared.jobs.apply_change`). A stream therefore reads
the ledger, not KV's copy: KV may show another location's change a minute late, the
ledger shows it at once, and it is the one place where the log and the state agree.

There is no push from the ledger, so a stream polls it. On Cloudflare each poll is a
Durable Object call, a subrequest, and an invocation may make 1,000 of them; so a
stream is bounded by `MAX_POLLS` and by `Settings.job_events_max_seconds`, then ends
with a `retry:` hint, and the client's reconnect (with `Last-Event-ID`) starts a new
invocation with a new budget. A change made in the same process (or isolate) wakes its
streams at once (`JobChanges`), so a poll interval of a second costs latency only when
the callback landed elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event

from edge.ports import DependencyUnavailable
from shared.jobs import JobStatus

#: Ledger reads one stream may make: under the 1,000 subrequests of a Worker invocation,
#: with room for what the request did before (its key check, rate limit, first read).
MAX_POLLS = 900
#: What a stream that ends before its job does tells the client to wait before it
#: reconnects (milliseconds; EventSource honours it, and so should other clients).
RETRY_MS = 1000
#: Events in one JSON page, unless `limit` asks for fewer.
PAGE_LIMIT = 100

Reader = Callable[[], Awaitable[dict[str, Any] | None]]


class JobChanges:
    """Wakes the streams of a job in this process when a change to it is applied.

    Off in the Worker (`edge/entry.py`): there the change is made by another request,
    and a stream woken from it would resume in that request's context, where its own
    response stream and ledger stub are I/O it may not touch. Streams there only poll.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._waiters: dict[tuple[str, str], int] = {}

    def notify(self, tenant: str, job_id: str) -> None:
        if not self.enabled:
            return
        event = self._events.pop((tenant, job_id), None)
        if event is not None:
            event.set()

    async def wait(self, tenant: str, job_id: str, seconds: float) -> None:
        """Return on the job's next change here, or after `seconds`."""
        if not self.enabled:
            await asyncio.sleep(seconds)
            return
        key = (tenant, job_id)
        event = self._events.setdefault(key, asyncio.Event())
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            # The last waiter of a job leaves nothing behind: 200 streams, 200 entries.
            left = self._waiters.pop(key) - 1
            if left:
                self._waiters[key] = left
            else:
                self._events.pop(key, None)


def events_after(record: Mapping[str, Any], after: int) -> list[dict[str, Any]]:
    """The job's events with ids above `after`, oldest first, as clients see them.

    A client resuming from before the oldest event kept has missed some: it gets one
    `job.snapshot` event instead (the job now, with the latest revision as its id), then
    the events that follow it, so it never reads a gap as "nothing happened".
    """
    if after < _trimmed(record):
        return [_snapshot(record)]
    return [_shown(e, record) for e in record.get("events") or [] if int(e["id"]) > after]


def ended(record: Mapping[str, Any], cursor: int) -> bool:
    """Whether a reader at `cursor` has had every event the job will ever have."""
    if not JobStatus(record["status"]).terminal:
        return False
    log = record.get("events") or []
    last = max([_trimmed(record), *(int(e["id"]) for e in log)])
    return cursor >= last


def page(record: Mapping[str, Any], after: int, limit: int) -> dict[str, Any]:
    """One JSON page: `next` is the `after` of the next page, None once nothing can follow."""
    events = events_after(record, after)[:limit]
    cursor = int(events[-1]["id"]) if events else after
    return {"events": events, "next": None if ended(record, cursor) else cursor}


async def stream(
    read: Reader,
    changes: Callable[[float], Awaitable[None]],
    first: Mapping[str, Any],
    after: int,
    *,
    poll_seconds: float,
    heartbeat_seconds: float,
    max_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """The job's events after `after` as SSE, until its terminal event (or the bounds).

    `read` reads the job from the ledger; `changes(seconds)` returns early when this
    process changed the job. `first` is the record the request already read (its 404
    was decided on it, so the stream starts from the same state).
    """
    record: Mapping[str, Any] | None = first
    cursor, polls = after, 0
    started = last_sent = clock()
    while record is not None:
        for event in events_after(record, cursor):
            yield _encode(event)
            cursor, last_sent = int(event["id"]), clock()
        if ended(record, cursor):
            return
        if polls >= MAX_POLLS or clock() - started >= max_seconds:
            yield format_sse_event(comment="reconnect with Last-Event-ID", retry=RETRY_MS)
            return
        await changes(min(poll_seconds, max(0.0, last_sent + heartbeat_seconds - clock())))
        if clock() - last_sent >= heartbeat_seconds:
            yield KEEPALIVE_COMMENT
            last_sent = clock()
        polls += 1
        try:
            record = await read()
        except DependencyUnavailable:  # the ledger did not answer: resume from a new request
            yield format_sse_event(comment="the job ledger did not answer", retry=RETRY_MS)
            return
    # The job expired (or was purged) while streamed: nothing more will come.


def _trimmed(record: Mapping[str, Any]) -> int:
    """The newest event id the log no longer has (a record from before the log has none
    of its history: all of it up to its revision)."""
    if "events" not in record:
        return int(record.get("revision") or 0)
    return int(record.get("events_trimmed") or 0)


def _encode(event: Mapping[str, Any]) -> bytes:
    return format_sse_event(
        event=str(event["type"]), id=str(event["id"]), data_str=json.dumps(event)
    )


def _shown(event: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    if event["type"] != "job.succeeded":
        return dict(event)
    # Not stored twice in the record: the result a succeeded job has is final.
    return {**event, "data": {**event["data"], "result": record.get("result")}}


def _snapshot(record: Mapping[str, Any]) -> dict[str, Any]:
    data = {"status": record["status"], "progress": record.get("progress")}
    if record["status"] == JobStatus.SUCCEEDED.value:
        data["result"] = record.get("result")
    if record.get("error") is not None:  # a failure's, or a cancel's reason
        data["error"] = record["error"]
    return {
        "id": int(record["revision"]),
        "type": "job.snapshot",
        "at": record["updated_at"],
        "data": data,
    }
