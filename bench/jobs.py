"""Job start latency and intake, on the real local stack, against plain Prefect.

    .venv/bin/python bench/jobs.py [--jobs 20] [--intake 500] [--concurrency 50]

1. Start latency, sequential `summarize` jobs on edgecrew's warm worker
   (`executor.worker`). Prefect's view: the flow run's SCHEDULED → PENDING → RUNNING state
   times. The client's view: POST /v1/jobs → the `job.running` webhook at a local
   receiver, and POST → `job.succeeded` webhook minus the crew's own time (the two
   webhooks' timestamps). The crew LLM is the scripted fake, so the crew itself takes
   milliseconds. Baseline, same run, same server: a trivial flow on a plain Prefect
   process worker polling every second, SCHEDULED → RUNNING by the same state times.
   Then the memory (PSS) of each idle worker, its fork server and children included.
2. Intake, with the workers stopped: `--intake` POST /v1/jobs at `--concurrency` in
   flight, each with its own Idempotency-Key: accepted/s and request latency; Prefect's
   count of the burst's flow runs, polled every second, gives the time until every
   accepted job is in Prefect (up to `--wait` seconds); then every flow run is counted
   per job: lost (accepted, no run) and duplicated (more than one run), and the Prefect
   server's log is searched for `database is locked`.
`--jobs 0` skips the start-latency part (and its workers). Prints markdown;
docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edge.local.cli import _edge_service
from edge.local.processes import Service, Supervisor, free_port
from edge.local.stack import (
    QUIET,
    deploy_flows,
    dev_secrets,
    prefect_services,
    process_worker,
    repo_crews,
    worker,
)
from executor.catalog import publish_config
from executor.edge_client import EdgeClient
from executor.settings import ExecutorSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support import WebhookReceiver, process_group  # noqa: E402

KEY = "bench-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--intake", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for Prefect")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="edgecrew-jobs-bench-"))
    supervisor = Supervisor(data / "logs")
    prefect_port, edge_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    base = f"http://127.0.0.1:{edge_port}"
    try:
        services = prefect_services(prefect_port, data)
        for service in services:
            supervisor.start(service, timeout=180)
        prefect = services[-1]
        deploy_flows(api, repo_crews().pool_limits())
        secrets = dev_secrets(data)
        env = {**QUIET, **secrets, "EDGECREW_API_KEYS": f"bench:{KEY}",
               "EDGECREW_DATA_DIR": str(data), "EDGECREW_PREFECT_API_URL": api,
               "EDGECREW_ALLOW_LOOPBACK_WEBHOOKS": "true", "EDGECREW_LLM_MODEL": "none",
               "EDGECREW_RATE_LIMIT_PER_MINUTE": "0",
               "EDGECREW_EMBED_MODEL": "all-MiniLM-L6-v2",
               "EDGECREW_LLM_BASE_URL": "http://127.0.0.1:9/v1"}  # fmt: skip
        os.environ.update({"EDGECREW_DATA_DIR": str(data)})
        supervisor.start(_edge_service("127.0.0.1", edge_port, env))
        # The catalog the workers would publish: the intake runs with no worker at all.
        settings = ExecutorSettings(
            edge_url=base, executor_secret=secrets["EDGECREW_EXECUTOR_SECRET"]
        )
        publish_config(EdgeClient(settings), repo_crews(), "bench")
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
            f"{platform.python_version()}, Prefect server on "
            f"{'PostgreSQL' if len(services) > 1 else 'SQLite'}\n"
        )
        if args.jobs:
            executor_env = {"EDGECREW_EDGE_URL": base, **secrets,
                            "EDGECREW_CREW_LLM_FACTORY": "tests.doubles.crew_llm:scripted_llm",
                            "EDGECREW_CONFIG": str(ROOT / "edgecrew.toml"),
                            "PYTHONPATH": str(ROOT)}  # fmt: skip
            supervisor.start(worker("cpu", api, executor_env))
            supervisor.start(baseline_worker(api, data))
            # Latency first: after the intake, the reconciler keeps 500 waiting jobs fresh,
            # which loads this 2-core machine and would blur both sides of the comparison.
            start_latency(base, api, args.jobs)
            print("| idle worker | processes | PSS MiB |\n|---|---|---|")
            for name in ("worker-cpu", "process-worker-bench"):
                members, pss = group_pss_mib(supervisor.pid(name))
                print(f"| {name} | {members} | {pss:.0f} |")
            print()
            for name in ("worker-cpu", "process-worker-bench"):  # intake runs with no worker
                supervisor.stop(name)
        if args.intake:
            parts = [service.name for service in services] + ["edge"]
            before = {name: group_cpu_seconds(supervisor.pid(name)) for name in parts}
            machine_before, client_before = machine_busy_seconds(), client_cpu_seconds()
            asyncio.run(intake(base, api, args.intake, args.concurrency, args.wait))
            used = {name: group_cpu_seconds(supervisor.pid(name)) - before[name] for name in parts}
            used["this client"] = client_cpu_seconds() - client_before
            busy, wall = (now - then for now, then in zip(machine_busy_seconds(), machine_before,
                                                          strict=True))  # fmt: skip
            per_job = used["prefect"] * 1000 / args.intake
            shares = ", ".join(f"{name} {seconds:.0f}" for name, seconds in used.items())
            others = busy - sum(used.values())
            print(f"CPU seconds used meanwhile: {shares} (Prefect: {per_job:.0f} ms a job); "
                  f"other processes on this machine: {others:.0f} of the {wall:.0f} "
                  f"core-seconds that passed\n")  # fmt: skip
            locked = lines_with(supervisor.log_path(prefect), "database is locked")
            print(f"`database is locked` lines in the Prefect server log: {locked}\n")
    finally:
        supervisor.stop_all()


def baseline_worker(api: str, data: Path) -> Service:
    """A plain Prefect process worker on its own pool, for a trivial flow."""
    env = {"PYTHONPATH": str(ROOT)}
    service = process_worker("bench", api, env)
    root = str(ROOT)
    prefect = [sys.executable, "-m", "prefect"]
    run_env = {**os.environ, **QUIET, "PREFECT_API_URL": api, "EDGECREW_EXECUTOR_DIR": root}
    subprocess.run([*prefect, "work-pool", "create", "bench", "--type", "process", "--overwrite"],
                   env=run_env, cwd=root, check=True, capture_output=True)  # fmt: skip
    subprocess.run([*prefect, "--no-prompt", "deploy", "bench/trivial_flow.py:trivial",
                    "--name", "bench", "--pool", "bench"],
                   env=run_env, cwd=root, check=True, capture_output=True)  # fmt: skip
    return service


async def intake(base: str, api: str, total: int, concurrency: int, wait: float) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    accepted: list[str] = []
    queued: list[bool] = []
    latencies: list[float] = []
    retried = [0]
    failures = 0
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits,
                                 timeout=60) as client:  # fmt: skip
        semaphore = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            nonlocal failures
            async with semaphore:
                # research runs on the gpu pool, which has no worker here: nothing executes.
                body = {"crew": "research", "inputs": {"topic": f"intake {n}"}}
                key = {"Idempotency-Key": f"intake-{n}"}
                sent = time.perf_counter()
                for attempt in range(3):
                    try:
                        response = await client.post("/v1/jobs", json=body, headers=key)
                        break
                    except httpx.TransportError:  # e.g. a keep-alive connection closed under
                        if attempt == 2:  # us; the Idempotency-Key makes a retry safe
                            raise
                        retried[0] += 1
                latencies.append(time.perf_counter() - sent)
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                    queued.append(response.json()["status"] == "queued")
                else:
                    failures += 1

        started = time.perf_counter()
        counter = RunCounter(api, started)
        counting = asyncio.create_task(counter.run())
        await asyncio.gather(*(one(n) for n in range(total)))
        elapsed = time.perf_counter() - started
        # What Prefect did not take in the request is the queue's and the reconciler's.
        counter.expected = len(accepted)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.reached.wait(), wait - elapsed)
        counting.cancel()
        samples = counter.samples
        # Statuses first: a job handed over meanwhile is then in the runs read after.
        status_of = await job_statuses(client)
        runs = await flow_runs_by_job(api)
    in_prefect = next((at for at, count in samples if count >= len(accepted)), None)
    statuses: dict[str, int] = {}
    for status in status_of.values():
        statuses[status] = statuses.get(status, 0) + 1
    missing = [job_id for job_id in accepted if not runs.get(job_id)]
    # Not in Prefect yet but still `submitting` is late, not lost: the queue and the
    # reconciler go on handing it over.
    waiting = sum(1 for job_id in missing if status_of.get(job_id) == "submitting")
    lost = len(missing) - waiting
    duplicated = sum(1 for job_id in accepted if len(runs.get(job_id, ())) > 1)
    print(f"intake ({total} POST /v1/jobs, {concurrency} in flight, no gpu worker):\n")
    print("| accepted | refused | accepted/s | p50 / p99 s | queued in the 202 "
          "| all in Prefect after s | not yet in Prefect | lost | duplicated |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    row = [len(accepted), failures, f"{len(accepted) / elapsed:.1f}",
           f"{pct(latencies, 50):.2f} / {pct(latencies, 99):.2f}", sum(queued),
           f"{in_prefect:.0f}" if in_prefect is not None else f"not within {wait:.0f}",
           waiting, lost, duplicated]  # fmt: skip
    print("| " + " | ".join(str(cell) for cell in row) + " |\n", flush=True)
    marks = [at for at in (10, 30, 60, 120, 300, 600) if at <= samples[-1][0]]
    timeline = [f"{at} s: {max((c for t, c in samples if t <= at), default=0)}" for at in marks]
    marked = f"{', '.join(timeline)}; " if timeline else ""
    print(f"flow runs in Prefect since the burst began: {marked}"
          f"last {samples[-1][1]} at {samples[-1][0]:.0f} s\n")  # fmt: skip
    print(f"job statuses at the end: {statuses}; POSTs retried after a transport error: "
          f"{retried[0]}\n")  # fmt: skip


class RunCounter:
    """Prefect's count of the burst's flow runs, once a second: (seconds since `started`,
    runs). One cheap count a second adds little to the server's load."""

    def __init__(self, api: str, started: float) -> None:
        self.api, self.started = api, started
        self.samples: list[tuple[float, int]] = []
        self.expected: int | None = None  # known once the burst is over
        self.reached = asyncio.Event()

    async def run(self) -> None:
        query = {"flow_runs": {"tags": {"all_": ["crew:research"]}}}
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                try:
                    response = await client.post(f"{self.api}/flow_runs/count", json=query)
                    if response.status_code == 200:
                        count = int(response.json())
                        self.samples.append((time.perf_counter() - self.started, count))
                        if self.expected is not None and count >= self.expected:
                            self.reached.set()
                except httpx.HTTPError:
                    pass  # a loaded server missed one sample; the next one counts
                await asyncio.sleep(1.0)


