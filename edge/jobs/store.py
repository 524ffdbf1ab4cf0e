"""Job records in the key-value store, per tenant, with an index for listing.

Keys (tenants match [A-Za-z0-9_-], so prefixes never collide):
- `job:{tenant}:{id}` the record (JSON), kept `ttl_seconds`;
- `jobs:{tenant}:{newest-first sort key}` an index entry whose KV metadata is the
  summary (id, crew, status, created_at), so a listing reads no records;
- `active:{tenant}:{id}` present while the job is not terminal: the reconciler's worklist;
- `deliveries:{tenant}:{id}` the webhook delivery log (the last attempts);
- `webhooks-sent:{tenant}:{id}:{event}` the last webhook of that event the job sent, as
  sent (at most five keys a job): what a redelivery sends again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from edge.jobs.records import SentWebhook
from edge.ports import KeyValueStore
from shared.jobs import WEBHOOK_EVENTS, JobStatus
from shared.timestamps import rfc3339

_MAX_MS = 10**13 - 1  # newest first: KV lists keys in ascending order
_LEDGER_ONLY = frozenset({"events", "events_trimmed"})


class JobStore:
    def __init__(self, kv: KeyValueStore, *, ttl_seconds: int) -> None:
        self._kv = kv
        self._ttl = ttl_seconds

    @property
    def kv(self) -> KeyValueStore:
        return self._kv

    @property
    def ttl_seconds(self) -> int:
        """How long a job's records live after their last write."""
        return self._ttl

    async def get(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        raw = await self._kv.get(f"job:{tenant}:{job_id}")
        return None if raw is None else dict(json.loads(raw))

    async def save(self, job: dict[str, Any], *, previous: dict[str, Any] | None) -> None:
        """Write the record; keep the index and the active list in step with its status.

        The record goes last: a record at some revision means its index entry and active
        mark were written too, so a writer that failed part-way is seen by the revision
        alone (`JobService._repair`).
        """
        tenant, job_id = job["tenant"], job["id"]
        if previous is None or previous["status"] != job["status"]:
            await self._index(job)
        # Without its event log: streams read events from the ledger (KV may be a minute
        # behind elsewhere), and a copy carrying 500 events would make every write larger.
        copy = {key: value for key, value in job.items() if key not in _LEDGER_ONLY}
        await self._kv.put(f"job:{tenant}:{job_id}", json.dumps(copy), ttl_seconds=self._ttl)

    async def _index(self, job: dict[str, Any]) -> None:
        tenant, job_id = job["tenant"], job["id"]
        await self._kv.put(
            job["index_key"],
            "",
            ttl_seconds=self._ttl,
            metadata={
                "id": job_id,
                "crew": job["crew"],
                "status": job["status"],
                "created_at": job["created_at"],
                **({"schedule_id": job["schedule_id"]} if job.get("schedule_id") else {}),
            },
        )
        active_key = f"active:{tenant}:{job_id}"
        if JobStatus(job["status"]).terminal:
            await self._kv.delete(active_key)
        else:
            # Same lifetime as the record: a job that expires unfinished leaves no trace.
            await self._kv.put(
                active_key, "", ttl_seconds=self._ttl, metadata={"status": job["status"]}
            )

    async def deliveries(self, tenant: str, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook delivery log, oldest first."""
        raw = await self._kv.get(f"deliveries:{tenant}:{job_id}")
        return [] if raw is None else list(json.loads(raw))

    async def log_delivery(
        self, tenant: str, job_id: str, entry: dict[str, Any], *, keep: int
    ) -> None:
        """Append to the delivery log. It has its own key so that logging a delivery can
        never write an older copy of the job record over a newer one."""
        log = [*await self.deliveries(tenant, job_id), entry][-keep:]
        await self._kv.put(f"deliveries:{tenant}:{job_id}", json.dumps(log), ttl_seconds=self._ttl)

    async def sent_webhooks(self, tenant: str, job_id: str) -> list[SentWebhook]:
        """The latest webhook of each event the job sent, in the order first sent."""
        found = await asyncio.gather(
            *(self._kv.get(_sent_key(tenant, job_id, event)) for event in WEBHOOK_EVENTS)
        )
        kept: list[SentWebhook] = [json.loads(raw) for raw in found if raw is not None]
        # Ties (one second, or a clock that stands still) in lifecycle order.
        return sorted(kept, key=lambda m: (m.get("at", 0.0), WEBHOOK_EVENTS.index(m["event"])))

    async def remember_webhook(
        self, tenant: str, job_id: str, message: Mapping[str, Any], *, at: float
    ) -> None:
        """Keep a webhook as it was sent (id, event, body), in place of the one of its
        event before it: bounded by the number of events (five), while a job sending a
        thousand `job.progress` webhooks keeps the last one.

        One key per event, so that two webhooks of one job delivered at once (two
        consumer invocations) never overwrite each other's entry.
        """
        kept: SentWebhook = {
            "message_id": message["message_id"],
            "event": message["event"],
            "sent_at": rfc3339(at, timespec="seconds"),
            "at": at,
            "payload": message["payload"],
        }
        key = _sent_key(tenant, job_id, kept["event"])
        known = await self._kv.get(key)
        if known is not None and json.loads(known).get("message_id") == kept["message_id"]:
            return  # the same webhook again (a repair resends it): already kept
        await self._kv.put(key, json.dumps(kept), ttl_seconds=self._ttl)

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: str | None,
        limit: int,
        cursor: str | None,
        schedule_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first. With a filter a page can hold fewer than `limit` jobs."""
        page = await self._kv.list(prefix=f"jobs:{tenant}:", limit=limit, cursor=cursor)
        summaries = [dict(key.metadata or {}) for key in page.keys]
        if status is not None:
            summaries = [s for s in summaries if s.get("status") == status]
        if schedule_id is not None:
            summaries = [s for s in summaries if s.get("schedule_id") == schedule_id]
        return summaries, page.cursor

    async def active(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, str]], str | None]:
        """(tenant, job id) of non-terminal jobs, across tenants, for the reconciler."""
        page = await self._kv.list(prefix="active:", limit=limit, cursor=cursor)
        pairs = [tuple(key.name.split(":", 2)[1:]) for key in page.keys]
        return [(tenant, job_id) for tenant, job_id in pairs], page.cursor


def index_key(tenant: str, created_ms: int, job_id: str) -> str:
    return f"jobs:{tenant}:{_MAX_MS - created_ms:013d}:{job_id}"


def _sent_key(tenant: str, job_id: str, event: str) -> str:
    return f"webhooks-sent:{tenant}:{job_id}:{event}"
