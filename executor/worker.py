"""`edgecrew-worker`: a Prefect worker for one work pool whose flow runs start warm.

    PREFECT_API_URL=... edgecrew-worker --pool gpu --limit 2

It does what `prefect worker start --type process` does for the deployments in
`prefect.yaml` (poll the pool, claim a scheduled run by moving it to `Pending`, start it,
report a process that died as `Crashed`, stop a run that is `Cancelling`, heartbeat so
the pool shows the worker), with two differences that make a job start in well under a
second instead of ~4 s:

- each run's process is forked from a server that has already imported Prefect, CrewAI
  and the crews (`executor.warm`), instead of a fresh interpreter per run;
- it learns of a new run as Prefect schedules it, from Prefect's event stream
  (`executor.run_push`), and polls the pool every half second as the fallback
  (Prefect's worker: polling only, every 10 s).

The pools stay ordinary `process` pools, so a plain Prefect worker can serve them too.
The loop is synchronous on purpose: one thread, a few requests a second, and every
decision in `tick()`, which the tests drive with a recording fake client.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol
from uuid import UUID

import typer

from executor.run_push import RunPushListener, Wakeup
from executor.warm import RunProcess, WarmProcesses
from shared.claims import WORK_POOL_LABEL, WORKER_NAME_LABEL, WORKER_TYPE_LABEL, claim_message

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State

log = logging.getLogger("edgecrew.worker")


class Launcher(Protocol):
    def launch(self, flow_run: FlowRun) -> RunProcess: ...


@dataclass(frozen=True)
class WorkerOptions:
    pool: str
    name: str
    limit: int = 4  # flow runs at once; the deployment's concurrency limit applies too
    poll_seconds: float = 0.5
    prefetch_seconds: float = 1.0  # claim runs scheduled this far ahead (clock skew)
    cancel_check_seconds: float = 1.0
    heartbeat_seconds: float = 30.0
    kill_grace_seconds: float = 10.0  # SIGTERM, then SIGKILL after this
    # A pushed run can reach the worker a moment before Prefect's poll query shows it
    # (the event is published as the state is set): poll again this soon, this often.
    repoll_seconds: float = 0.05
    repolls: int = 4


@dataclass
class _Run:
    process: RunProcess
    cancel_requested_at: float | None = None
    killed: bool = False


@dataclass
class WarmWorker:
    """Claims and starts the flow runs of one work pool; `tick()` is one pass of the loop."""

    client: Any  # prefect.client.orchestration.SyncPrefectClient, or a fake in tests
    launcher: Launcher
    options: WorkerOptions
    clock: Callable[[], float] = time.monotonic
    runs: dict[UUID, _Run] = field(default_factory=dict)
    _next_heartbeat: float = 0.0
    _next_cancel_check: float = 0.0
    _no_claims_before: float = 0.0
    _failing: set[str] = field(default_factory=set)
    # Runs pushed but not yet seen in a poll, with the re-polls each has left.
    _awaited: dict[UUID, int] = field(default_factory=dict)

    def serve(self, stop: threading.Event, wakeup: Wakeup) -> None:
        """The worker's loop, until `stop`: tick, then wait for the poll interval or a
        pushed run, whichever comes first. `stop`'s setter pushes `wakeup` as well."""
        while not stop.is_set():
            self.pushed(wakeup.take())
            self.tick()
            wakeup.wait(self.wait_seconds())

    def pushed(self, run_ids: set[UUID]) -> None:
        """Runs the event stream announced: the next ticks look for them."""
        for run_id in run_ids - self.runs.keys():
            self._awaited.setdefault(run_id, self.options.repolls + 1)  # + the first poll

    def wait_seconds(self) -> float:
        """How long the loop may sleep before the next tick."""
        return self.options.repoll_seconds if self._awaited else self.options.poll_seconds

    def tick(self) -> None:
        """Reap finished runs, start new ones, heartbeat when due, stop cancelled runs.

        Claiming comes right after reaping (which frees slots and makes no API call
        unless a process died): a run that was just pushed is claimed before anything
        else is sent to Prefect. An unreachable Prefect API is logged (once per kind of
        error) and retried on the next tick; it never stops the worker or the runs it
        already started.
        """
        self._run_steps(self._reap, self._claim_and_start, self._heartbeat, self._stop_cancelled)

    def drain(self, wait_seconds: float) -> None:
        """Stop: wait up to `wait_seconds` for running flows, then stop the rest."""
        deadline = self.clock() + wait_seconds
        while self.runs and self.clock() < deadline:
            # Still a worker while draining (heartbeats, a cancel is still a cancel), but
            # one that claims nothing new.
            self._run_steps(self._heartbeat, self._reap, self._stop_cancelled)
            time.sleep(0.5)
        for run in self.runs.values():
            if run.process.is_alive():
                run.process.terminate()
        for run_id, run in list(self.runs.items()):
            run.process.join(self.options.kill_grace_seconds)
            if run.process.is_alive():
                run.process.kill()
                run.process.join()
            try:
                self._report_exit(run_id, run, reason="the worker stopped")
            except Exception as exc:  # the zombie automation is the backstop
                self._failed("drain", exc)
        self.runs.clear()

    def _run_steps(self, *steps: Callable[[float], None]) -> None:
        now = self.clock()
        for step in steps:
            name = step.__name__.strip("_")
            try:
                step(now)
            except Exception as exc:
                self._failed(name, exc)
            else:
                if name in self._failing:
                    self._failing.discard(name)
                    log.info("%s works again", name)

    # -- the steps of a tick ---------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.options.heartbeat_seconds
        self.client.send_worker_heartbeat(
            work_pool_name=self.options.pool,
            worker_name=self.options.name,
            heartbeat_interval_seconds=self.options.heartbeat_seconds,
        )

    def _reap(self, now: float) -> None:
        for run_id, run in list(self.runs.items()):
            if run.process.is_alive():
                continue
            run.process.join()
            # Reported before it is forgotten: if Prefect cannot be told now, the next
            # tick tries again (the dead run keeps its slot until then).
            self._report_exit(run_id, run, reason=f"exit code {run.process.exitcode}")
            del self.runs[run_id]

    def _stop_cancelled(self, now: float) -> None:
        """SIGTERM the process of a run someone cancelled; SIGKILL it after the grace."""
        for run in self.runs.values():
            if (
                run.cancel_requested_at is not None
                and not run.killed
                and now - run.cancel_requested_at > self.options.kill_grace_seconds
            ):
                run.process.kill()
                run.killed = True
        if not self.runs or now < self._next_cancel_check:
            return
        self._next_cancel_check = now + self.options.cancel_check_seconds
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        cancelling = self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=list(self.runs)),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
            )
        )
        for flow_run in cancelling:
            held = self.runs.get(flow_run.id)
            if held is not None and held.cancel_requested_at is None:
                log.info("flow run %s is cancelling: stopping its process", flow_run.id)
                held.cancel_requested_at = now
                held.process.terminate()

    def _claim_and_start(self, now: float) -> None:
        free = self.options.limit - len(self.runs)
        if free <= 0 or now < self._no_claims_before:
            # Full, or a process just failed to start: a pushed run waits for the poll
            # (otherwise a released run's own `Scheduled` event would be claimed again
            # at once, in a loop as fast as the API answers).
            self._awaited.clear()
            return
        # A pushed run this poll does not show gets a few quick re-polls (counted before
        # the poll, so a failing API cannot make them endless), then the ordinary poll:
        # another worker took it, or it is due later than the prefetch window.
        self._awaited = {run_id: left - 1 for run_id, left in self._awaited.items() if left > 1}
        before = datetime.now(UTC) + timedelta(seconds=self.options.prefetch_seconds)
        scheduled = self.client.get_scheduled_flow_runs_for_work_pool(
            work_pool_name=self.options.pool, scheduled_before=before
        )
        for entry in scheduled:
            self._awaited.pop(entry.flow_run.id, None)
        for entry in scheduled:
            if free <= 0:
                break
            flow_run = entry.flow_run
            if flow_run.id in self.runs:
                continue
            claimed = self._claim(flow_run.id)
            if claimed is None:
                continue
            try:
                # As claimed, so that its process need not read it again.
                process = self.launcher.launch(_with_state(flow_run, claimed))
            except Exception:
                self._no_claims_before = now + self.options.poll_seconds
                self._release(flow_run.id)
                raise
            self.runs[flow_run.id] = _Run(process)
            free -= 1
            log.info("started flow run %s (pid %s)", flow_run.id, process.pid)
            # Where the run lives, as Prefect's process worker records it ("host:pid"),
            # and who holds it, with the labels Prefect's own workers give a run.
            self.client.update_flow_run(
                flow_run.id, infrastructure_pid=f"{socket.gethostname()}:{process.pid}"
            )
            self.client.update_flow_run_labels(
                flow_run.id,
                {
                    WORKER_NAME_LABEL: self.options.name,
                    WORKER_TYPE_LABEL: "edgecrew",
                    WORK_POOL_LABEL: self.options.pool,
                },
            )

    # -- helpers ---------------------------------------------------------------------

    def _claim(self, flow_run_id: UUID) -> State | None:
        """Scheduled → Pending, as Prefect's workers claim a run; the Pending state if
        ours. Another worker that got there first, a concurrency slot that is busy, a
        cancel: anything but ACCEPT means the run is not ours (it stays scheduled for
        whoever may take it)."""
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Pending

        try:
            # The claim names its holder, so the edge can tell a dead worker's claim
            # from a slow start (shared/claims.py).
            claim: Any = Pending(message=claim_message(self.options.name))
            result = self.client.set_flow_run_state(flow_run_id, claim)
        except ObjectNotFound:
            return None
        state = result.state
        if result.status == SetStateStatus.ACCEPT and state is not None:
            return state if state.type == StateType.PENDING else None
        return None

    def _release(self, flow_run_id: UUID) -> None:
        """Give a claimed run back (Pending → Scheduled) when its process could not start,
        so this or another worker takes it later instead of it waiting in Pending forever."""
        from prefect.client.schemas.objects import StateType
        from prefect.states import Scheduled

        state = self.client.read_flow_run(flow_run_id).state
        if state is None or state.type != StateType.PENDING:
            return  # cancelled (or taken) meanwhile: forcing it back would revive it
        message = "Released: the worker could not start a process for it."
        self.client.set_flow_run_state(flow_run_id, Scheduled(message=message), force=True)

    def _report_exit(self, flow_run_id: UUID, run: _Run, *, reason: str) -> None:
        """A run's process is gone: make its state say so if the engine could not."""
        from prefect.states import Cancelled, Crashed

        if run.cancel_requested_at is not None:
            flow_run = self.client.read_flow_run(flow_run_id)
            state = flow_run.state
            if state is None or not state.is_final() or state.is_crashed():
                # Forced, as Prefect's worker does: the run was cancelled, whatever the
                # engine managed to say while it was being stopped.
                message = "Cancelled: the worker stopped the flow-run process."
                self.client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
            return
        if run.process.exitcode == 0:
            return
        # Not forced: if the engine already reached a final state, Prefect keeps it.
        message = f"The flow-run process ended without a final state ({reason})."
        self.client.set_flow_run_state(flow_run_id, Crashed(message=message))
        log.warning("flow run %s: %s", flow_run_id, message)

    def _failed(self, step: str, exc: Exception) -> None:
        if step not in self._failing:  # one line when a step starts failing, not per tick
            log.warning("%s failed (%s: %s); retrying", step, type(exc).__name__, exc)
            self._failing.add(step)


