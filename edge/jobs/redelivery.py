"""A job's delivery log, and sending one of its webhooks again on request.

A redelivery sends the webhook exactly as it was first sent (its body, and its
`webhook-id`, so a receiver that had it can tell), with a fresh timestamp and signature,
to the job's webhook URL, through the delivery queue like any webhook. It is tried once:
whoever asked sees the outcome in the log, marked `redelivery`, and can ask again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from edge.jobs.records import SentWebhook, redelivery_message
from edge.jobs.service import JobService
from edge.ports import DependencyUnavailable, KeyValueStore, Ports
from shared.timestamps import rfc3339

log = logging.getLogger("edgecrew.webhooks")

#: One redelivery per job per this many seconds: enough to retry by hand while fixing a
#: receiver, not a way to flood it (the tenant's request rate limit bounds the rest).
REDELIVER_INTERVAL_SECONDS = 10
_MARK_TTL_SECONDS = 60  # Workers KV's shortest expiry; the mark holds its own time


class NothingToRedeliver(Exception):
    """The job has no webhook, or has sent none yet."""


class UnknownWebhook(Exception):
    """The job sent no webhook by that id (or of that event), or no longer keeps it."""


class RedeliveredTooSoon(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry in {retry_after} s")
        self.retry_after = retry_after


class Redeliveries:
    def __init__(
        self, jobs: JobService, ports: Ports, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._jobs = jobs
        self._ports = ports
        self._clock = clock

    @property
    def _kv(self) -> KeyValueStore:
        return self._ports.kv

    async def log(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The job's delivery attempts and the webhooks it can redeliver; None: no job."""
        if await self._job(tenant, job_id) is None:
            return None
        sent = await self._jobs.store.sent_webhooks(tenant, job_id)
        return {
            "deliveries": await self._jobs.store.deliveries(tenant, job_id),
            "sent": [{k: m[k] for k in ("message_id", "event", "sent_at")} for m in sent],
        }

    async def redeliver(
        self, tenant: str, job_id: str, *, message_id: str | None, event: str | None
    ) -> dict[str, Any] | None:
        """Queue the webhook again; what was queued, or None when there is no such job."""
        job = await self._job(tenant, job_id)
        if job is None:
            return None
        webhook = job.get("webhook")
        if not webhook:
            raise NothingToRedeliver("the job has no webhook")
        sent = await self._jobs.store.sent_webhooks(tenant, job_id)
        chosen = _choose(sent, message_id=message_id, event=event)
        if self._ports.deliveries is None:
            raise DependencyUnavailable("delivery queue", "no queue is configured", 60)
        now = self._clock()
        await self._check_slot(tenant, job_id, now)
        await self._ports.deliveries.send(redelivery_message(job, chosen, webhook["url"], now=now))
        await self._take_slot(tenant, job_id, now)  # only once queued: a failed send holds none
        return {
            "job_id": job_id,
            "message_id": chosen["message_id"],
            "event": chosen["event"],
            "queued_at": rfc3339(now),
        }

    async def _job(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """The job (its webhook is fixed at submit, so KV's copy will do), else the
        ledger's record: a job just made elsewhere may not show in KV here yet."""
        return await self._jobs.store.get(tenant, job_id) or await self._jobs.current(
            tenant, job_id
        )

    async def _check_slot(self, tenant: str, job_id: str, now: float) -> None:
        """RedeliveredTooSoon within the interval of the last redelivery of this job.

        A best effort: KV is eventually consistent, so two edges far apart can each
        allow one (and so can two requests at once, both checking before either marks).
        It keeps a receiver from being hammered through one job; the tenant's request
        rate limit bounds everything else.
        """
        last = _float(await self._kv.get(_slot_key(tenant, job_id)))
        if last is not None and 0 <= now - last < REDELIVER_INTERVAL_SECONDS:
            raise RedeliveredTooSoon(max(1, math.ceil(REDELIVER_INTERVAL_SECONDS - (now - last))))

    async def _take_slot(self, tenant: str, job_id: str, now: float) -> None:
        """Mark the redelivery just queued. It is queued whatever happens here: a mark KV
        refused is logged, and the next redelivery is not held back by it."""
        try:
            await self._kv.put(_slot_key(tenant, job_id), repr(now), ttl_seconds=_MARK_TTL_SECONDS)
        except DependencyUnavailable as exc:
            log.warning("redelivery of %s queued but not marked: %s", job_id, exc)


def _slot_key(tenant: str, job_id: str) -> str:
    return f"redelivered:{tenant}:{job_id}"


def _choose(sent: list[SentWebhook], *, message_id: str | None, event: str | None) -> SentWebhook:
    """The webhook asked for: by id, the last of an event, or the last one sent."""
    if message_id is not None:
        found = [m for m in sent if m["message_id"] == message_id]
        if not found:
            raise UnknownWebhook(f"the job sent no webhook {message_id!r} (or no longer keeps it)")
        return found[-1]
    if event is not None:
        found = [m for m in sent if m["event"] == event]
        if not found:
            raise UnknownWebhook(f"the job has sent no {event} webhook")
        return found[-1]
    if not sent:
        raise NothingToRedeliver("the job has sent no webhook yet")
    return sent[-1]


def _float(raw: str | None) -> float | None:
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None
