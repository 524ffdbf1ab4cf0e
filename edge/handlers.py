"""What the Worker's `queue` and `scheduled` handlers do, kept out of `entry.py` so that
it runs and is tested under CPython too."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from fastapi import FastAPI

from edge.jobs.delivery import WebhookSender, next_attempt

log = logging.getLogger("edgecrew.handlers")


class QueueMessage(Protocol):
    """The part of a Cloudflare Queues message we use (body already plain Python)."""

    @property
    def body(self) -> Any: ...

    def ack(self) -> None: ...


async def deliver_webhooks(app: FastAPI, messages: Iterable[QueueMessage]) -> None:
    """Deliver each message; a retry is a new message with a delay, so every one is acked.

    A message whose handling raises is not acked: Queues redelivers it, and after
    `max_retries` it lands in the dead-letter queue.
    """
    sender = WebhookSender(app.state.jobs.store, app.state.settings)
    for message in messages:
        body = message.body
        delay = await sender.deliver(body)
        if delay is not None:
            await app.state.ports.deliveries.send(next_attempt(body), delay_seconds=delay)
        message.ack()


async def reconcile(app: FastAPI) -> dict[str, int]:
    """The cron trigger: one reconciler pass over every non-terminal job."""
    counts: dict[str, int] = await app.state.jobs.reconcile()
    log.info("reconciler: %s", counts)
    return counts
