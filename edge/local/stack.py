"""The services of the local stack: Prefect server, work pools and deployments, workers.

`edgecrew dev` starts these beside the LLM server and the edge; the integration tests and
benchmarks start the same ones, so what is tested is what users run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from edge.local import postgres
from edge.local.demo import REPO_ROOT
from edge.local.processes import Service, ServiceFailed, free_port
from executor.config import EdgecrewConfig, load_config
from executor.deploy import QUIET
from shared.signing import new_secret

#: Prefect's settings for its database (either name); set, they win over ours.
_PREFECT_DATABASE_URLS = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)


def dev_secrets(data_dir: Path) -> dict[str, str]:
    """The executor secret and the master key of local mode, made once and kept."""
    path = data_dir / "dev-secrets.json"
    if path.is_file():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    data_dir.mkdir(parents=True, exist_ok=True)
    secrets = {
        "EDGECREW_EXECUTOR_SECRET": new_secret(),
        "EDGECREW_SECRET_KEY": new_secret().removeprefix("whsec_"),
    }
    path.write_text(json.dumps(secrets))
    path.chmod(0o600)
    return secrets


def prefect_services(port: int, data_dir: Path) -> list[Service]:
    """Prefect server and the database it needs, to start in this order.

    PostgreSQL (embedded, `edge.local.postgres`) unless Prefect's own connection URL is
    set, or `EDGECREW_PREFECT_DATABASE=sqlite` asks for Prefect's default SQLite (also
    the fallback where the PostgreSQL wheel is not installed): SQLite cannot take
    concurrent run creation, see docs/benchmarks.md.
    """
    configured = any(os.environ.get(name) for name in _PREFECT_DATABASE_URLS)
    wants_sqlite = os.environ.get("EDGECREW_PREFECT_DATABASE", "").lower() == "sqlite"
    if configured or wants_sqlite or not postgres.available():
        return [prefect_server(port, data_dir)]
    database = postgres.embedded_postgres(data_dir)
    return [database.service, prefect_server(port, data_dir, database_url=database.url)]


def prefect_server(port: int, data_dir: Path, *, database_url: str | None = None) -> Service:
    """Prefect server under `data_dir`, analytics off; on SQLite unless `database_url`."""
    env = {
        **QUIET,
        "PREFECT_HOME": str(data_dir / "prefect"),
        # The late-runs service moves every run still waiting 15 s after its scheduled
        # time to `Late`: one more orchestrated state change and event per job, i.e. as
        # much work again as creating it (docs/benchmarks.md). Jobs wait in the pools'
        # queues by design (a concurrency limit, no free worker), so in local mode that
        # label is noise that halves how fast a backlog reaches Prefect; the edge's job
        # status says `queued`. Workers take Scheduled and Late runs alike.
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": os.environ.get(
            "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "false"
        ),
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return Service(
        name="prefect",
        argv=[sys.executable, "-m", "prefect", "server", "start",
              "--host", "127.0.0.1", "--port", str(port)],
        health_url=f"http://127.0.0.1:{port}/api/health",
        env=env,
        hint=f"is port {port} free? if its database is damaged, move {data_dir / 'prefect'} away",
    )  # fmt: skip


def repo_crews() -> EdgecrewConfig:
    """The crews of this checkout's edgecrew.toml (benchmarks and tests run them)."""
    return load_config(REPO_ROOT / "edgecrew.toml")


def deploy_flows(api_url: str, pools: Mapping[str, int], *, root: Path = REPO_ROOT) -> None:
    """The executor's pools and deployments (`executor.deploy`) for the local stack."""
    from executor.deploy import DeployFailed, deploy_pools

    within = int(os.environ.get("EDGECREW_ZOMBIE_SECONDS", "90"))
    try:
        deploy_pools(api_url, pools, root=root, zombie_seconds=within)
    except DeployFailed as exc:
        raise ServiceFailed(str(exc)) from exc


def worker(pool: str, api_url: str, env: dict[str, str], *, limit: int = 4) -> Service:
    """edgecrew's warm worker for one pool (`executor.worker`): runs start in ~0.1 s."""
    port = free_port()
    # Prefect counts a worker offline after three missed heartbeats; the edge then
    # recovers the runs it had claimed (tests shorten it).
    heartbeat = os.environ.get("EDGECREW_WORKER_HEARTBEAT_SECONDS", "30")
    return Service(
        name=f"worker-{pool}",
        argv=[sys.executable, "-m", "executor.worker", "--pool", pool, "--limit", str(limit),
              "--healthcheck-port", str(port), "--heartbeat-seconds", heartbeat],
        health_url=f"http://127.0.0.1:{port}/health",
        restart=True,
        env=_executor_env(api_url, env),
        # Its own grace for a flow that ignores SIGTERM is 10 s, then it reports the run.
        stop_grace=20.0,
        hint="its log names the failing step or crew (try `edgecrew crews check`); "
        "Prefect must be reachable at PREFECT_API_URL",
    )  # fmt: skip


def process_worker(pool: str, api_url: str, env: dict[str, str], *, limit: int = 4) -> Service:
    """Prefect's own process worker polling every second (default 10 s): the baseline the
    benchmarks compare with, and what serves the pools without edgecrew's worker."""
    port = free_port()
    return Service(
        name=f"process-worker-{pool}",
        argv=[sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
              "--type", "process", "--limit", str(limit), "--with-healthcheck"],
        health_url=f"http://127.0.0.1:{port}/health",
        restart=True,
        env={
            **_executor_env(api_url, env),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        },
    )  # fmt: skip


def _executor_env(api_url: str, env: dict[str, str]) -> dict[str, str]:
    return {
        **QUIET,
        # Heartbeats let the zombie automation crash runs whose worker died.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        **env,
        "PREFECT_API_URL": api_url,
        "EDGECREW_EXECUTOR_DIR": str(REPO_ROOT),
    }
