"""Register the executor with Prefect: a work pool and a deployment per pool of the config.

    PREFECT_API_URL=... python -m executor.deploy [--config edgecrew.toml]

The pools are those of the crews in edgecrew.toml (and `[pools.<name>] concurrency`), so a
new pool is a line in the config, not an edit here, in prefect.yaml or in compose.yaml.
`edgecrew dev` runs the same for the local stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from executor.config import ConfigError, load_config
from shared.documents import INGESTION_POOL

#: The bulk-ingestion flow's deployment file (prefect.yaml holds the crews' one).
INGESTION_PREFECT_FILE = "prefect-ingest.yaml"

#: The pools' base job template: the process worker's settings at their defaults and no
#: job variables. Prefect validates a pool's variables schema (jsonschema, against the
#: 2020-12 metaschema, twice) on every `create_flow_run`: with the process type's six
#: variables that was a quarter of the server's CPU per run (docs/benchmarks.md), for
#: variables no deployment here sets. A plain `prefect worker start --type process` still
#: serves these pools.
LEAN_JOB_TEMPLATE = {
    "job_configuration": {"stream_output": True},
    "variables": {"type": "object", "properties": {}},
}
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "OTEL_SDK_DISABLED": "true",
}


class DeployFailed(RuntimeError):
    """A Prefect command failed; the message has its output."""


def deploy_pools(
    api_url: str, pools: Mapping[str, int], *, root: Path, zombie_seconds: int = 90
) -> None:
    """For each pool (→ its concurrency limit): a process work pool and the deployment
    `run-crew-job/<pool>` from `root`'s prefect.yaml; `ingest-documents/cpu` from
    prefect-ingest.yaml (the cpu pool is always among the config's pools); then the
    zombie automation."""
    env = {**os.environ, **QUIET, "PREFECT_API_URL": api_url, "EDGECREW_EXECUTOR_DIR": str(root)}
    prefect = [sys.executable, "-m", "prefect"]
    with tempfile.TemporaryDirectory() as folder:
        template = Path(folder) / "base-job-template.json"
        template.write_text(json.dumps(LEAN_JOB_TEMPLATE))
        for pool, concurrency in pools.items():
            _run([*prefect, "work-pool", "create", pool, "--type", "process",
                  "--base-job-template", str(template), "--overwrite"], env, root)  # fmt: skip
            # prefect.yaml's one deployment is named by EDGECREW_POOL; Prefect checks the
            # file's fields before it fills templates in, so the limit comes as an option.
            deploy = ["deploy", "--name", pool, "--concurrency-limit", str(concurrency)]
            _run([*prefect, "--no-prompt", *deploy], {**env, "EDGECREW_POOL": pool}, root)
            if pool == INGESTION_POOL:
                ingestion = [*deploy, "--prefect-file", INGESTION_PREFECT_FILE]
                _run([*prefect, "--no-prompt", *ingestion], {**env, "EDGECREW_POOL": pool}, root)
    _run([sys.executable, "-m", "executor.zombies", "--within", str(zombie_seconds)], env, root)


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DeployFailed(
            f"{' '.join(argv[2:5])} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def main(
    config: Annotated[Path | None, typer.Option(help="edgecrew.toml (default: ./)")] = None,
    zombie_seconds: Annotated[int, typer.Option(min=10)] = 90,
) -> None:
    """Create the work pools and deployments for the crews of edgecrew.toml."""
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise typer.BadParameter("set PREFECT_API_URL")
    try:
        crews = load_config(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    root = Path(os.environ.get("EDGECREW_EXECUTOR_DIR") or Path.cwd())
    pools = crews.pool_limits()
    deploy_pools(api_url, pools, root=root, zombie_seconds=zombie_seconds)
    typer.echo(f"deployed pools: {', '.join(pools) or 'none'}")


if __name__ == "__main__":
    typer.run(main)
