"""Schedule records in the key-value store, per tenant, with an index for listing.

Keys (tenants match [A-Za-z0-9_-], so prefixes never collide):
- `schedule:{tenant}:{id}` the record (JSON), kept until the schedule is deleted; then a
  tombstone (`deleted_at`) for a day, so a run that started before the delete is told
  the schedule is gone (410), not that it is not visible yet (KV takes up to a minute
  to show a new key elsewhere, and the executor waits that out on a 404);
- `schedules:{tenant}:{newest-first sort key}` an index entry whose KV metadata is the
  summary (id, crew, paused, created_at), so a listing reads no records.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from edge.ports import KeyValueStore, KVKey

_MAX_MS = 10**13 - 1  # newest first: KV lists keys in ascending order
TOMBSTONE_SECONDS = 86400


class ScheduleStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def get(self, tenant: str, schedule_id: str) -> dict[str, Any] | None:
        """The schedule, or its tombstone (a record with `deleted_at`) for a day after."""
        raw = await self._kv.get(_record_key(tenant, schedule_id))
        return None if raw is None else dict(json.loads(raw))

    async def save(self, schedule: dict[str, Any]) -> None:
        """Write the record and its index entry (the record last: it is what reads find)."""
        await self._kv.put(
            schedule["index_key"],
            "",
            metadata={key: schedule[key] for key in ("id", "crew", "paused", "created_at")},
        )
        await self._kv.put(_record_key(schedule["tenant"], schedule["id"]), json.dumps(schedule))

    async def bury(self, schedule: dict[str, Any]) -> None:
        """Out of the listing; the record becomes a tombstone for a day.

        Every index entry of the schedule goes, not only the record's: two creates under
        one key that both missed the replay (at once, or KV not showing the first yet)
        each wrote an entry of their own, and only the last one's is in the record.
        """
        for key in await self._index_entries(schedule["tenant"], schedule["id"]):
            await self._kv.delete(key)
        await self._kv.delete(schedule["index_key"])
        await self._kv.put(
            _record_key(schedule["tenant"], schedule["id"]),
            json.dumps(schedule),
            ttl_seconds=TOMBSTONE_SECONDS,
        )

    async def list_schedules(
        self, tenant: str, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; a schedule once per page (see `bury` for how it can be twice)."""
        page = await self._kv.list(prefix=f"schedules:{tenant}:", limit=limit, cursor=cursor)
        summaries: dict[object, dict[str, Any]] = {}
        for key in page.keys:
            summary = dict(key.metadata or {})
            summaries.setdefault(summary.get("id"), summary)
        return list(summaries.values()), page.cursor

    async def forget_entry(self, schedule: dict[str, Any]) -> None:
        """Drop the index entry of a record that could not be written."""
        await self._kv.delete(schedule["index_key"])

    async def count(self, tenant: str, *, up_to: int) -> int:
        """How many live schedules the tenant has, or `up_to` if it has that many or
        more (deleted ones are out of the index: `bury`); a schedule with two index
        entries counts once. One KV list call per thousand entries, until `up_to`."""
        ids: set[object] = set()
        async for keys in self._index_pages(tenant):
            ids.update((key.metadata or {}).get("id") for key in keys)
            if len(ids) >= up_to:
                break
        return min(len(ids), up_to)

    async def _index_entries(self, tenant: str, schedule_id: str) -> list[str]:
        """The tenant's index entries of one schedule."""
        found: list[str] = []
        async for keys in self._index_pages(tenant):
            found += [k.name for k in keys if (k.metadata or {}).get("id") == schedule_id]
        return found

    async def _index_pages(self, tenant: str) -> AsyncIterator[list[KVKey]]:
        """Every page of the tenant's index (a thousand entries per KV list call)."""
        cursor: str | None = None
        while True:
            page = await self._kv.list(prefix=f"schedules:{tenant}:", cursor=cursor)
            yield page.keys
            if page.cursor is None or page.cursor == cursor:
                return
            cursor = page.cursor


def index_key(tenant: str, created_ms: int, schedule_id: str) -> str:
    return f"schedules:{tenant}:{_MAX_MS - created_ms:013d}:{schedule_id}"


def _record_key(tenant: str, schedule_id: str) -> str:
    return f"schedule:{tenant}:{schedule_id}"
