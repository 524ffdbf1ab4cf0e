"""The local queue's consumer: several messages at once, one job's messages in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge.local.sqlite_queue import SqliteQueue


async def _until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - polls SQLite and handler state: no event
            await asyncio.sleep(0.01)


async def test_the_consumer_handles_up_to_its_concurrency_at_once(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.sqlite3")
    release = asyncio.Event()
    in_flight: set[str] = set()
    most = 0

    async def handler(body: dict[str, Any]) -> int | None:
        nonlocal most
        in_flight.add(body["job_id"])
        most = max(most, len(in_flight))
        await release.wait()  # a slow Prefect, a slow webhook receiver
        in_flight.discard(body["job_id"])
        return None

    for n in range(7):
        await queue.send({"job_id": f"job_{n}"})
    consumer = asyncio.create_task(queue.consume(handler, dict, poll_seconds=3600, concurrency=3))
    try:
        await _until(lambda: len(in_flight) == 3)
        await asyncio.sleep(0.1)
        assert most == 3, "no more than its concurrency, even with more due"
        release.set()
        await _until(lambda: queue.pending() == 0)  # the rest, as slots came free
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert most == 3


async def test_messages_of_one_job_run_one_after_another_in_order(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.sqlite3")
    seen: list[tuple[str, int]] = []
    busy: set[str] = set()
    overlapped = False

    async def handler(body: dict[str, Any]) -> int | None:
        nonlocal overlapped
        overlapped |= body["job_id"] in busy
        busy.add(body["job_id"])
        await asyncio.sleep(0.02)
        seen.append((body["job_id"], body["n"]))
        busy.discard(body["job_id"])
        return None

    for n in range(4):  # e.g. job.running then job.succeeded webhooks of one job
        await queue.send({"job_id": "job_a", "n": n})
        await queue.send({"job_id": "job_b", "n": n})
    consumer = asyncio.create_task(queue.consume(handler, dict, poll_seconds=3600, concurrency=8))
    try:
        await _until(lambda: queue.pending() == 0)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert not overlapped
    assert [n for job, n in seen if job == "job_a"] == [0, 1, 2, 3]
    assert [n for job, n in seen if job == "job_b"] == [0, 1, 2, 3]


async def test_what_a_cancelled_consumer_held_comes_back_after_its_lease(tmp_path: Path) -> None:
    now = [1000.0]
    queue = SqliteQueue(tmp_path / "q.sqlite3", lease_seconds=60, clock=lambda: now[0])
    started = asyncio.Event()

    async def stuck(body: dict[str, Any]) -> int | None:
        started.set()
        await asyncio.sleep(3600)
        return None

    await queue.send({"job_id": "job_a"})
    consumer = asyncio.create_task(queue.consume(stuck, dict, poll_seconds=3600))
    await asyncio.wait_for(started.wait(), 10)
    consumer.cancel()  # the edge stops mid-delivery
    await asyncio.gather(consumer, return_exceptions=True)
    assert queue.claim() == [], "still leased"
    now[0] += 61
    assert [body for _, body in queue.claim()] == [{"job_id": "job_a"}]
