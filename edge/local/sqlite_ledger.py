"""The job ledger on a SQLite file: each create or change is one `BEGIN IMMEDIATE`
transaction, so two writers (tasks of one edge, or two edge processes on one file)
never both act on what they read before the other wrote."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from edge.local.sqlite_kv import SqliteGuard
from shared.jobs import apply_change, ledger_create, ledger_live

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at);
"""

T = TypeVar("T")


class SqliteJobLedger:
    """A JobLedger in one SQLite file (or ":memory:"). Safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # As the KV file: a commit survives the process dying, not the machine losing
        # power, and costs no fsync (the full setting made job intake a third slower).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")  # another process's transaction
        self._db.executescript(_SCHEMA)
        self._guard = SqliteGuard("local job ledger")

    async def create(self, record: Mapping[str, Any], *, now: float) -> tuple[dict[str, Any], bool]:
        def create() -> tuple[dict[str, Any], bool]:
            stored, created = ledger_create(self._row(record["tenant"], record["id"]), record, now)
            if created:
                self._write(stored)
                # Expired jobs go when new ones come: the file never grows without bound.
                self._db.execute("DELETE FROM jobs WHERE expires_at <= ?", (now,))
            return stored, created

        return self._transaction(create)

    async def read(self, tenant: str, job_id: str, *, now: float) -> dict[str, Any] | None:
        with self._guard:
            return ledger_live(self._row(tenant, job_id), now)

    async def change(
        self, tenant: str, job_id: str, change: Mapping[str, Any], *, now: float
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        def apply() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            before = ledger_live(self._row(tenant, job_id), now)
            after = None if before is None else apply_change(before, change)
            if after is not None:
                self._write(after)
            return before, after

        return self._transaction(apply)

    def _row(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM jobs WHERE tenant = ? AND id = ?", (tenant, job_id)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _write(self, record: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (tenant, id, record, expires_at) VALUES (?, ?, ?, ?)",
            (record["tenant"], record["id"], json.dumps(record), float(record["expires_at"])),
        )

    def _transaction(self, body: Callable[[], T]) -> T:
        with self._guard:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = body()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
