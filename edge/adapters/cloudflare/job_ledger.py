"""The job ledger on Cloudflare: one Durable Object per job.

Workers KV has no compare-and-set, so two requests (or a callback and the reconciler)
that read one job and write it back can undo each other. A Durable Object is the one
place a job's changes meet: workerd runs one object's calls one at a time, and each call
here reads, applies and writes without awaiting (the object's own SQLite storage is
synchronous), so no other call can come between. Why one object per job, not per tenant:
a job's id comes from its tenant and idempotency key, so the two requests that race on a
key meet in one object anyway, while one object per tenant would put every change of a
busy tenant's jobs through a single object (one thread, one location: Cloudflare's soft
limit is about 1,000 requests a second per object, and a job makes ~5-10 changes).

`JobLedgerCell` is what the object does (the Durable Object class itself is in
`edge/entry.py`, where `workers` can be imported); `DurableObjectJobLedger` is the
JobLedger port over the namespace binding. Only strings and numbers cross between them
(JSON text), so nothing depends on how RPC converts richer values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge.adapters.cloudflare._js import JsException, to_py
from edge.ports import DependencyUnavailable
from shared.jobs import apply_change, ledger_create, ledger_live

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS job (k INTEGER PRIMARY KEY CHECK (k = 1), record TEXT NOT NULL)"
)


class JobLedgerCell:
    """One job's record in its Durable Object's SQLite storage (`ctx.storage.sql`).

    The table is made by the first `create`, not before: a read of a job that does not
    exist (any client can ask for any id) must not leave storage behind in a new object.
    """

    def __init__(self, sql: Any) -> None:
        self._sql = sql

    def create(self, record_json: str, now: float) -> str:
        stored, created = ledger_create(self._row(), json.loads(record_json), float(now))
        if created:
            self._sql.exec(_SCHEMA)
            self._write(stored)
        return json.dumps({"record": stored, "created": created})

    def read(self, now: float) -> str:
        return json.dumps({"record": ledger_live(self._row(), float(now))})

    def change(self, change_json: str, now: float) -> str:
        before = ledger_live(self._row(), float(now))
        after = None if before is None else apply_change(before, json.loads(change_json))
        if after is not None:
            self._write(after)
        return json.dumps({"before": before, "after": after})

    def expires_at(self) -> float | None:
        row = self._row()
        return None if row is None else float(row.get("expires_at") or 0)

    def _row(self) -> dict[str, Any] | None:
        tables = self._rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'job'")
        if not tables:  # a new object, or one whose storage its alarm deleted
            return None
        rows = self._rows("SELECT record FROM job WHERE k = 1")
        return dict(json.loads(rows[0]["record"])) if rows else None

    def _rows(self, query: str) -> list[dict[str, Any]]:
        return list(to_py(self._sql.exec(query).toArray()))

    def _write(self, record: Mapping[str, Any]) -> None:
        # UTF-8 as it is (not \u escapes): a row holds at most 2 MB, and a result in
        # Chinese or emoji would take 6-12 bytes a character escaped.
        text = json.dumps(record, ensure_ascii=False)
        self._sql.exec("INSERT OR REPLACE INTO job (k, record) VALUES (1, ?)", text)


class DurableObjectJobLedger:
    """JobLedger over the `JOBS` Durable Object namespace binding."""

    def __init__(self, namespace: Any) -> None:
        self._namespace = namespace

    async def create(self, record: Mapping[str, Any], *, now: float) -> tuple[dict[str, Any], bool]:
        answer = await self._call(record["tenant"], record["id"], "create", json.dumps(record), now)
        return dict(answer["record"]), bool(answer["created"])

    async def read(self, tenant: str, job_id: str, *, now: float) -> dict[str, Any] | None:
        record = (await self._call(tenant, job_id, "read", now))["record"]
        return None if record is None else dict(record)

    async def change(
        self, tenant: str, job_id: str, change: Mapping[str, Any], *, now: float
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        answer = await self._call(tenant, job_id, "change", json.dumps(change), now)
        return answer["before"], answer["after"]

    async def _call(self, tenant: str, job_id: str, method: str, *args: Any) -> dict[str, Any]:
        # One object per job, found by name: the same name always reaches the same object.
        stub = self._namespace.get(self._namespace.idFromName(f"{tenant}/{job_id}"))
        try:
            answer = to_py(await getattr(stub, method)(*args))
        except JsException as exc:  # the object was reset, overloaded, or unreachable
            raise DependencyUnavailable("job ledger", f"{method} failed: {exc}", 1) from exc
        return dict(json.loads(answer))
