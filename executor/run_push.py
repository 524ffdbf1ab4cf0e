"""Learn of a pool's new flow runs the moment Prefect schedules them.

Polling every half second makes a run wait a quarter of a second on average before the
worker even looks. Prefect publishes every state change as an event, and its API streams
events out over a websocket (`/api/events/out`, self-hosted and Prefect Cloud alike): a
`prefect.flow-run.Scheduled` event of the pool reaches the worker some tens of
milliseconds after the run was created (docs/benchmarks.md). `RunPushListener` holds that
subscription in a thread of its own and hands each run's id to a `Wakeup`, which cuts
the worker's wait short; the worker then polls and claims as it always does.

Polling stays: it is what finds runs while the stream is down, runs scheduled for later,
and anything an event missed. So the stream may fail in any way (refused, cut,
unauthorised, silent) without harm: the listener logs it once, reconnects with backoff,
and never raises into the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from uuid import UUID

log = logging.getLogger("edgecrew.worker.push")

#: Opens the event stream for a pool: an async iterator of the ids of its runs as they
#: are scheduled. `prefect_scheduled_runs` is the real one; tests pass fakes.
Subscribe = Callable[[str], AbstractAsyncContextManager[AsyncIterator[UUID]]]


class Wakeup:
    """What the worker's loop waits on between ticks: a timeout (the poll interval),
    cut short when a run is pushed or the worker is told to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._runs: set[UUID] = set()

    def push(self, run_id: UUID | None = None) -> None:
        """Wake the loop; `run_id` is the run that was scheduled, when known."""
        if run_id is not None:
            with self._lock:
                self._runs.add(run_id)
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Until pushed or `timeout` seconds; whether it was pushed."""
        return self._event.wait(timeout)

    def take(self) -> set[UUID]:
        """The runs pushed since the last call, and re-arm. Called before a tick, so that
        a push arriving during the tick makes the next wait return at once."""
        with self._lock:
            self._event.clear()
            runs, self._runs = self._runs, set()
        return runs


@asynccontextmanager
async def prefect_scheduled_runs(pool: str) -> AsyncIterator[AsyncIterator[UUID]]:
    """The runs of `pool` as Prefect schedules them, from its events websocket.

    Filtered on the server: `prefect.flow-run.Scheduled` events whose related resources
    include the pool (the stream matches `any_resource` live; a `related` filter would
    only apply to the backfill). Only `Scheduled`, not every SCHEDULED-type state:
    `AwaitingRetry`, `AwaitingConcurrencySlot` and `Late` are runs already known to
    the pool or due later, which the poll finds when they are due.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import (
        EventAnyResourceFilter,
        EventFilter,
        EventNameFilter,
        EventResourceFilter,
    )

    async with get_client() as client:
        work_pool = await client.read_work_pool(pool)
    events = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
        resource=EventResourceFilter(id_prefix=["prefect.flow-run."]),
        any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{work_pool.id}"]),
    )
    # Its own reconnects replay the last minute and skip events already seen; after
    # that it raises, and RunPushListener backs off and opens a new one.
    async with get_events_subscriber(
        filter=events, reconnection_attempts=2, reconnect_on_clean_close=True
    ) as subscriber:

        async def run_ids() -> AsyncIterator[UUID]:
            async for event in subscriber:
                _, _, run_id = event.resource.id.rpartition(".")
                with contextlib.suppress(ValueError):
                    yield UUID(run_id)

        yield run_ids()


class RunPushListener:
    """Keeps a subscription to the pool's scheduled runs open in a daemon thread and
    pushes each run to `wakeup`; reconnects with backoff, never raises."""

    def __init__(
        self,
        pool: str,
        wakeup: Wakeup,
        *,
        subscribe: Subscribe = prefect_scheduled_runs,
        first_retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        self.pool = pool
        self.connected = threading.Event()  # the stream is open (for health and tests)
        self._wakeup = wakeup
        self._subscribe = subscribe
        self._first_retry = first_retry_seconds
        self._max_retry = max_retry_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="run-push")
        self._thread.start()
        self._started.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._listen())
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        except BaseException:  # a daemon thread: nothing may escape into the worker
            log.exception("run push stopped; the worker goes on polling")
        finally:
            self.connected.clear()
            loop.close()

    async def _listen(self) -> None:
        retry = self._first_retry
        failing: str | None = None  # the last failure logged, so a flapping stream logs once
        announced = False
        while True:
            try:
                async with self._subscribe(self.pool) as runs:
                    self.connected.set()
                    if failing is not None or not announced:
                        log.info("run push: listening for %r's scheduled runs", self.pool)
                    announced, failing = True, None
                    retry = self._first_retry
                    async for run_id in runs:
                        self._wakeup.push(run_id)
                reason = "the event stream ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
            self.connected.clear()
            if reason != failing:
                log.warning(
                    "run push unavailable (%s); polling only, retrying in %.0f s", reason, retry
                )
                failing = reason
            await asyncio.sleep(retry)
            retry = min(retry * 2, self._max_retry)
