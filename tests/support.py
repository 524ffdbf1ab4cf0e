"""Helpers for tests: the local ports on SQLite, and for tests that start real processes,
`edgecrew dev` and a webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.local.numpy_index import NumpyVectorIndex
from edge.local.processes import free_port
from edge.local.sqlite_kv import SqliteKV
from edge.local.sqlite_ledger import SqliteJobLedger
from edge.ports import Ports
from tests.doubles.models import RecordingEmbedder, RecordingGenerator

__all__ = [
    "DevStack",
    "WebhookReceiver",
    "free_port",
    "port_is_open",
    "process_group",
    "processes_mentioning",
    "sqlite_ports",
]

REPO_CONFIG = Path(__file__).resolve().parents[1] / "edgecrew.toml"


def sqlite_ports(folder: Path, **ports: Any) -> Ports:
    """The ports most API tests run on: KV, the job ledger and the vector index in SQLite
    files under `folder`, the recording embedder and generator; `ports` adds the others
    (orchestrator, scheduler, deliveries) or replaces any of these."""
    defaults: dict[str, Callable[[], Any]] = {
        "kv": lambda: SqliteKV(folder / "kv.sqlite3"),
        "ledger": lambda: SqliteJobLedger(folder / "jobs.sqlite3"),
        "vectors": lambda: NumpyVectorIndex(folder / "vectors.sqlite3", dimensions=384),
        "embedder": RecordingEmbedder,
        "generator": RecordingGenerator,
    }
    made = {name: make() for name, make in defaults.items() if name not in ports}
    return Ports(**made, **ports)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str, *, within: Path | None = None) -> list[int]:
    """PIDs whose command line contains `text` (read from /proc, no extra packages);
    with `within`, only those running in that directory (one stack's parts, not those
    of another stack on the same machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text not in cmdline:
            continue
        try:
            if within is not None and Path(os.readlink(entry / "cwd")) != within:
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def process_group(group: int) -> list[int]:
    """PIDs in process group `group` (read from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == group:
                    members.append(int(entry.name))
            except ProcessLookupError:
                continue
    return members


@dataclass
class DevStack:
    """`edgecrew dev` started as a user would, on free ports, with its own data dir."""

    process: subprocess.Popen[str]
    port: int
    llm_port: int
    prefect_port: int
    env: dict[str, str]
    cwd: Path
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @contextmanager
    def running(
        cls, tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> Iterator[DevStack]:
        ports = {"port": free_port(), "llm_port": free_port(), "prefect_port": free_port()}
        base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECREW_")}
        if cache := os.environ.get("EDGECREW_LLM_CACHE_DIR"):  # one model conversion, shared
            base["EDGECREW_LLM_CACHE_DIR"] = cache
        full_env = {**base, "EDGECREW_DATA_DIR": str(tmp_path / "data"),
                    "EDGECREW_CONFIG": str(REPO_CONFIG),  # the repo's crews unless told
                    "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}  # fmt: skip
        argv = [sys.executable, "-m", "edge.local.cli", "dev", *args]
        for name, port in ports.items():
            argv += [f"--{name.replace('_', '-')}", str(port)]
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,  # so a failed test can still kill it all
        )  # fmt: skip
        stack = cls(process=process, env=full_env, cwd=tmp_path.resolve(), **ports)
        try:
            stack.wait_for("ready on", timeout)
            yield stack
        finally:
            stack.output.append(stack.interrupt())

    def processes(self, text: str) -> list[int]:
        """This stack's processes whose command line contains `text`."""
        return processes_mentioning(text, within=self.cwd)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if needle in line:
                return
        pytest.fail(f"no {needle!r} from edgecrew dev; output:\n{''.join(self.output)}")

    def interrupt(self) -> str:
        """Ctrl-C, as a user would; the rest of its output. Kills it if it ignores Ctrl-C."""
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process.stdout.close()
            raise
        with self.process.stdout:
            return self.process.stdout.read()

    def wait_for_job(self, job_id: str, key: str, timeout: float = 240) -> dict[str, Any]:
        """Poll until the job is terminal; fails the test with the job if it never is."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            url = f"{self.base_url}/v1/jobs/{job_id}"
            job = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
            if job["status"] in {"succeeded", "failed", "cancelled"}:
                return job
            time.sleep(0.5)
        pytest.fail(f"job did not finish in {timeout} s: {job}")


class WebhookReceiver:
    """A local HTTP endpoint that records every webhook it gets; answers `status` (204)
    after `delay` seconds (none), both settable while it runs."""

    def __init__(self, status: int = 204, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = status
        self.delay = delay
        self._event = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._event:
                    receiver.received.append({"headers": dict(self.headers), "body": body})
                    receiver._event.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow receiver (its own thread)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until `done()` holds (checked on every webhook received)."""
        deadline = time.monotonic() + timeout
        with self._event:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"not done within {timeout} s; got {self.received}")
                self._event.wait(remaining)

    def wait_for_event(self, event: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._event:
            while True:
                for hook in self.received:
                    if json.loads(hook["body"])["type"] == event:
                        return hook
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no {event} webhook within {timeout} s; got {self.received}")
                self._event.wait(remaining)
