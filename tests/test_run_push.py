"""The worker learns of new runs from Prefect's event stream, polling as the fallback.

The loop (`WarmWorker.serve`) runs in a thread against the recording fake Prefect client
of tests/test_worker.py and a fake event stream (the stream is the port under test);
`prefect_scheduled_runs` itself runs against a real Prefect server at the end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.client.schemas.objects import FlowRun, StateType

from executor.run_push import RunPushListener, Subscribe, Wakeup
from executor.worker import WarmWorker, WorkerOptions
from tests.conftest import Clock
from tests.test_worker import FakeLauncher, FakePrefect, FakeProcess


class FakeStream:
    """Prefect's event stream for a pool, as `RunPushListener` opens it: each connection
    yields the run ids the test sends, or fails as the test says."""

    def __init__(self) -> None:
        self.opened: list[float] = []  # when each connection was attempted
        self.refuse: Exception | None = None  # every connection fails with this
        self.drop_after: int | None = None  # a connection ends after this many events
        self._sends: asyncio.Queue[UUID] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def __call__(self, pool: str) -> AsyncIterator[AsyncIterator[UUID]]:
        assert pool == "cpu"
        self.opened.append(time.monotonic())
        if self.refuse is not None:
            raise self.refuse
        self._loop = asyncio.get_running_loop()
        self._sends = asyncio.Queue()
        sends, drop_after = self._sends, self.drop_after

        async def run_ids() -> AsyncIterator[UUID]:
            sent = 0
            while drop_after is None or sent < drop_after:
                yield await sends.get()
                sent += 1
            raise ConnectionResetError("the server went away")

        yield run_ids()

    def send(self, run_id: UUID) -> None:
        assert self._loop is not None and self._sends is not None, "not connected"
        self._loop.call_soon_threadsafe(self._sends.put_nowait, run_id)


def wait_until(done: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds it took for `done()` to hold; fails after `timeout`."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.005)
    return time.monotonic() - started


@contextmanager
def serving(worker: WarmWorker, stream: Subscribe, **listener: Any) -> Iterator[RunPushListener]:
    """The worker's loop and its push listener, as `edgecrew-worker` runs them."""
    stop, wakeup = threading.Event(), Wakeup()
    push = RunPushListener("cpu", wakeup, subscribe=stream, **listener)
    push.start()
    loop = threading.Thread(target=worker.serve, args=(stop, wakeup), daemon=True)
    loop.start()
    try:
        yield push
    finally:
        stop.set()
        wakeup.push()
        loop.join(5)
        push.stop()
        assert not loop.is_alive(), "a stop wakes the loop at once"


def real_time_worker(prefect: FakePrefect, launcher: FakeLauncher, poll: float) -> WarmWorker:
    options = WorkerOptions(pool="cpu", name="w1", limit=2, poll_seconds=poll)
    return WarmWorker(client=prefect, launcher=launcher, options=options)


def polls(prefect: FakePrefect) -> int:
    return len(prefect.states_set("poll"))


def test_a_pushed_run_is_claimed_at_once_not_at_the_next_poll() -> None:
    prefect, launcher, stream = FakePrefect(), FakeLauncher(), FakeStream()
    worker = real_time_worker(prefect, launcher, poll=30)  # the poll alone: 30 s away
    with serving(worker, stream) as push:
        assert push.connected.wait(5)
        wait_until(lambda: polls(prefect) == 1)  # the first tick found nothing
        run = uuid4()
        prefect.scheduled = [run]
        sent = time.monotonic()
        stream.send(run)
        took = wait_until(lambda: run in launcher.launched)
    assert took < 1.0, f"claimed {took:.2f} s after the push"
    assert prefect.states[run].type == StateType.PENDING
    assert prefect.states[run].message == "Claimed by worker w1", "the usual claim"
    assert time.monotonic() - sent < 30


