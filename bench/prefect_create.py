"""What one `create_flow_run` costs the local Prefect server, by database and concurrency.

    .venv/bin/python bench/prefect_create.py [--runs 300] [--concurrency 1 4 16]
        [--database sqlite postgres] [--late-runs] [--full-template]

For each database, a fresh Prefect server as the local stack starts it (`prefect_services`,
`deploy_flows`), then `--runs` calls of `POST /deployments/{id}/create_flow_run` for
`run-crew-job/gpu` (no worker: nothing runs) at each concurrency, each with its own
idempotency key and the parameters the edge sends; a `5xx` is retried at once with the same
key and counted. Prints runs/s, latency, `5xx` answers and the server's CPU per run (its
process group, from /proc). `--late-runs` and `--full-template` put back Prefect's
late-runs service and the process type's default job template, to measure what they cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edge.local import stack
from edge.local.processes import Supervisor, free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import process_group  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--database", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--late-runs", action="store_true")
    parser.add_argument("--full-template", action="store_true")
    args = parser.parse_args()
    if args.full_template:
        stack.LEAN_JOB_TEMPLATE = _process_default_template()
    print(f"{args.runs} create_flow_run per row; late-runs service "
          f"{'on' if args.late_runs else 'off'}; "
          f"{'default' if args.full_template else 'lean'} job template\n")  # fmt: skip
    print("| database | in flight | runs/s | p50 ms | p99 ms | 5xx answers | server CPU ms/run |")
    print("|---|---|---|---|---|---|---|")
    for database in args.database:
        for row in measure(database, args.runs, args.concurrency, args.late_runs):
            print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)


def measure(database: str, runs: int, levels: list[int], late_runs: bool) -> list[list[Any]]:
    data = Path(tempfile.mkdtemp(prefix="edgecrew-create-bench-"))
    supervisor = Supervisor(data / "logs")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    os.environ["EDGECREW_PREFECT_DATABASE"] = database
    services = stack.prefect_services(port, data)
    late = {"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": str(late_runs).lower()}
    services[-1] = replace(services[-1], env={**services[-1].env, **late})
    rows = []
    try:
        for service in services:
            supervisor.start(service, timeout=180)
        stack.deploy_flows(api, stack.repo_crews().pool_limits())
        deployment = httpx.get(f"{api}/deployments/name/run-crew-job/gpu").json()["id"]
        for level in levels:
            before = cpu_seconds(supervisor.pid("prefect"))
            seconds, latencies, errors = asyncio.run(burst(api, deployment, runs, level))
            cpu = (cpu_seconds(supervisor.pid("prefect")) - before) * 1000 / runs
            p50, p99 = (np.percentile(latencies, q) * 1000 for q in (50, 99))
            rows.append([database, level, f"{runs / seconds:.1f}", f"{p50:.0f}", f"{p99:.0f}",
                         errors, f"{cpu:.0f}"])  # fmt: skip
    finally:
        supervisor.stop_all()
    return rows


async def burst(api: str, deployment: str, runs: int, level: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    gate = asyncio.Semaphore(level)
    limits = httpx.Limits(max_connections=level)
    async with httpx.AsyncClient(base_url=f"{api}/", timeout=60, limits=limits) as client:

        async def one(n: int) -> None:
            nonlocal errors
            job_id = f"job_{uuid.uuid4().hex[:26]}"
            body = {
                "idempotency_key": f"{job_id}.0",
                "parameters": {"job_id": job_id, "tenant": "bench", "crew": "research",
                               "inputs": {"topic": f"create {n}"}},
                "tags": ["tenant:bench", "crew:research"],
            }  # fmt: skip
            async with gate:
                while True:
                    sent = time.perf_counter()
                    try:
                        response = await client.post(
                            f"deployments/{deployment}/create_flow_run", json=body
                        )
                    except httpx.TransportError:  # a server that dropped the connection
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - sent)
                    if response.status_code < 500:
                        response.raise_for_status()
                        return
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(runs)))
        return time.perf_counter() - started, latencies, errors


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for member in process_group(os.getpgid(pid)):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(field) for field in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _process_default_template() -> dict[str, Any]:
    from prefect.workers.process import ProcessWorker

    template: dict[str, Any] = json.loads(json.dumps(ProcessWorker.get_default_base_job_template()))
    return template


if __name__ == "__main__":
    main()
