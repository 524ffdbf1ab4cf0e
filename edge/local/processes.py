"""Run the dev stack's parts like services: start, wait for health, restart, stop in order.

Each child gets a new session, so stopping it stops everything it spawned too: Ctrl-C on
`edgecrew dev` leaves no orphan processes. A part that dies is restarted with backoff, as
`restart: always` would; one that keeps dying is given up on with a message that names
it, says how it ended, quotes its log and says what to try.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Service:
    name: str
    argv: Sequence[str]
    health_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    restart: bool = True  # like `restart: always`
    hint: str = ""  # what a user can do when it keeps failing
    stop_grace: float = 10.0  # SIGTERM, then SIGKILL after this (workers drain in it)


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff doubles from `first_delay` up to `max_delay`; more than `max_crashes`
    crashes within `window` seconds means the part cannot run here: give up."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    max_crashes: int = 5
    window: float = 300.0
    start_timeout: float = 180.0  # a restarted part must be healthy again within this
    probe_every: float = 10.0  # a running part's health URL is asked this often
    probe_timeout: float = 5.0
    max_misses: int = 3  # unanswered probes in a row before a wedged part is restarted

    def delay(self, recent_crashes: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** max(0, recent_crashes - 1)))


class ServiceFailed(RuntimeError):
    """A part could not start, or kept dying; the message says which, how and what to do."""


@dataclass
class _Child:
    service: Service
    process: subprocess.Popen[bytes]
    started_at: float
    healthy: bool = True
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    next_probe: float = 0.0
    misses: int = 0


class Supervisor:
    """Owns the child processes of the dev stack."""

    def __init__(
        self,
        log_dir: Path,
        *,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log_dir = log_dir
        self._policy = policy or RestartPolicy()
        self._clock = clock
        self._children: list[_Child] = []

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    def log_path(self, service: Service) -> Path:
        return self._log_dir / f"{service.name}.log"

    def pid(self, name: str) -> int:
        """The process id of a running service (benchmarks measure its process group)."""
        return self._child(name).process.pid

    def start(self, service: Service, *, timeout: float = 120.0) -> None:
        """Start a service and return once its health URL answers 200.

        A part that cannot start at all is reported at once (with its log), not retried:
        restarts are for parts that die after they have worked.
        """
        child = _Child(service, self._spawn(service), self._clock(), healthy=False)
        self._children.append(child)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise ServiceFailed(self.diagnose(service, child.process, "while starting"))
            if _answers(service.health_url):
                child.healthy = True
                return
            time.sleep(0.25)
        late = f"was not healthy at {service.health_url} within {timeout:.0f} s"
        raise ServiceFailed(self.diagnose(service, None, late))

    def watch(self) -> list[str]:
        """One supervision pass: restart what died (after its backoff), note what became
        healthy again. Returns what happened, for the console; raises ServiceFailed when
        a part has crashed too often to go on."""
        now = self._clock()
        return [event for child in self._children if (event := self._watch(child, now))]

    def dead_parts(self) -> list[str]:
        """A diagnosis of each part whose process has ended (and not been restarted)."""
        return [
            self.diagnose(child.service, child.process, "")
            for child in self._children
            if child.process.poll() is not None
        ]

    def stop(self, name: str) -> None:
        """Stop one service (its whole process group)."""
        child = self._child(name)
        self._children.remove(child)
        _stop_group(child.process, child.service.stop_grace)

    def stop_all(self) -> None:
        """Stop the newest first, each before the next: workers report their runs to
        Prefect and the edge while both are still up. A second Ctrl-C meanwhile does not
        cut this short (it would orphan the rest: each part has its own session)."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
        try:
            while self._children:
                child = self._children.pop()
                _stop_group(child.process, child.service.stop_grace)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def diagnose(self, service: Service, process: subprocess.Popen[bytes] | None, what: str) -> str:
        """`name <how it ended> <what>`, then its last log lines and the hint."""
        ended = process is not None and process.returncode is not None
        how = describe_exit(process.returncode) if process is not None and ended else ""
        lines = [f"{service.name} {how} {what}".replace("  ", " ").strip()]
        tail = last_lines(self.log_path(service))
        if tail:
            lines += [f"last lines of {self.log_path(service)}:", *(f"  {t}" for t in tail)]
        else:
            lines.append(f"its log {self.log_path(service)} is empty")
        if service.hint:
            lines.append(f"what to do: {service.hint}")
        return "\n".join(lines)

    # -- internals -----------------------------------------------------------------------

    def _watch(self, child: _Child, now: float) -> str | None:
        service, policy = child.service, self._policy
        if child.restart_at is not None:
            if now < child.restart_at:
                return None
            _signal_group(child.process, signal.SIGKILL)  # what the dead leader left behind
            child.process = self._spawn(service)
            child.started_at, child.restart_at, child.healthy = now, None, False
            return f"{service.name}: restarted (pid {child.process.pid})"
        if child.process.poll() is None:
            if child.healthy:
                return self._probe(child, now)
            if _answers(service.health_url, timeout=0.5):
                child.healthy = True
                return f"{service.name}: healthy again"
            if now - child.started_at < policy.start_timeout:
                return None
            _stop_group(child.process, 2.0)  # hung in its start: counts as a crash
        if not service.restart:
            raise ServiceFailed(self.diagnose(service, child.process, "and does not restart"))
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > policy.window:
            child.crashes.popleft()
        ended = describe_exit(child.process.returncode)
        if len(child.crashes) > policy.max_crashes:
            often = f"— {len(child.crashes)} crashes within {policy.window:.0f} s; giving up"
            raise ServiceFailed(self.diagnose(service, child.process, often))
        delay = policy.delay(len(child.crashes))
        child.restart_at = now + delay
        return (
            f"{service.name} {ended}; restarting in {delay:.0f} s "
            f"(crash {len(child.crashes)} of {policy.max_crashes} allowed in "
            f"{policy.window:.0f} s; log: {self.log_path(service)})"
        )

    def _probe(self, child: _Child, now: float) -> str | None:
        """Every `probe_every` s, ask a running part's health URL; after `max_misses`
        unanswered probes in a row it is wedged: stop it, and the next pass restarts it."""
        policy = self._policy
        if now < child.next_probe:
            return None
        child.next_probe = now + policy.probe_every
        if _answers(child.service.health_url, timeout=policy.probe_timeout):
            child.misses = 0
            return None
        child.misses += 1
        if child.misses < policy.max_misses:
            return None
        child.misses = 0
        _stop_group(child.process, 2.0)
        return (
            f"{child.service.name}: no answer from {child.service.health_url} "
            f"{policy.max_misses} times in a row; stopped it to restart it"
        )

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.service.name == name:
                return child
        raise KeyError(name)

    def _spawn(self, service: Service) -> subprocess.Popen[bytes]:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(service).open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(  # noqa: S603 - argv is built by us, never a shell
                list(service.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **service.env},
                start_new_session=True,
            )


def describe_exit(returncode: int | None) -> str:
    """'was killed by SIGSEGV (signal 11)', 'exited with code 1'."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by {name} (signal {-returncode})"
    return f"exited with code {returncode}"


def last_lines(path: Path, count: int = 12, *, max_bytes: int = 16_384) -> list[str]:
    """The last non-empty lines of a log file (read from its end; a log can be large)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - max_bytes))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def _answers(url: str, *, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    _signal_group(process, signal.SIGKILL)  # whatever of the group is left
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    # The whole group, even when its leader is gone: a worker killed alone leaves its
    # flow runs behind. Safe: Linux never reuses a pid while a group of that id exists.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