def test_a_refused_stream_leaves_the_worker_polling_and_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefect, launcher, stream = FakePrefect(), FakeLauncher(), FakeStream()
    stream.refuse = ConnectionRefusedError(111, "Connect call failed")
    worker = real_time_worker(prefect, launcher, poll=0.1)
    with (
        caplog.at_level(logging.WARNING, logger="edgecrew.worker.push"),
        serving(worker, stream, first_retry_seconds=0.05, max_retry_seconds=0.2) as push,
    ):
        run = uuid4()
        prefect.scheduled = [run]
        wait_until(lambda: run in launcher.launched), "found by polling"
        wait_until(lambda: len(stream.opened) >= 5)
        assert not push.connected.is_set()
    gaps = [b - a for a, b in zip(stream.opened, stream.opened[1:], strict=False)]
    assert gaps[0] >= 0.04 and max(gaps) < 0.5 and gaps[2] > gaps[0], "doubling, capped"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "polling only" in warnings[0], "logged once, not per retry"


def test_a_stream_that_drops_is_reopened_and_pushes_again() -> None:
    prefect, launcher, stream = FakePrefect(), FakeLauncher(), FakeStream()
    stream.drop_after = 1
    worker = real_time_worker(prefect, launcher, poll=30)
    with serving(worker, stream, first_retry_seconds=0.05) as push:
        for _ in range(2):  # the second run arrives over the second connection
            assert push.connected.wait(5)
            run = uuid4()
            prefect.scheduled = [run]
            opened = len(stream.opened)
            stream.send(run)
            assert wait_until(lambda run=run: run in launcher.launched) < 1.0
            wait_until(lambda opened=opened: len(stream.opened) > opened)  # dropped, reopened


def test_a_stream_that_breaks_mid_event_never_reaches_the_worker() -> None:
    """A malformed event (the real subscriber raises a validation error) ends that
    connection, not the listener: it reconnects, and the worker polls on meanwhile."""
    prefect, launcher = FakePrefect(), FakeLauncher()
    opened: list[float] = []

    @asynccontextmanager
    async def breaking(pool: str) -> AsyncIterator[AsyncIterator[UUID]]:
        opened.append(time.monotonic())

        async def run_ids() -> AsyncIterator[UUID]:
            raise ValueError("1 validation error for Event")
            yield uuid4()  # an async generator that fails on its first item

        yield run_ids()

    worker = real_time_worker(prefect, launcher, poll=0.1)
    with serving(worker, breaking, first_retry_seconds=0.02, max_retry_seconds=0.05) as push:
        run = uuid4()
        prefect.scheduled = [run]
        wait_until(lambda: run in launcher.launched)
        wait_until(lambda: len(opened) >= 3)
        assert push._thread is not None and push._thread.is_alive()


def test_a_pushed_run_the_poll_does_not_show_yet_is_polled_again_a_few_times(
    clock: Clock,
) -> None:
    """The event is published as Prefect sets the state: a poll sent at once may not see
    the run yet. Quick re-polls, bounded, then back to the poll interval."""
    prefect, launcher = FakePrefect(), FakeLauncher()
    options = WorkerOptions(pool="cpu", name="w1", poll_seconds=0.5, repoll_seconds=0.05,
                            repolls=3)  # fmt: skip
    worker = WarmWorker(client=prefect, launcher=launcher, options=options, clock=clock)
    late, gone = uuid4(), uuid4()

    worker.pushed({late, gone})
    worker.tick()
    assert worker.wait_seconds() == 0.05, "not in the poll yet: look again soon"
    prefect.scheduled = [late]  # now visible; `gone` was taken by another worker
    worker.tick()
    assert late in launcher.launched
    worker.tick()
    assert worker.wait_seconds() == 0.05, "one re-poll left for the other"
    worker.tick()
    assert worker.wait_seconds() == 0.5, "given up on: the ordinary poll finds it if due"
    assert polls(prefect) == 4


def test_pushed_runs_cannot_make_a_down_api_busy(clock: Clock) -> None:
    prefect, launcher = FakePrefect(), FakeLauncher()
    options = WorkerOptions(pool="cpu", name="w1", repolls=3)
    worker = WarmWorker(client=prefect, launcher=launcher, options=options, clock=clock)
    prefect.down = True
    worker.pushed({uuid4()})
    for _ in range(options.repolls + 1):  # the first poll, then the re-polls
        worker.tick()
    assert worker.wait_seconds() == options.poll_seconds