def _with_state(flow_run: FlowRun, state: State) -> FlowRun:
    """The flow run read by the poll, in the state its claim put it in.

    As a plain `State`: the client parses orchestration results into a generic
    `State[T]`, which cannot be pickled to the run's process. A claim carries no data.
    """
    from prefect.client.schemas.objects import State as PlainState

    plain = PlainState.model_validate(state.model_dump(exclude={"data"}))
    return flow_run.model_copy(
        update={"state": plain, "state_id": plain.id, "state_type": plain.type,
                "state_name": plain.name}
    )  # fmt: skip


class _Health:
    """`GET /health`: 200 once warm and polling, with the worker's load; 503 before."""

    def __init__(self, worker: WarmWorker) -> None:
        self.worker = worker
        self.ready = threading.Event()
        self.published = threading.Event()  # the edge has this worker's crews
        self.push: RunPushListener | None = None

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ready = health.ready.is_set()
                options = health.worker.options
                body = json.dumps(
                    {
                        "ready": ready,
                        "published": health.published.is_set(),
                        # Whether new runs are pushed (else found by polling alone).
                        "push": health.push is not None and health.push.connected.is_set(),
                        "pool": options.pool,
                        "running": len(health.worker.runs),
                        "limit": options.limit,
                    }
                ).encode()
                self.send_response(200 if ready and self.path == "/health" else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
        return server


app = typer.Typer(add_completion=False)


@app.command()
def start(
    pool: Annotated[str, typer.Option(help="The work pool to serve (gpu, cpu, ...)")],
    limit: Annotated[int, typer.Option(min=1, help="Flow runs at once")] = 4,
    poll_seconds: Annotated[float, typer.Option(min=0.05)] = 0.5,
    prefetch_seconds: Annotated[float, typer.Option(min=0)] = 1.0,
    name: Annotated[str | None, typer.Option(help="Worker name shown in Prefect")] = None,
    drain_seconds: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, let running flows finish this long")
    ] = 0.0,
    heartbeat_seconds: Annotated[
        float, typer.Option(min=1, help="Prefect counts a worker offline after 3 missed")
    ] = 30.0,
    push_runs: Annotated[
        bool, typer.Option(help="Learn of new runs from Prefect's event stream, not only polls")
    ] = True,
    healthcheck_host: str = "127.0.0.1",
    healthcheck_port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    config: Annotated[
        Path | None, typer.Option(help="edgecrew.toml (default: $EDGECREW_CONFIG or ./)")
    ] = None,
) -> None:
    """Serve one work pool; flow runs start in processes forked warm (see executor.warm)."""
    from prefect.client.orchestration import get_client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not two lines per poll
    crews = _offered_crews(pool, config)
    options = WorkerOptions(
        pool=pool,
        name=name or f"edgecrew-{socket.gethostname()}-{os.getpid()}",
        limit=limit,
        poll_seconds=poll_seconds,
        prefetch_seconds=prefetch_seconds,
        heartbeat_seconds=heartbeat_seconds,
    )
    stop, wakeup = threading.Event(), Wakeup()

    def stopping(*_: Any) -> None:
        stop.set()
        wakeup.push()  # out of the loop's wait now, not at the next poll

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    processes = WarmProcesses()
    with get_client(sync_client=True) as client:
        worker = WarmWorker(client=client, launcher=processes, options=options)
        health = _Health(worker)
        server = health.serve(healthcheck_host, healthcheck_port) if healthcheck_port else None
        started = time.monotonic()
        for module, reason in processes.warm_up().items():
            log.warning(
                "fork server: %s not preloaded (%s); runs import it themselves", module, reason
            )
        log.info("warm in %.1f s; serving pool %r as %r", time.monotonic() - started, pool,
                 options.name)  # fmt: skip
        health.ready.set()
        publisher = threading.Thread(
            target=_publish, args=(options, crews, stop, health), daemon=True, name="publish"
        )
        publisher.start()
        push = RunPushListener(pool, wakeup)
        if push_runs:
            push.start()
            health.push = push
        worker.serve(stop, wakeup)
        push.stop()
        log.info("stopping: %d flow run(s) in progress", len(worker.runs))
        health.ready.clear()
        worker.drain(drain_seconds)
        processes.close()
        if server is not None:
            server.shutdown()