def lines_with(path: Path, needle: str) -> int:
    with path.open(errors="replace") as log:
        return sum(needle in line for line in log)


async def job_statuses(client: httpx.AsyncClient) -> dict[str, str]:
    """Each job's status, from the list (which, unlike GET /v1/jobs/{id}, never refreshes a
    job from Prefect: counting must not hand jobs over itself)."""
    status_of: dict[str, str] = {}
    params: dict[str, str | int] = {"limit": 100}
    while True:
        page = (await client.get("/v1/jobs", params=params)).json()
        for job in page["jobs"]:
            status_of[job["id"]] = job["status"]
        if not page.get("cursor"):
            return status_of
        params["cursor"] = page["cursor"]


async def flow_runs_by_job(api: str) -> dict[str, set[str]]:
    """Each job's flow run ids. Paged in order of expected start: runs created meanwhile
    land on the last page instead of shifting earlier ones (which counted a run twice)."""
    runs: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=60) as client:
        offset = 0
        while True:
            query = {"limit": 200, "offset": offset, "sort": "EXPECTED_START_TIME_ASC"}
            page = (await client.post(f"{api}/flow_runs/filter", json=query)).json()
            for run in page:
                job_id = run["parameters"].get("job_id")
                if job_id:
                    runs.setdefault(job_id, set()).add(run["id"])
            if len(page) < 200:
                return runs
            offset += 200


