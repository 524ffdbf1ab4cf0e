"""Flow-run processes that start warm: forked from a server that has already imported
Prefect's engine, CrewAI and the crews.

A Prefect process worker starts a fresh interpreter for every flow run; here that costs
~1.5 s for the engine and ~4 s more for `import crewai`, before the crew says a word.
multiprocessing's *forkserver* imports all of that once, in a single-threaded server
process, and forks each flow run from it in ~10 ms. Every run still gets its own process
(so one tenant's crew never shares memory with the next, a crash takes down one run, and
cancelling is killing a pid) without paying for the imports again.

What a run still has to do between its fork and `RUNNING` is kept short as well (see
`execute_flow_run`): one process stands by, forked ahead with its Prefect client made
and connected, and is handed the next run; the worker passes the flow run it claimed
instead of the process reading it again; and Prefect's suspension observer (a websocket
of its own, which the engine waits for before it proposes `RUNNING`) connects while the
run starts instead of before.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("edgecrew.worker")

#: What a flow-run process runs: the run's id and, when the worker has it, the flow run
#: as it claimed it (else the process reads it).
Target = Callable[[str, "FlowRun | None"], None]

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
    """Starts flow runs in processes forked from a pre-warmed fork server.

    With `standby`, one process is kept forked ahead: it waits `settle_seconds` (so
    that its own set-up does not compete with a run that has just started), then makes
    and connects its Prefect client and waits for a run. `launch` hands it the run over
    a pipe and forks the next one; a standby that died is simply replaced by a fresh fork.
    """

    def __init__(
        self,
        preload: list[str] | None = None,
        target: Target | None = None,
        *,
        standby: bool = True,
        settle_seconds: float = 1.0,
    ) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._preload = PRELOAD if preload is None else preload
        self._context.set_forkserver_preload(self._preload)
        self._target: Target = target or execute_flow_run  # tests run something lighter
        self._use_standby = standby
        self._settle_seconds = settle_seconds
        self._standby: _Standby | None = None

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
        self._stand_by()
        return missing

    def launch(self, flow_run: FlowRun) -> RunProcess:
        standby, self._standby = self._standby, None
        process = standby.take(flow_run) if standby is not None else None
        if process is None:  # none ready (a burst, or it died): fork one for this run
            process = self._context.Process(
                target=_run_now, args=(self._target, flow_run), name=f"flow-run-{flow_run.id}"
            )
            process.start()
        self._stand_by()
        return ForkedRun(process)

    def close(self) -> None:
        """The worker is stopping: end the standby (it never ran anything)."""
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.close()

    def _stand_by(self) -> None:
        if not self._use_standby or self._standby is not None:
            return
        try:
            self._standby = _Standby(self._context, self._target, self._settle_seconds)
        except Exception as exc:  # the next launch forks its run itself, and tries again
            log.warning("could not fork a standby process (%s: %s)", type(exc).__name__, exc)


class _Standby:
    """A flow-run process forked ahead of its run, waiting on a pipe for it."""

    def __init__(self, context: Any, target: Target, settle_seconds: float) -> None:
        receive, self._send = context.Pipe(duplex=False)
        self.process: multiprocessing.process.BaseProcess = context.Process(
            target=_stand_by, args=(receive, target, settle_seconds), name="flow-run-standby"
        )
        self.process.start()
        receive.close()

    def take(self, flow_run: FlowRun) -> multiprocessing.process.BaseProcess | None:
        """Hand it `flow_run`; None if it is gone (the run is then forked afresh)."""
        try:
            if not self.process.is_alive():
                return None
            self._send.send(flow_run)
        except (OSError, ValueError):  # its end of the pipe is closed: it died
            return None
        finally:
            self._send.close()
        return self.process

    def close(self) -> None:
        self._send.close()  # it reads end-of-file and exits
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


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


def execute_flow_run(flow_run_id: str, flow_run: FlowRun | None = None) -> None:
    """The flow-run process: what `python -m prefect.engine <id>` does, minus the imports.

    `handle_engine_signals` turns an orchestrator abort (the run was cancelled or taken
    before it started) into exit 0 and an unexpected error into exit 1, as Prefect's own
    engine entry point does; the worker reports a non-zero exit of an unfinished run as
    `Crashed`. One Prefect client serves the whole run (the engine takes the one in
    context, which a standby process has made and connected already); `flow_run`, as the
    worker claimed it, saves reading it again.
    """
    from prefect.context import SyncClientContext
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import load_flow, run_flow
    from prefect.logging.loggers import flow_run_logger

    run_id = UUID(flow_run_id)
    _observe_suspension_in_background()
    with handle_engine_signals(run_id), SyncClientContext.get_or_create() as prefect:
        if flow_run is None:
            flow_run = prefect.client.read_flow_run(run_id)
        logger = flow_run_logger(flow_run=flow_run)
        try:
            flow = _preloaded_flow(prefect.client, flow_run) or load_flow(flow_run)
        except Exception:
            logger.error("could not load the flow of this run", exc_info=True)
            raise
        # A LoggerAdapter where a Logger is annotated: Prefect's engine passes the same.
        result = run_flow(flow, flow_run=flow_run, error_logger=logger)  # type: ignore[arg-type]
        # Async and generator flows come back as a coroutine or generator still to be
        # driven; Prefect's engine entry point does this (private, pinned with Prefect).
        _drive_run_flow_result(flow, result)


def _run_now(target: Target, flow_run: FlowRun) -> None:
    target(str(flow_run.id), flow_run)


def _stand_by(receive: Connection, target: Target, settle_seconds: float) -> None:
    """A standby process: set up what does not depend on the run, then wait for it."""
    if not receive.poll(settle_seconds):  # a run that just started goes first
        _connect_to_prefect()
    try:
        flow_run = receive.recv()
    except EOFError:  # the worker stopped, or died
        return
    receive.close()
    target(str(flow_run.id), flow_run)


def _connect_to_prefect() -> None:
    """Enter a Prefect client context for the rest of this process, so that what each
    new client costs is paid before the run arrives: making it (Prefect loads the CA
    bundle into an SSL context for every client, ~20 ms here), the server version check
    and the connection (the context's entry), and the CSRF-token request its first
    change request makes (a one-row read of the work pools). If Prefect cannot be
    reached now, the run makes its own client when it comes."""
    from prefect.context import SyncClientContext
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # no server named: nothing to connect to ahead
        return
    try:
        context = SyncClientContext()
        context.__enter__()
        context.client.read_work_pools(limit=1)
    except Exception as exc:
        log.debug("standby: no Prefect client yet (%s)", exc)


def _observe_suspension_in_background() -> None:
    """Let Prefect's suspension observer connect while the run starts.

    For a deployment's run, Prefect's engine opens a websocket subscription of its own
    (for a `Suspended` state set from outside) and waits until it is connected and has
    read the run's state before it proposes `RUNNING`: ~0.1-0.3 s of the start here.
    This enters Prefect's own observer in a thread, so the engine goes on at once;
    the observer still reads the run's state once connected, so a suspension asked for
    meanwhile is seen a moment later instead of before the run starts. Pinned with
    Prefect (`prefect==3.9.*`); a Prefect without the hook is left as it is.
    """
    from prefect import flow_engine

    observe = getattr(flow_engine, "observe_flow_run_suspension", None)
    if observe is None or getattr(observe, "in_background", False):
        return

    @contextlib.contextmanager
    def in_background(*args: Any, **kwargs: Any) -> Iterator[None]:
        leave = threading.Event()

        def hold() -> None:
            try:
                with observe(*args, **kwargs):
                    leave.wait()
            except Exception:  # as Prefect's own thread does: the run goes on without it
                log.debug("suspension observer failed", exc_info=True)

        context = contextvars.copy_context()  # Prefect's settings and client contexts
        thread = threading.Thread(target=context.run, args=(hold,), daemon=True,
                                  name="suspension-observer")  # fmt: skip
        thread.start()
        try:
            yield
        finally:
            leave.set()
            thread.join(3)

    in_background.in_background = True  # type: ignore[attr-defined]
    flow_engine.observe_flow_run_suspension = in_background  # type: ignore[attr-defined]


def _preloaded_flow(client: SyncPrefectClient, flow_run: FlowRun) -> Flow[..., Any] | None:
    """The flow object the fork server imported, if this run's deployment points at it.

    Loading a deployment's flow means running its pull steps and executing the
    entrypoint's file again (~0.2 s here); for edgecrew's own flow both are done already.
    Any other deployment in the pool is loaded the usual way.
    """
    from executor.preload import FLOWS

    if flow_run.deployment_id is None:
        return None
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
