"""edgecrew's warm worker, one `tick()` at a time, against a recording fake Prefect client
and fake processes (the Prefect API and the processes are the ports under test here;
tests/test_jobs_stack.py runs the real worker against a real Prefect server)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Completed, Pending, Running, Scheduled

from executor.warm import WarmProcesses
from executor.worker import WarmWorker, WorkerOptions
from tests.conftest import Clock
from tests.doubles.processes import record_the_run, sleep_for_a_minute

FLOW = uuid4()


@dataclass
class FakeProcess:
    pid: int
    exitcode: int | None = None
    stubborn: bool = False  # ignores SIGTERM
    signals: list[str] = field(default_factory=list)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def exit(self, code: int) -> None:
        self.exitcode = code

    def terminate(self) -> None:
        self.signals.append("TERM")
        if not self.stubborn:
            self.exitcode = -15

    def kill(self) -> None:
        self.signals.append("KILL")
        self.exitcode = -9

    def join(self, timeout: float | None = None) -> None:
        pass


class FakeLauncher:
    def __init__(self) -> None:
        self.launched: dict[UUID, FakeProcess] = {}
        self.flow_runs: dict[UUID, FlowRun] = {}  # as handed to each process

    def launch(self, flow_run: FlowRun) -> FakeProcess:
        process = FakeProcess(pid=1000 + len(self.launched))
        self.launched[flow_run.id] = process
        # What the real launcher does with it: pickle it to the run's process.
        self.flow_runs[flow_run.id] = pickle.loads(pickle.dumps(flow_run))
        return process


class FakePrefect:
    """The SyncPrefectClient calls the worker makes, recorded; states kept per run."""

    def __init__(self) -> None:
        self.scheduled: list[UUID] = []
        self.states: dict[UUID, Any] = {}
        self.taken_elsewhere: set[UUID] = set()
        self.calls: list[tuple[str, Any]] = []
        self.down = False

    def _call(self, name: str, detail: Any = None) -> None:
        if self.down:
            raise httpx.ConnectError("connection refused")
        self.calls.append((name, detail))

    def send_worker_heartbeat(self, **kwargs: Any) -> None:
        self._call("heartbeat", kwargs)

    def get_scheduled_flow_runs_for_work_pool(self, **kwargs: Any) -> list[Any]:
        self._call("poll", kwargs)
        return [SimpleNamespace(flow_run=FlowRun(id=i, flow_id=FLOW, state=Scheduled()))
                for i in self.scheduled]  # fmt: skip

    def set_flow_run_state(self, flow_run_id: UUID, state: Any, force: bool = False) -> Any:
        self._call("set_state", (flow_run_id, state.type, force))
        if flow_run_id in self.taken_elsewhere:  # another worker claimed it first
            return _result(SetStateStatus.ABORT, None)
        current = self.states.get(flow_run_id)
        if current is not None and current.is_final() and not force:
            return _result(SetStateStatus.REJECT, current)
        self.states[flow_run_id] = state
        if flow_run_id in self.scheduled and state.type == StateType.PENDING:
            self.scheduled.remove(flow_run_id)
        return _result(SetStateStatus.ACCEPT, state)

    def read_flow_runs(self, *, flow_run_filter: Any) -> list[Any]:
        self._call("read_runs")
        ids = set(flow_run_filter.id.any_)
        wanted = set(flow_run_filter.state.type.any_)
        return [
            SimpleNamespace(id=i, state=s)
            for i, s in self.states.items()
            if i in ids and s.type in wanted
        ]

    def read_flow_run(self, flow_run_id: UUID) -> Any:
        self._call("read_run", flow_run_id)
        return SimpleNamespace(id=flow_run_id, state=self.states.get(flow_run_id))

    def update_flow_run(self, flow_run_id: UUID, **kwargs: Any) -> None:
        self._call("update", (flow_run_id, kwargs))

    def update_flow_run_labels(self, flow_run_id: UUID, labels: dict[str, str]) -> None:
        self._call("labels", (flow_run_id, labels))

    def states_set(self, name: str = "set_state") -> list[Any]:
        return [detail for call, detail in self.calls if call == name]


def _result(status: SetStateStatus, state: Any) -> Any:
    """An orchestration result parsed as the real client parses one (its state is a
    generic `State[T]`, which does not pickle as it is)."""
    body = {"status": status.value, "details": {"type": "accept_details"},
            "state": state.model_dump(mode="json") if state is not None else None}  # fmt: skip
    return OrchestrationResult.model_validate(body)


@pytest.fixture
def prefect() -> FakePrefect:
    return FakePrefect()


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def fresh_fork_server() -> Iterator[None]:
    """multiprocessing keeps one fork server per process, started with the preload list
    of the first user: stop it around tests that need their own."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    yield
    forkserver._forkserver._stop()  # type: ignore[attr-defined]


