"""Start child services in their own process groups, wait for health, stop them all.

Each child gets a new session, so stopping it stops everything it spawned too: Ctrl-C on
`edgecrew dev` leaves no orphan processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


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
    restart: bool = False  # like `restart: always`: a crashed worker comes back


class ServiceFailed(RuntimeError):
    """A service exited or did not become healthy; the message points at its log."""


class Supervisor:
    """Owns the child processes of the dev stack."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[tuple[Service, subprocess.Popen[bytes]]] = []

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    def log_path(self, service: Service) -> Path:
        return self._log_dir / f"{service.name}.log"

    def pid(self, name: str) -> int:
        """The process id of a running service (benchmarks measure its process group)."""
        return next(p.pid for s, p in self._children if s.name == name)

    def start(self, service: Service, *, timeout: float = 120.0) -> None:
        """Start a service and return once its health URL answers 200."""
        process = self._spawn(service)
        self._children.append((service, process))
        self._wait_healthy(service, process, timeout)

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

    def check_alive(self) -> list[str]:
        """Restart children that may restart; raise if another has exited. Returns restarts."""
        restarted = []
        for index, (service, process) in enumerate(self._children):
            if process.poll() is None:
                continue
            if not service.restart:
                raise ServiceFailed(
                    f"{service.name} exited with code {process.returncode}; "
                    f"see {self.log_path(service)}"
                )
            self._children[index] = (service, self._spawn(service))
            restarted.append(service.name)
        return restarted

    def stop(self, name: str, *, grace: float = 10.0) -> None:
        """Stop one service (its whole process group)."""
        for index, (service, process) in enumerate(self._children):
            if service.name == name:
                _stop_group(process, grace)
                del self._children[index]
                return
        raise KeyError(name)

    def stop_all(self, *, grace: float = 10.0) -> None:
        """SIGTERM every process group (newest first), then SIGKILL what is left."""
        for _, process in reversed(self._children):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in reversed(self._children):
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self._children.clear()

    def _wait_healthy(
        self, service: Service, process: subprocess.Popen[bytes], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceFailed(
                    f"{service.name} exited with code {process.returncode} while starting; "
                    f"see {self.log_path(service)}"
                )
            try:
                if httpx.get(service.health_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise ServiceFailed(
            f"{service.name} was not healthy at {service.health_url} within {timeout:.0f} s; "
            f"see {self.log_path(service)}"
        )


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
