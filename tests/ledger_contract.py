"""The job ledger's contract, as plain async scenarios: tests/test_job_ledger_contract.py
runs each against SQLite and a Durable Object double under CPython, and
tests/pyodide/adapter_checks.py runs them against edge/entry.py's real Durable Object
class in Pyodide, through the Workers SDK. No pytest here: it must import in Pyodide."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from edge.ports import JobLedger

NOW = 1_800_000_000.0
TTL = 86400.0


def job(job_id: str = "job_1", tenant: str = "tenant_a", **fields: Any) -> dict[str, Any]:
    record = {"id": job_id, "tenant": tenant, "status": "submitting", "progress": None,
              "result": None, "error": None, "expires_at": NOW + TTL}  # fmt: skip
    return {**record, **fields}


def change(event: dict[str, Any] | None, at: float = NOW, **extra: Any) -> dict[str, Any]:
    return {"at": f"t{at - NOW:.0f}", "expires_at": at + TTL, "event": event, **extra}


async def create_stores_a_new_job_once(ledger: JobLedger) -> None:
    stored, created = await ledger.create(job(fingerprint="a"), now=NOW)
    assert created and stored["revision"] == 1 and stored["fingerprint"] == "a"
    again, created_again = await ledger.create(job(fingerprint="b"), now=NOW + 1)
    assert not created_again and again["fingerprint"] == "a", "the first one stays"
    assert await ledger.read("tenant_a", "job_1", now=NOW + 2) == stored


async def jobs_are_kept_apart_by_tenant_and_id(ledger: JobLedger) -> None:
    await ledger.create(job(), now=NOW)
    assert (await ledger.create(job(tenant="tenant_b"), now=NOW))[1]
    assert (await ledger.create(job("job_2"), now=NOW))[1]
    assert await ledger.read("tenant_b", "job_3", now=NOW) is None


async def an_expired_job_is_absent_and_its_id_can_be_used_again(ledger: JobLedger) -> None:
    await ledger.create(job(fingerprint="old"), now=NOW)
    later = NOW + TTL
    assert await ledger.read("tenant_a", "job_1", now=later) is None
    assert await ledger.change("tenant_a", "job_1", change({"type": "queued"}), now=later) == (
        None,
        None,
    )
    fresh, created = await ledger.create(job(fingerprint="new", expires_at=later + TTL), now=later)
    assert created and fresh["fingerprint"] == "new" and fresh["revision"] == 1


async def a_change_applies_its_event_and_fields(ledger: JobLedger) -> None:
    await ledger.create(job(), now=NOW)
    moved = change({"type": "queued"}, NOW + 5, set={"flow_run_id": "run-1"})
    before, after = await ledger.change("tenant_a", "job_1", moved, now=NOW + 5)
    assert before is not None and before["status"] == "submitting"
    assert after is not None
    assert (after["status"], after["flow_run_id"], after["revision"]) == ("queued", "run-1", 2)
    assert after["expires_at"] == NOW + 5 + TTL, "a change gives the job its lifetime again"
    assert await ledger.read("tenant_a", "job_1", now=NOW + 6) == after


async def a_change_that_changes_nothing_writes_nothing(ledger: JobLedger) -> None:
    stored, _ = await ledger.create(job(status="succeeded", result="r"), now=NOW)
    late = change({"type": "failed", "error": {"kind": "x", "message": ""}}, set={"heard_at": 9})
    assert await ledger.change("tenant_a", "job_1", late, now=NOW) == (stored, None)
    guarded = change(None, set={"heard_at": 9}, if_status=["submitting"])
    assert await ledger.change("tenant_a", "job_1", guarded, now=NOW) == (stored, None)
    assert await ledger.read("tenant_a", "job_1", now=NOW) == stored


async def concurrent_changes_all_land_one_after_another(ledger: JobLedger) -> None:
    """Each change sees the one before it: twenty progress callbacks and the result
    racing leave the result in place and every revision used exactly once."""
    await ledger.create(job(status="running"), now=NOW)
    progress = [
        change({"type": "progress", "progress": {"completed_tasks": n, "total_tasks": 20}})
        for n in range(1, 21)
    ]
    done = change({"type": "succeeded", "result": {"report": "done"}})
    answers = await asyncio.gather(
        *(
            ledger.change("tenant_a", "job_1", c, now=NOW)
            for c in [*progress[:10], done, *progress[10:]]
        )
    )
    applied = [after for _, after in answers if after is not None]
    assert sorted(a["revision"] for a in applied) == list(range(2, 2 + len(applied)))
    final = await ledger.read("tenant_a", "job_1", now=NOW)
    assert final is not None
    assert (final["status"], final["result"]) == ("succeeded", {"report": "done"})
    assert final["revision"] == 1 + len(applied)
    assert final["progress"]["completed_tasks"] == 20, "succeeded completes the progress"


async def concurrent_creates_under_one_id_make_one_job(ledger: JobLedger) -> None:
    answers = await asyncio.gather(
        *(ledger.create(job(fingerprint=str(n)), now=NOW) for n in range(10))
    )
    winners = [stored for stored, created in answers if created]
    assert len(winners) == 1
    assert {stored["fingerprint"] for stored, _ in answers} == {winners[0]["fingerprint"]}


Scenario = Callable[[JobLedger], Awaitable[None]]
SCENARIOS: list[Scenario] = [
    create_stores_a_new_job_once,
    jobs_are_kept_apart_by_tenant_and_id,
    an_expired_job_is_absent_and_its_id_can_be_used_again,
    a_change_applies_its_event_and_fields,
    a_change_that_changes_nothing_writes_nothing,
    concurrent_changes_all_land_one_after_another,
    concurrent_creates_under_one_id_make_one_job,
]
