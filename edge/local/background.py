"""Local mode's stand-ins for Cloudflare Queues and Cron Triggers: two asyncio loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from edge.handlers import schedule_chores, task_handler
from edge.jobs.delivery import WebhookSender, next_attempt
from edge.local.sqlite_kv import SqliteKV
from edge.local.sqlite_queue import SqliteQueue

log = logging.getLogger("edgecrew.local")


def background_lifespan(
    queue: SqliteQueue, reconcile_every: float
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that delivers webhooks and reconciles jobs while the app runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sender = WebhookSender(app.state.jobs.store, app.state.settings, resolve_dns=True)
        handler = task_handler(app, sender)
        tasks = [
            asyncio.create_task(queue.consume(handler, next_attempt), name="queue"),
            asyncio.create_task(_reconcile_forever(app, reconcile_every), name="reconciler"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return lifespan


async def _reconcile_forever(app: FastAPI, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        counts: dict[str, int] = {}
        # Each in its own try: one bad pass must not stop the timer, nor the other.
        try:
            counts.update(await app.state.jobs.reconcile())
            kv = app.state.ports.kv
            if isinstance(kv, SqliteKV):  # reads hide expired rows; this frees their space
                kv.purge_expired()
        except Exception:
            log.exception("reconciler pass failed")
        await schedule_chores(app, counts)
        if counts.get("changed") or counts.get("schedules_removed") or counts.get("runs_adopted"):
            log.info("reconciler: %s", counts)
