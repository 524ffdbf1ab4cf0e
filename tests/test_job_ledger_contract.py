"""One contract for both job ledgers: SQLite (local) and a Durable Object per job
(Cloudflare, its object logic `JobLedgerCell` over a SQLite-backed storage double).
tests/pyodide runs the same object class in real Pyodide through the Workers SDK."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge.adapters.cloudflare import DurableObjectJobLedger
from edge.local.sqlite_ledger import SqliteJobLedger
from edge.ports import JobLedger
from tests.doubles.cloudflare_bindings import FakeDurableObjectNamespace
from tests.ledger_contract import NOW, SCENARIOS, Scenario, change, job


@pytest.fixture(params=["sqlite", "durable-object"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> JobLedger:
    if request.param == "sqlite":
        return SqliteJobLedger(tmp_path / "jobs.sqlite3")
    return DurableObjectJobLedger(FakeDurableObjectNamespace())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_the_contract(ledger: JobLedger, scenario: Scenario) -> None:
    await scenario(ledger)


async def test_one_object_per_job_on_cloudflare() -> None:
    namespace = FakeDurableObjectNamespace()
    ledger = DurableObjectJobLedger(namespace)
    await ledger.create(job(), now=NOW)
    await ledger.create(job("job_2"), now=NOW)
    await ledger.change("tenant_a", "job_1", change({"type": "queued"}), now=NOW)
    assert sorted(namespace.objects) == ["tenant_a/job_1", "tenant_a/job_2"]
    assert [m for name, m in namespace.calls if name == "tenant_a/job_1"] == ["create", "change"]


def test_sqlite_changes_from_two_processes_worth_of_connections_serialize(
    tmp_path: Path,
) -> None:
    """Local mode's file may be shared (two edge processes): each change is one
    `BEGIN IMMEDIATE` transaction, so writers on their own connections, in threads that
    truly run at once, still never both build on one read."""
    path = tmp_path / "jobs.sqlite3"
    asyncio.run(SqliteJobLedger(path).create(job(status="running", hits=0), now=NOW))

    def writer(offset: int) -> int:
        ledger = SqliteJobLedger(path)
        applied = 0
        for n in range(25):
            step = {"completed_tasks": offset + 4 * n, "total_tasks": 1000}
            _, after = asyncio.run(
                ledger.change(
                    "tenant_a", "job_1", change({"type": "progress", "progress": step}), now=NOW
                )
            )
            applied += after is not None
        return applied

    with ThreadPoolExecutor(4) as pool:
        applied = sum(pool.map(writer, range(1, 5)))
    final = asyncio.run(SqliteJobLedger(path).read("tenant_a", "job_1", now=NOW))
    assert final is not None and final["revision"] == 1 + applied
    assert final["progress"]["completed_tasks"] == 100, "the highest step is never lost"