def start_latency(base: str, api: str, jobs: int) -> None:
    to_hook: list[float] = []
    overhead: list[float] = []
    ids: list[str] = []
    posted_at: list[float] = []  # wall clock, to set against Prefect's state times
    hooked_at: list[float] = []
    with WebhookReceiver() as receiver, httpx.Client(base_url=base, headers=HEADERS,
                                                     timeout=60) as client:  # fmt: skip
        for n in range(jobs):
            hook = {"url": receiver.url, "events": ["job.running", "job.succeeded"]}
            body = {"crew": "summarize", "inputs": {"text": f"latency {n}"}, "webhook": hook}
            receiver.received.clear()
            started = time.perf_counter()
            posted_at.append(time.time())
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            receiver.wait_for_event("job.running", timeout=120)
            to_hook.append(time.perf_counter() - started)
            hooked_at.append(time.time())
            receiver.wait_for_event("job.succeeded", timeout=120)
            total = time.perf_counter() - started
            job = client.get(f"/v1/jobs/{job_id}").json()
            overhead.append(total - crew_seconds(job, receiver.received))
            ids.append(job_id)
            time.sleep(random.uniform(0.1, 1.0))  # arrivals at random phases of the poll
    phases = state_phases(api, [run_for_job(api, job_id) for job_id in ids])
    # The client's path around Prefect's: the edge handing the job over, and the flow
    # posting `running` through the edge to the webhook (same machine, same clock).
    handed = [at - posted for at, posted in zip(phases["scheduled_at"], posted_at, strict=True)]
    after = [hooked - at for at, hooked in zip(phases["running_at"], hooked_at, strict=True)]
    baseline = state_phases(api, baseline_runs(api, jobs))
    print(f"start latency ({jobs} sequential jobs; baseline: {jobs} trivial flow runs on a "
          "plain Prefect process worker polling every 1 s):\n")  # fmt: skip
    print("| path | p50 s | p90 s |")
    print("|---|---|---|")
    rows = [
        ("edgecrew: create_flow_run → RUNNING (Prefect's state times)", phases["running"]),
        ("  of which SCHEDULED → PENDING (poll, claim)", phases["claimed"]),
        ("  of which PENDING → RUNNING (process, engine)", phases["started"]),
        ("edgecrew: POST /v1/jobs → job.running webhook received", to_hook),
        ("  of which POST → SCHEDULED (the edge hands the job to Prefect)", handed),
        ("  of which RUNNING → job.running webhook (flow, edge, webhook)", after),
        ("edgecrew: POST → job.succeeded webhook, minus crew time", overhead),
        ("plain Prefect: create_flow_run → RUNNING (Prefect's state times)", baseline["running"]),
    ]
    for label, samples in rows:
        print(f"| {label} | {pct(samples, 50):.2f} | {pct(samples, 90):.2f} |")
    ratio = pct(phases["running"], 50) / pct(baseline["running"], 50)
    print(f"\nratio (create → RUNNING, edgecrew / plain Prefect, p50): {ratio:.2f}x\n")


