"""Flow-run processes that start warm: forked from a server that has already imported
Prefect's engine, CrewAI and the crews.

A Prefect process worker starts a fresh interpreter for every flow run; here that costs
~1.5 s for the engine and ~4 s more for `import crewai`, before the crew says a word.
multiprocessing's *forkserver* imports all of that once, in a single-threaded server
process, and forks each flow run from it in ~10 ms. Every run still gets its own process
(so one tenant's crew never shares memory with the next, a crash takes down one run, and
cancelling is killing a pid) without paying for the imports again.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun

#: Imported once by the fork server, inherited by every flow-run process. The worker's
#: own module is there because multiprocessing re-runs the parent's `__main__` in each
#: child (as `__mp_main__`); with its imports done that costs ~1 ms instead of ~250.
PRELOAD = ["executor.preload", "executor.worker"]


class RunProcess(Protocol):
    """The part of `multiprocessing.Process` the worker uses (a fake stands in for tests)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class WarmProcesses:
    """Starts flow runs in processes forked from a pre-warmed fork server."""

    def __init__(
        self, preload: list[str] | None = None, target: Callable[[str], None] | None = None
    ) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._preload = PRELOAD if preload is None else preload
        self._context.set_forkserver_preload(self._preload)
        self._target = target or execute_flow_run  # tests run something lighter

    def warm_up(self) -> dict[str, str]:
        """Start the fork server and wait until its imports are done (seconds, once).

        The first process forked makes the server import the preload list; a probe child
        returns when that is over, so the first real run does not pay for it. The fork
        server skips a module that raises ImportError (runs would then import it
        themselves, slowly, or fail); the probe reports each such module with its error.
        Any other exception kills the server (`executor/preload.py` guards its own).
        """
        receive, send = self._context.Pipe(duplex=False)
        probe = self._context.Process(
            target=_report_missing, args=(self._preload, send), name="warm-up"
        )
        try:
            probe.start()
            send.close()
            missing: dict[str, str] = receive.recv() if receive.poll(600) else {}
        except (EOFError, ConnectionError) as exc:
            raise RuntimeError(
                "the fork server died while importing its preload modules "
                f"({type(exc).__name__}); its error is in the output above"
            ) from None
        probe.join()
        if probe.exitcode != 0:
            raise RuntimeError(f"the warm-up process exited with code {probe.exitcode}")
        return missing

    def launch(self, flow_run_id: UUID) -> RunProcess:
        process = self._context.Process(
            target=self._target, args=(str(flow_run_id),), name=f"flow-run-{flow_run_id}"
        )
        process.start()
        return ForkedRun(process)


class ForkedRun:
    """A flow-run process, watched through the OS as well as through multiprocessing.

    The process is the fork server's child, not ours: multiprocessing learns that it
    ended from the server. If the server itself dies (the OOM killer, a stray kill), it
    reports every run as ended (exit 255) while they still run, and its terminate() and
    kill() then do nothing. So liveness and signals go by pid.
    """

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self.pid = process.pid

    @property
    def exitcode(self) -> int | None:
        return None if self.is_alive() else self._process.exitcode

    def is_alive(self) -> bool:
        return self._process.is_alive() or _running(self.pid)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)

    def _signal(self, signum: int) -> None:
        if self.pid is not None and self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def _running(pid: int | None) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    if pid is None:
        return False
    with contextlib.suppress(ChildProcessError):  # ours only if we became its parent
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    except (PermissionError, OSError):
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def execute_flow_run(flow_run_id: str) -> None:
    """The flow-run process: what `python -m prefect.engine <id>` does, minus the imports.

    `handle_engine_signals` turns an orchestrator abort (the run was cancelled or taken
    before it started) into exit 0 and an unexpected error into exit 1, as Prefect's own
    engine entry point does; the worker reports a non-zero exit of an unfinished run as
    `Crashed`.
    """
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import load_flow, load_flow_run, run_flow
    from prefect.logging.loggers import flow_run_logger

    run_id = UUID(flow_run_id)
    with handle_engine_signals(run_id):
        flow_run = load_flow_run(flow_run_id=run_id)
        logger = flow_run_logger(flow_run=flow_run)
        try:
            flow = _preloaded_flow(flow_run) or load_flow(flow_run)
        except Exception:
            logger.error("could not load the flow of this run", exc_info=True)
            raise
        # A LoggerAdapter where a Logger is annotated: Prefect's engine passes the same.
        result = run_flow(flow, flow_run=flow_run, error_logger=logger)  # type: ignore[arg-type]
        # Async and generator flows come back as a coroutine or generator still to be
        # driven; Prefect's engine entry point does this (private, pinned with Prefect).
        _drive_run_flow_result(flow, result)


def _preloaded_flow(flow_run: FlowRun) -> Flow[..., Any] | None:
    """The flow object the fork server imported, if this run's deployment points at it.

    Loading a deployment's flow means running its pull steps and executing the
    entrypoint's file again (~0.2 s here); for edgecrew's own flow both are done already.
    Any other deployment in the pool is loaded the usual way.
    """
    from prefect.client.orchestration import get_client

    from executor.preload import FLOWS

    if flow_run.deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(flow_run.deployment_id)
    return FLOWS.get(deployment.entrypoint or "")


def _report_missing(modules: list[str], send: Connection) -> None:
    """In a child of the fork server: which preload modules the server lacks, and why."""
    missing = {}
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # the reason the fork server swallowed
            missing[name] = f"{type(exc).__name__}: {exc}"
        else:
            missing[name] = "not preloaded (imported by the probe instead)"
    send.send(missing)
    send.close()
