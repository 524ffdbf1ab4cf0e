"""The dev stack's supervisor with real child processes: restarts with backoff, gives up
with a diagnosis after repeated crashes, stops the newest part first."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.local.processes import RestartPolicy, Service, ServiceFailed, Supervisor, describe_exit
from tests.support import free_port

TINY = str(Path(__file__).parent / "doubles" / "tiny_service.py")
QUICK = RestartPolicy(
    first_delay=0.1, max_delay=0.4, max_crashes=2, window=60,
    probe_every=0.2, probe_timeout=0.5, max_misses=2,
)  # fmt: skip


def tiny(name: str, events: Path, **options: object) -> Service:
    port = free_port()
    return Service(
        name=name,
        argv=[sys.executable, TINY, str(port), name, str(events)],
        health_url=f"http://127.0.0.1:{port}/health",
        **options,  # type: ignore[arg-type]
    )


def watch_until(supervisor: Supervisor, wanted: str, timeout: float = 20) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += supervisor.watch()
        if any(wanted in event for event in seen):
            return seen
        time.sleep(0.05)
    pytest.fail(f"no {wanted!r} in {seen}")


def test_a_part_that_dies_is_restarted_and_becomes_healthy_again(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    supervisor.start(tiny("prefect", tmp_path / "events"))
    first = supervisor.pid("prefect")
    try:
        os.killpg(first, signal.SIGKILL)
        events = watch_until(supervisor, "healthy again")
        assert events[0].startswith("prefect was killed by SIGKILL (signal 9); restarting in 0 s")
        assert "prefect: restarted" in events[1]
        assert supervisor.pid("prefect") != first
    finally:
        supervisor.stop_all()


def test_a_part_that_keeps_dying_is_given_up_on_with_its_log_and_a_hint(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    supervisor.start(tiny("llm", tmp_path / "events", hint="try another model server"))
    try:
        with pytest.raises(ServiceFailed) as failed:
            for _ in range(QUICK.max_crashes + 1):
                os.killpg(supervisor.pid("llm"), signal.SIGKILL)
                watch_until(supervisor, "healthy again")
    finally:
        supervisor.stop_all()
    message = str(failed.value)
    assert message.startswith("llm was killed by SIGKILL (signal 9) — 3 crashes within 60 s")
    assert "llm serving on" in message, "the last lines of its log are quoted"
    assert message.endswith("what to do: try another model server")


def test_a_part_that_cannot_start_is_reported_at_once(tmp_path: Path) -> None:
    crash = "print('loading the model', flush=True); import os; os.abort()"
    service = Service(name="llm", argv=[sys.executable, "-c", crash], health_url="http://127.0.0.1:9/",
                      hint="see docs/local-llm.md")  # fmt: skip
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    with pytest.raises(ServiceFailed) as failed:
        supervisor.start(service, timeout=30)
    supervisor.stop_all()
    lines = str(failed.value).splitlines()
    assert lines[0] == "llm was killed by SIGABRT (signal 6) while starting"
    assert "  loading the model" in lines
    assert lines[-1] == "what to do: see docs/local-llm.md"


def test_stop_all_stops_the_newest_part_first_and_waits_for_it(tmp_path: Path) -> None:
    events = tmp_path / "events"
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    supervisor.start(tiny("prefect", events))
    supervisor.start(tiny("worker", events))
    supervisor.stop_all()
    assert events.read_text().splitlines() == [
        "worker term",
        "worker exit",
        "prefect term",
        "prefect exit",
    ], "the worker reports its runs while Prefect is still up"


def alive(pid: int, *, settle: float = 5.0) -> bool:
    """Whether `pid` still runs after up to `settle` s (a signal's delivery is not
    instantaneous on a busy machine)."""
    deadline = time.monotonic() + settle
    while True:
        try:
            os.kill(pid, 0)
            running = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            running = False
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def test_what_a_dead_part_left_in_its_group_is_killed_before_it_restarts(
    tmp_path: Path,
) -> None:
    child_file = tmp_path / "child"
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    supervisor.start(tiny("worker", tmp_path / "events", env={"TINY_CHILD": str(child_file)}))
    first_child = int(child_file.read_text())
    try:
        os.kill(supervisor.pid("worker"), signal.SIGKILL)  # the leader alone, as a crash
        watch_until(supervisor, "healthy again")
        assert not alive(first_child), "the dead worker's flow run was not left running"
        second_child = int(child_file.read_text())
        os.kill(supervisor.pid("worker"), signal.SIGKILL)
    finally:
        supervisor.stop_all()
    assert not alive(second_child), "nor after stop_all, when its leader was already dead"


def test_a_part_that_stops_answering_is_restarted(tmp_path: Path) -> None:
    wedge = tmp_path / "wedged"
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    supervisor.start(tiny("llm", tmp_path / "events", env={"TINY_WEDGE": str(wedge)}))
    first = supervisor.pid("llm")
    try:
        wedge.touch()
        events = watch_until(supervisor, "stopped it to restart it")
        wedge.unlink()
        events += watch_until(supervisor, "healthy again")
    finally:
        supervisor.stop_all()
    assert any("llm: restarted" in event for event in events)
    assert not alive(first)


def test_a_second_ctrl_c_does_not_cut_stopping_short(tmp_path: Path) -> None:
    # As `edgecrew dev` arms it; a CI runner may have started us with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    events = tmp_path / "events"
    supervisor = Supervisor(tmp_path / "logs", policy=QUICK)
    supervisor.start(tiny("prefect", events))
    supervisor.start(tiny("worker", events))
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))  # mid-stop
    timer.start()
    supervisor.stop_all()
    timer.join()
    try:
        assert events.read_text().splitlines()[-1] == "prefect exit", "every part was stopped"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler restored"
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("code", "said"),
    [(0, "exited with code 0"), (3, "exited with code 3"),
     (-11, "was killed by SIGSEGV (signal 11)"), (None, "is still running")],
)  # fmt: skip
def test_exits_are_described_for_people(code: int | None, said: str) -> None:
    assert describe_exit(code) == said