def group_pss_mib(pid: int) -> tuple[int, float]:
    """Processes in `pid`'s process group and their proportional set size (shared pages
    counted once across them), from /proc."""
    members, kib = 0, 0
    for member in process_group(os.getpgid(pid)):
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:  # gone meanwhile
            continue
        members += 1
        kib += next(int(line.split()[1]) for line in rollup.splitlines()
                    if line.startswith("Pss:"))  # fmt: skip
    return members, kib / 1024


def group_cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid`'s process group, its reaped children included."""
    ticks = 0
    for member in process_group(os.getpgid(pid)):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, elapsed) core-seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    hertz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / hertz, sum(ticks[:8]) / hertz


def client_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def crew_seconds(job: dict[str, Any], hooks: list[dict[str, Any]]) -> float:
    stamps = {json.loads(h["body"])["type"]: json.loads(h["body"])["timestamp"] for h in hooks}
    return (moment(stamps["job.succeeded"]) - moment(stamps["job.running"])).total_seconds()


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def run_for_job(api: str, job_id: str) -> str:
    query = {"flow_runs": {"tags": {"all_": ["crew:summarize"]}}, "limit": 200}  # not intake's
    runs = httpx.post(f"{api}/flow_runs/filter", json=query, timeout=30).json()
    (run_id,) = [run["id"] for run in runs if run["parameters"].get("job_id") == job_id]
    return str(run_id)


def state_phases(api: str, run_ids: list[str]) -> dict[str, list[float]]:
    """Seconds between a run's SCHEDULED, PENDING and RUNNING states, by Prefect's clock."""
    phases: dict[str, list[float]] = {"claimed": [], "started": [], "running": [],
                                      "scheduled_at": [], "running_at": []}  # fmt: skip
    for run_id in run_ids:
        states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id},
                           timeout=30).json()  # fmt: skip
        at = {s["type"]: moment(s["timestamp"]) for s in reversed(states)}  # the first of each
        phases["claimed"].append((at["PENDING"] - at["SCHEDULED"]).total_seconds())
        phases["started"].append((at["RUNNING"] - at["PENDING"]).total_seconds())
        phases["running"].append((at["RUNNING"] - at["SCHEDULED"]).total_seconds())
        phases["scheduled_at"].append(at["SCHEDULED"].timestamp())
        phases["running_at"].append(at["RUNNING"].timestamp())
    return phases


def baseline_runs(api: str, runs: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=api + "/", timeout=30) as client:
        deployment = client.get("deployments/name/trivial/bench").json()["id"]
        for _ in range(runs):
            response = client.post(f"deployments/{deployment}/create_flow_run", json={})
            for _ in range(50):  # a loaded SQLite server sometimes refuses; retry a little
                if response.status_code < 400:
                    break
                print(f"(baseline create_flow_run: HTTP {response.status_code}, retrying)")
                time.sleep(0.2)
                response = client.post(f"deployments/{deployment}/create_flow_run", json={})
            run = response.json()
            while client.get(f"flow_runs/{run['id']}").json()["state"]["type"] not in {
                "COMPLETED",
                "FAILED",
                "CRASHED",
            }:
                time.sleep(0.05)
            ids.append(str(run["id"]))
            time.sleep(random.uniform(0.1, 1.0))
    return ids


if __name__ == "__main__":
    main()