def test_a_released_run_pushed_back_is_not_claimed_again_before_the_poll(clock: Clock) -> None:
    """A run whose process cannot start is given back (Scheduled), and that is pushed:
    the worker must not claim and release it in a loop as fast as the API answers."""
    prefect, launcher = FakePrefect(), FakeLauncher()
    run = uuid4()
    prefect.scheduled = [run]
    attempts: list[UUID] = []

    def cannot_fork(flow_run: FlowRun) -> FakeProcess:
        attempts.append(flow_run.id)
        prefect.scheduled = [flow_run.id]  # released: scheduled again
        raise OSError(11, "Resource temporarily unavailable")

    launcher.launch = cannot_fork  # type: ignore[method-assign]
    worker = WarmWorker(client=prefect, launcher=launcher, clock=clock,
                        options=WorkerOptions(pool="cpu", name="w1", poll_seconds=0.5))  # fmt: skip
    worker.tick()
    worker.pushed({run})  # its own `Scheduled` event
    clock.advance(0.05)
    worker.tick()
    assert attempts == [run], "not claimed again within the poll interval"
    clock.advance(0.5)
    worker.tick()
    assert attempts == [run, run], "retried at the poll, as before"


def test_a_full_worker_does_not_poll_for_pushed_runs(clock: Clock) -> None:
    prefect, launcher = FakePrefect(), FakeLauncher()
    options = WorkerOptions(pool="cpu", name="w1", limit=1)
    worker = WarmWorker(client=prefect, launcher=launcher, options=options, clock=clock)
    prefect.scheduled = [uuid4()]
    worker.tick()
    worker.pushed({uuid4()})
    worker.tick()
    assert polls(prefect) == 1 and worker.wait_seconds() == options.poll_seconds


def test_wakeup_hands_over_the_runs_pushed_since_the_last_take() -> None:
    wakeup = Wakeup()
    assert not wakeup.wait(0.01)
    first, second = uuid4(), uuid4()
    threading.Timer(0.05, wakeup.push, args=(first,)).start()
    started = time.monotonic()
    assert wakeup.wait(5) and time.monotonic() - started < 1
    wakeup.push(second)
    assert wakeup.take() == {first, second}
    assert not wakeup.wait(0.01), "re-armed by take()"
    wakeup.push()  # a stop: wakes, names no run
    assert wakeup.wait(0) and wakeup.take() == set()


# -- against a real Prefect server ------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server of its own (SQLite: quickest to start), with two pools."""
    import os

    from edge.local.processes import Supervisor, free_port
    from edge.local.stack import prefect_server

    data = tmp_path_factory.mktemp("run-push")
    supervisor = Supervisor(data / "logs")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    previous = os.environ.get("PREFECT_API_URL")
    try:
        supervisor.start(prefect_server(port, data), timeout=180)
        os.environ["PREFECT_API_URL"] = api
        yield api
    finally:
        supervisor.stop_all()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


async def _deployment(client: Any, pool: str) -> UUID:
    from prefect.client.schemas.actions import WorkPoolCreate

    await client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
    flow_id = await client.create_flow_from_name("push-test")
    return UUID(str(await client.create_deployment(flow_id, f"on-{pool}", work_pool_name=pool)))


@pytest.mark.e2e
def test_prefect_streams_the_pools_scheduled_runs_and_only_those(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from executor.run_push import prefect_scheduled_runs

    async def scenario() -> tuple[list[UUID], list[UUID], list[float]]:
        async with get_client() as client:
            ours, theirs = await _deployment(client, "cpu"), await _deployment(client, "other")
            received: list[UUID] = []
            delays: list[float] = []
            async with prefect_scheduled_runs("cpu") as runs:
                created: list[UUID] = []
                for deployment in (theirs, ours, theirs, ours):
                    run = await client.create_flow_run_from_deployment(deployment)
                    sent = time.monotonic()
                    if deployment == ours:
                        created.append(run.id)
                        received.append(await asyncio.wait_for(anext(runs), 10))
                        delays.append(time.monotonic() - sent)
                        # Its claim (Pending) is not a new run: no push for it.
                        await client.set_flow_run_state(run.id, Pending())
                extra = asyncio.ensure_future(anext(runs))
                done, _ = await asyncio.wait({extra}, timeout=1.0)
                extra.cancel()
                received += [task.result() for task in done]
            return created, received, delays

    created, received, delays = asyncio.run(scenario())
    assert received == created, "the cpu pool's new runs, in order, and nothing else"
    assert max(delays) < 2.0, f"pushed within {max(delays):.2f} s"