def _offered_crews(pool: str, config_file: Path | None) -> list[dict[str, Any]]:
    """Load and check every crew of the pool before serving it, in a child process
    (`executor.catalog`): a broken crew stops the worker here, with its name and error,
    instead of failing jobs later. The published entries of the crews."""
    from executor.config import ConfigError, config_path

    try:
        path = config_file.resolve() if config_file else config_path()
    except ConfigError as exc:
        log.error("%s", exc)
        raise typer.Exit(2) from exc
    if path is not None:  # flow-run processes read the same file, wherever they run
        os.environ["EDGECREW_CONFIG"] = str(path)
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "catalog.json"
        argv = [sys.executable, "-m", "executor.catalog", "--pool", pool, "--output", str(output)]
        done = subprocess.run(argv, check=False)  # noqa: S603 - our own module
        if done.returncode != 0 or not output.is_file():
            log.error(
                "loading the crews failed (exit code %s); see the lines above", done.returncode
            )
            raise typer.Exit(2)
        found = json.loads(output.read_text())
    for error in found["errors"]:
        log.error("cannot offer %s", error)
    if found["errors"]:
        raise typer.Exit(2)
    if not found["crews"]:
        log.warning("no crew in %s runs on pool %r", found["config"] or "the config", pool)
    for crew in found["crews"]:
        spec = crew["spec"]
        log.info("offering crew %r (%s, version %s)", spec["name"], crew["kind"], spec["version"])
    return [crew["spec"] for crew in found["crews"]]


def _publish(
    options: WorkerOptions, crews: list[dict[str, Any]], stop: threading.Event, health: Any
) -> None:
    from executor.catalog import publish_until_taken
    from executor.edge_client import EdgeClient
    from executor.settings import ExecutorSettings

    edge = EdgeClient(ExecutorSettings.from_env(os.environ))
    if publish_until_taken(edge, options.name, options.pool, crews, stop):
        health.published.set()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