def make_worker(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock, **kw: Any
) -> WarmWorker:
    options = WorkerOptions(pool="cpu", name="w1", limit=kw.pop("limit", 2), **kw)
    return WarmWorker(client=prefect, launcher=launcher, options=options, clock=clock)


def started_run(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock, **kw: Any
) -> tuple[WarmWorker, UUID]:
    """A worker that has claimed and started one run."""
    run = uuid4()
    prefect.scheduled = [run]
    worker = make_worker(prefect, launcher, clock, **kw)
    worker.tick()
    return worker, run


def cancelling(prefect: FakePrefect, run: UUID) -> None:
    prefect.states[run] = Running().model_copy(
        update={"type": StateType.CANCELLING, "name": "Cancelling"}
    )


def test_claims_scheduled_runs_up_to_the_limit_and_starts_each_once(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    runs = [uuid4() for _ in range(3)]
    prefect.scheduled = list(runs)
    worker = make_worker(prefect, launcher, clock, limit=2)

    worker.tick()

    assert list(launcher.launched) == runs[:2], "two slots, two runs, in the order given"
    assert [(i, t) for i, t, _ in prefect.states_set()] == [
        (runs[0], StateType.PENDING),
        (runs[1], StateType.PENDING),
    ]
    pids = [d[1]["infrastructure_pid"] for d in prefect.states_set("update")]
    assert [p.split(":")[1] for p in pids] == ["1000", "1001"]
    # Who holds each run, for the edge's reconciler: in the claim, then as Prefect's labels.
    assert prefect.states[runs[0]].message == "Claimed by worker w1"
    handed = launcher.flow_runs[runs[0]]
    assert (handed.state_type, handed.state.message) == (StateType.PENDING, "Claimed by worker w1")
    assert handed.state.id == prefect.states[runs[0]].id, "the run as claimed: not read again"
    assert prefect.states_set("labels") == [
        (run, {"prefect.worker.name": "w1", "prefect.worker.type": "edgecrew",
               "prefect.work-pool.name": "cpu"})
        for run in runs[:2]
    ]  # fmt: skip
    heartbeat = prefect.states_set("heartbeat")
    assert heartbeat == [
        {"work_pool_name": "cpu", "worker_name": "w1", "heartbeat_interval_seconds": 30.0}
    ]

    clock.advance(1)
    worker.tick()
    assert len(launcher.launched) == 2, "full: the third run waits"
    assert not prefect.states_set("poll")[1:], "a full worker does not even poll"

    launcher.launched[runs[0]].exit(0)
    prefect.states[runs[0]] = Completed()
    clock.advance(1)
    worker.tick()
    assert runs[2] in launcher.launched, "a finished run frees its slot"


def test_a_run_another_worker_claimed_first_is_not_started(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    mine, theirs = uuid4(), uuid4()
    prefect.scheduled = [theirs, mine]
    prefect.taken_elsewhere = {theirs}
    make_worker(prefect, launcher, clock).tick()
    assert list(launcher.launched) == [mine]


def test_a_run_deleted_before_the_claim_is_skipped(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    gone = uuid4()
    prefect.scheduled = [gone]

    def deleted(*args: Any, **kwargs: Any) -> Any:
        raise ObjectNotFound(http_exc=Exception("404"))

    prefect.set_flow_run_state = deleted  # type: ignore[method-assign]
    make_worker(prefect, launcher, clock).tick()
    assert launcher.launched == {}


def test_a_process_that_dies_mid_run_is_reported_crashed(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    worker, run = started_run(prefect, launcher, clock)
    prefect.states[run] = Running()
    launcher.launched[run].exit(-9)  # e.g. the OOM killer

    worker.tick()

    (crash,) = [s for s in prefect.states_set() if s[1] == StateType.CRASHED]
    assert crash == (run, StateType.CRASHED, False), "proposed, not forced"
    assert prefect.states[run].message.endswith("(exit code -9).")
    assert worker.runs == {}


def test_a_clean_exit_reports_nothing(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    worker, run = started_run(prefect, launcher, clock)
    prefect.states[run] = Completed()
    launcher.launched[run].exit(0)
    worker.tick()
    assert [s[1] for s in prefect.states_set()] == [StateType.PENDING]


def test_a_cancelling_run_is_stopped_then_marked_cancelled(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    worker, run = started_run(prefect, launcher, clock)
    cancelling(prefect, run)

    clock.advance(2)
    worker.tick()  # sees CANCELLING, sends SIGTERM; the process exits
    assert launcher.launched[run].signals == ["TERM"]
    clock.advance(1)
    worker.tick()  # reaps it

    assert prefect.states_set()[-1] == (run, StateType.CANCELLED, True)
    assert worker.runs == {}


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    worker, run = started_run(prefect, launcher, clock, kill_grace_seconds=10)
    launcher.launched[run].stubborn = True
    cancelling(prefect, run)
    clock.advance(2)
    worker.tick()
    clock.advance(5)
    worker.tick()
    assert launcher.launched[run].signals == ["TERM"], "still within the grace"
    clock.advance(6)
    worker.tick()
    assert launcher.launched[run].signals == ["TERM", "KILL"]
    clock.advance(1)
    worker.tick()
    assert prefect.states[run].type == StateType.CANCELLED


def test_an_unreachable_api_is_logged_once_and_nothing_is_forgotten(
    prefect: FakePrefect,
    launcher: FakeLauncher,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker, run = started_run(prefect, launcher, clock)
    prefect.states[run] = Running()
    launcher.launched[run].exit(1)
    prefect.down = True

    with caplog.at_level(logging.WARNING, logger="edgecrew.worker"):
        for _ in range(5):
            clock.advance(1)
            worker.tick()  # never raises
    assert run in worker.runs, "the dead run is kept until Prefect hears of it"
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == len(set(failures)) and failures, "each kind of failure once"

    prefect.down = False
    clock.advance(1)
    worker.tick()
    assert prefect.states[run].type == StateType.CRASHED and worker.runs == {}


def test_drain_stops_what_is_left_and_reports_it(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    runs = [uuid4(), uuid4()]
    prefect.scheduled = list(runs)
    worker = make_worker(prefect, launcher, clock)
    worker.tick()
    for run in runs:
        prefect.states[run] = Running()
    prefect.states[runs[0]] = Completed()  # finished just as the worker stops
    launcher.launched[runs[0]].exit(0)

    worker.drain(0)

    assert all(p.exitcode is not None for p in launcher.launched.values())
    assert prefect.states[runs[0]].type == StateType.COMPLETED
    assert prefect.states[runs[1]].type == StateType.CRASHED
    assert "the worker stopped" in prefect.states[runs[1]].message
    assert worker.runs == {}


def test_a_run_whose_process_cannot_start_is_given_back(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    run = uuid4()
    prefect.scheduled = [run]

    def cannot_fork(flow_run: FlowRun) -> FakeProcess:
        raise OSError(11, "Resource temporarily unavailable")

    launcher.launch = cannot_fork  # type: ignore[method-assign]
    worker = make_worker(prefect, launcher, clock)
    worker.tick()

    assert [(kind, forced) for _, kind, forced in prefect.states_set()] == [
        (StateType.PENDING, False),
        (StateType.SCHEDULED, True),
    ], "claimed, then released rather than left Pending"
    assert worker.runs == {}


def test_a_run_cancelled_before_its_failed_start_is_not_revived(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    run = uuid4()
    prefect.scheduled = [run]

    def cancelled_then_cannot_fork(flow_run: FlowRun) -> FakeProcess:
        prefect.states[run] = Cancelled()  # the edge cancels a Pending run outright
        raise OSError(11, "Resource temporarily unavailable")

    launcher.launch = cancelled_then_cannot_fork  # type: ignore[method-assign]
    make_worker(prefect, launcher, clock).tick()
    assert prefect.states[run].type == StateType.CANCELLED


def test_draining_still_honours_a_cancel(
    prefect: FakePrefect, launcher: FakeLauncher, clock: Clock
) -> None:
    worker, run = started_run(prefect, launcher, clock)
    prefect.states[run] = Running()
    cancelling(prefect, run)
    clock.advance(2)  # cancelled a while after it started

    worker.drain(600)  # returns once the cancelled run's process is gone

    assert launcher.launched[run].signals == ["TERM"]
    assert prefect.states[run].type == StateType.CANCELLED, "cancelled, not crashed"


@pytest.mark.usefixtures("fresh_fork_server")
def test_runs_outlive_a_dead_fork_server_and_can_still_be_stopped() -> None:
    """Flow-run processes are the fork server's children: if it dies, multiprocessing
    calls them finished (exit 255) while they run on. The worker must not."""
    from multiprocessing import forkserver

    processes = WarmProcesses(preload=["prefect.client.schemas.objects"],
                              target=sleep_for_a_minute)  # fmt: skip
    processes.warm_up()
    try:
        run = processes.launch(FlowRun(id=uuid4(), flow_id=FLOW))
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)  # type: ignore[attr-defined]
        time.sleep(0.5)

        assert run.is_alive() and run.exitcode is None, "still running"
        run.terminate()
        run.join(10)
        assert not run.is_alive()
    finally:
        processes.close()


@pytest.fixture
def recording_processes(fresh_fork_server: None) -> Iterator[WarmProcesses]:
    """A real fork server whose runs record what they were handed; its standby is set
    up at once (nothing to connect to here)."""
    processes = WarmProcesses(
        preload=["prefect.client.schemas.objects"], target=record_the_run, settle_seconds=0
    )
    processes.warm_up()
    try:
        yield processes
    finally:
        processes.close()


def test_a_run_goes_to_the_standby_process_forked_ahead_with_the_flow_run_as_claimed(
    recording_processes: WarmProcesses, tmp_path: Path
) -> None:
    standby = recording_processes._standby
    assert standby is not None and standby.process.is_alive(), "forked before any run"

    records = []
    for n in range(2):
        record = tmp_path / f"run-{n}.json"
        flow_run = FlowRun(id=uuid4(), flow_id=FLOW, parameters={"record": str(record)},
                           state=Pending(), state_type=StateType.PENDING)  # fmt: skip
        run = recording_processes.launch(flow_run)
        run.join(60)
        assert run.exitcode == 0
        records.append(json.loads(record.read_text()))
        assert records[-1] == {"id": str(flow_run.id), "pid": run.pid, "state": "PENDING"}
    assert records[0]["pid"] == standby.process.pid, "the first run: the standby"
    spare = recording_processes._standby
    assert spare is not None and spare.process.is_alive(), "and another stands by"


def test_a_dead_standby_is_replaced_by_a_fresh_fork_and_close_ends_it(
    recording_processes: WarmProcesses, tmp_path: Path
) -> None:
    assert recording_processes._standby is not None
    dead = recording_processes._standby.process
    os.kill(dead.pid, signal.SIGKILL)  # type: ignore[arg-type]
    dead.join(5)

    record = tmp_path / "run.json"
    flow_run = FlowRun(id=uuid4(), flow_id=FLOW, parameters={"record": str(record)})
    run = recording_processes.launch(flow_run)
    run.join(60)
    assert run.exitcode == 0 and run.pid != dead.pid
    assert json.loads(record.read_text())["pid"] == run.pid

    spare = recording_processes._standby
    assert spare is not None and spare.process.is_alive()
    recording_processes.close()
    assert not spare.process.is_alive(), "a stopping worker leaves no standby behind"


@pytest.mark.usefixtures("fresh_fork_server")
def test_warm_up_names_preload_modules_the_fork_server_could_not_import() -> None:
    """A real fork server: it skips modules that fail to import without a word, so the
    worker asks a forked probe what is missing and why (and logs it)."""
    processes = WarmProcesses(preload=["json", "edgecrew_no_such_module"])
    missing = processes.warm_up()
    assert list(missing) == ["edgecrew_no_such_module"]
    assert missing["edgecrew_no_such_module"].startswith("ModuleNotFoundError")


@pytest.mark.usefixtures("fresh_fork_server")
def test_a_fork_server_killed_by_its_preload_is_a_clear_error() -> None:
    processes = WarmProcesses(preload=["tests.doubles.broken_preload"])
    with pytest.raises(RuntimeError, match="fork server died while importing"):
        processes.warm_up()
