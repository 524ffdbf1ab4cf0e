"""Cloudflare Queues semantics on SQLite: delayed messages, at-least-once, leases.

A claimed message becomes invisible for `lease_seconds`; if its handler dies, it shows up
again. The handler answers None (done: the message is deleted) or a delay in seconds
(send the next attempt then).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("edgecrew.queue")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at);
"""

Handler = Callable[[Mapping[str, Any]], Awaitable[int | None]]
#: Messages the local consumer handles at once. Cloudflare Queues runs consumer
#: invocations side by side too. Measured with hand-overs to Prefect on PostgreSQL:
#: docs/benchmarks.md.
CONSUMER_CONCURRENCY = 8


class SqliteQueue:
    """A DeliveryQueue in a SQLite file, plus the consumer loop that drains it."""

    def __init__(
        self,
        path: str | Path,
        *,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # As the KV and ledger files: a send survives the process dying, not the machine
        # losing power, and costs no fsync. With the default (an fsync a send) the send
        # was the largest part of a queued POST /v1/jobs on a busy disk.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._lease = lease_seconds
        self._clock = clock
        # Set by a send with no delay so the consumer loop runs now instead of at its
        # next poll: webhooks leave as soon as they are queued (Cloudflare Queues push).
        self._wake: asyncio.Event | None = None

    async def send(self, message: Mapping[str, object], *, delay_seconds: int = 0) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages (body, visible_at) VALUES (?, ?)",
                (json.dumps(dict(message)), self._clock() + delay_seconds),
            )
        if self._wake is not None and delay_seconds <= 0:
            self._wake.set()

    def claim(self, limit: int = 10) -> list[tuple[int, dict[str, Any]]]:
        """Due messages, leased to the caller."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT id, body FROM messages WHERE visible_at <= ? ORDER BY visible_at LIMIT ?",
                (now, limit),
            ).fetchall()
            self._db.executemany(
                "UPDATE messages SET visible_at = ? WHERE id = ?",
                [(now + self._lease, row[0]) for row in rows],
            )
            self._db.execute("COMMIT")
        return [(row[0], json.loads(row[1])) for row in rows]

    def settle(self, message_id: int, *, retry: tuple[dict[str, Any], int] | None) -> None:
        """Delete a handled message, or replace it with its next attempt after a delay."""
        with self._lock:
            if retry is None:
                self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            else:
                body, delay = retry
                self._db.execute(
                    "UPDATE messages SET body = ?, visible_at = ? WHERE id = ?",
                    (json.dumps(body), self._clock() + delay, message_id),
                )

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])

    async def drain_once(
        self, handler: Handler, next_attempt: Callable[[Mapping[str, Any]], dict[str, Any]]
    ) -> int:
        """Handle every due message once, one after another; returns how many."""
        claimed = self.claim()
        for message_id, body in claimed:
            await self._handle(message_id, body, handler, next_attempt)
        return len(claimed)

    async def consume(
        self,
        handler: Handler,
        next_attempt: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        poll_seconds: float = 0.5,
        concurrency: int = CONSUMER_CONCURRENCY,
    ) -> None:
        """Drain forever (until cancelled), up to `concurrency` messages at once: when woken
        by a send or a finished message, else every poll.

        One at a time, every message waits for the one before it: a burst of hand-overs
        to Prefect went at one round trip each, and one slow webhook receiver held up
        everyone's. Messages about one job still run in the order they were claimed (a
        lock per job), so its webhooks keep their order.
        """
        self._wake = wake = asyncio.Event()
        running: set[asyncio.Task[None]] = set()
        per_job: dict[str, tuple[asyncio.Lock, int]] = {}  # the lock, messages using it

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            wake.set()

        async def run(message_id: int, body: dict[str, Any]) -> None:
            key = str(body.get("job_id") or f"message:{message_id}")
            lock, users = per_job.get(key, (asyncio.Lock(), 0))
            per_job[key] = (lock, users + 1)
            try:
                async with lock:
                    await self._handle(message_id, body, handler, next_attempt)
            finally:
                lock, users = per_job[key]
                if users == 1:
                    del per_job[key]
                else:
                    per_job[key] = (lock, users - 1)

        try:
            while True:
                wake.clear()
                free = concurrency - len(running)
                claimed = self.claim(free) if free > 0 else []
                for message_id, body in claimed:
                    task = asyncio.create_task(run(message_id, body))
                    running.add(task)
                    task.add_done_callback(finished)
                if free > 0 and len(claimed) == free:
                    continue  # there may be more due: claim again while slots are free
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), poll_seconds)
        finally:  # cancelled: what was in hand comes back when its lease runs out
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _handle(
        self,
        message_id: int,
        body: dict[str, Any],
        handler: Handler,
        next_attempt: Callable[[Mapping[str, Any]], dict[str, Any]],
    ) -> None:
        try:
            delay = await handler(body)
        except Exception:  # the lease runs out and the message comes back
            log.exception("delivery handler failed; message %s will be retried", message_id)
            return
        self.settle(message_id, retry=None if delay is None else (next_attempt(body), delay))

    def close(self) -> None:
        self._db.close()
