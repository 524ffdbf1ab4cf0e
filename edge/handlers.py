"""What the Worker's `queue` and `scheduled` handlers do, kept out of `entry.py` so that
it runs and is tested under CPython too."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from fastapi import FastAPI

from edge.jobs.delivery import WebhookSender, next_attempt
from edge.jobs.reconciler import RECONCILE_BUDGET
from edge.jobs.records import is_submit
from edge.schedules.adoption import ADOPT_BUDGET
from edge.schedules.service import SWEEP_BUDGET

log = logging.getLogger("edgecrew.handlers")


class QueueMessage(Protocol):
    """The part of a Cloudflare Queues message we use (body already plain Python)."""

    @property
    def body(self) -> Any: ...

    def ack(self) -> None: ...


async def handle_batch(app: FastAPI, messages: Iterable[QueueMessage]) -> None:
    """Handle each message; a retry is a new message with a delay, so every one is acked.

    A message whose handling raises is not acked: Queues redelivers it, and after
    `max_retries` it lands in the dead-letter queue.
    """
    handle = task_handler(app, _sender(app))
    for message in messages:
        body = message.body
        delay = await handle(body)
        if delay is not None:
            await app.state.ports.deliveries.send(next_attempt(body), delay_seconds=delay)
        message.ack()


def _sender(app: FastAPI) -> WebhookSender:
    """One sender (and so one HTTP connection pool) per isolate, not one per batch."""
    sender: WebhookSender | None = getattr(app.state, "webhook_sender", None)
    if sender is None:
        sender = app.state.webhook_sender = WebhookSender(
            app.state.jobs.store, app.state.settings, transport=app.state.ports.http_transport
        )
    return sender


def task_handler(
    app: FastAPI, sender: WebhookSender
) -> Callable[[Mapping[str, Any]], Awaitable[int | None]]:
    """One handler for the queue's two kinds of message: job hand-overs and webhooks."""

    async def handle(body: Mapping[str, Any]) -> int | None:
        if is_submit(body):
            if await app.state.jobs.submit_pending(body["tenant"], body["job_id"]):
                return None
            delay: int = min(5 * 2 ** (int(body["attempt"]) - 1), 300)  # Prefect struggles
            return delay
        return await sender.deliver(body)

    return handle


async def reconcile(app: FastAPI) -> dict[str, int]:
    """The cron trigger: one reconciler pass over every non-terminal job, then a sweep of
    deleted schedules' deployments and a look for schedule runs that never registered,
    each within its share of the invocation's subrequests, and the last two even when
    the pass failed (that failure is raised after)."""
    counts: dict[str, int] = {}
    try:
        budget = RECONCILE_BUDGET - SWEEP_BUDGET - ADOPT_BUDGET
        counts.update(await app.state.jobs.reconcile(budget=budget))
    finally:
        await schedule_chores(app, counts)
    log.info("reconciler: %s", counts)
    return counts


async def schedule_chores(app: FastAPI, counts: dict[str, int]) -> None:
    """The schedules' part of a reconciler pass, each in its own `try` (logged; the next
    pass does it again): one failing must not skip the other, nor the jobs' pass."""
    schedules = app.state.schedules
    try:
        counts["schedules_removed"] = await schedules.sweep()
    except Exception:
        log.exception("schedule sweep failed")
    try:
        counts["runs_adopted"] = await schedules.adopt_lost_runs()
    except Exception:
        log.exception("looking for schedule runs without a job failed")
