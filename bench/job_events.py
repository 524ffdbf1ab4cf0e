"""Job event streams: callback → event latency, and many streams held at once.

    .venv/bin/python bench/job_events.py [--events 200] [--streams 200] [--cores 0,1]

The edge app (local adapters: SQLite KV and ledger; a stand-in orchestrator that takes
every job, since Prefect is not what is measured) runs under uvicorn in its own process,
pinned to `--cores`. The same process serves a bare Starlette SSE endpoint (FastAPI's
EventSourceResponse over an asyncio.Queue per client, nothing else) fed the same way: an HTTP POST.

1. Latency: one job, one connected stream; `--events` progress callbacks (signed, as the
   executor sends them) one after another; for each, the time from sending the POST to
   the event arriving on the stream. Then the same against the bare endpoint.
2. Held streams: `--streams` jobs, one stream each, all open at once; the server's RSS
   before and while they are held, and one callback to each job: all must arrive.
With `--poll-only` the edge's streams are never woken in-process and poll the ledger
every second, as they do on Cloudflare. Prints markdown; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from starlette.requests import Request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def serve(port: int, data: Path, secret: str) -> None:
    """The server process: edgecrew's app plus the bare endpoint."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.sse import EventSourceResponse, format_sse_event

    from edge.app import create_app
    from edge.local.numpy_index import NumpyVectorIndex
    from edge.local.sqlite_kv import SqliteKV
    from edge.local.sqlite_ledger import SqliteJobLedger
    from edge.ports import Ports, RunPhase, RunState
    from edge.settings import Settings
    from tests.doubles.catalog import publish_shipped_crews
    from tests.doubles.models import RecordingEmbedder, RecordingGenerator

    class TakesEveryJob:
        async def submit(self, deployment: str, **_: Any) -> RunState:
            return RunState(run_id=f"run-{time.monotonic_ns()}", phase=RunPhase.QUEUED)

        async def check(self) -> bool:
            return True

    kv = SqliteKV(data / "kv.sqlite3")
    asyncio.run(publish_shipped_crews(kv))
    settings = Settings(
        api_keys={KEY: "bench"}, embed_model="fake-bow", executor_secret=secret,
        prefect_api_url="http://unused.invalid/api", stale_after_seconds=3600,
    )  # fmt: skip
    ports = Ports(
        kv=kv, ledger=SqliteJobLedger(data / "jobs.sqlite3"),
        vectors=NumpyVectorIndex(data / "v.sqlite3", dimensions=384),
        embedder=RecordingEmbedder(), generator=RecordingGenerator(),
        orchestrator=TakesEveryJob(),  # type: ignore[arg-type]
    )  # fmt: skip
    app = create_app(settings, ports)
    if os.environ.get("BENCH_POLL_ONLY"):  # as on Cloudflare: no in-process wake-up
        app.state.jobs.changes.enabled = False
    bare = FastAPI()
    queues: set[asyncio.Queue[bytes]] = set()

    @bare.post("/feed")
    async def feed(request: Request) -> dict[str, str]:
        body = await request.body()
        for queue in queues:
            queue.put_nowait(body)
        return {"status": "fed"}

    @bare.get("/events")
    async def events() -> EventSourceResponse:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queues.add(queue)

        async def body() -> Any:
            try:
                while True:
                    data = await queue.get()
                    yield format_sse_event(event="progress", id="1", data_str=data.decode())
            finally:
                queues.discard(queue)

        return EventSourceResponse(body())

    app.mount("/bare", bare)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def _listen(client: httpx.AsyncClient, url: str, got: dict[int, float], ready: asyncio.Event,
                  headers: dict[str, str]) -> None:  # fmt: skip
    async with client.stream("GET", url, headers=headers) as response:
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                n = (data.get("data") or {}).get("progress", {}) or {}
                got[int(n.get("completed_tasks", data.get("n", -1)))] = time.perf_counter()


async def _callback(client: httpx.AsyncClient, secret: str, job_id: str, n: int) -> None:
    from shared.signing import signed_headers

    progress = {"completed_tasks": n, "total_tasks": 10**6, "current_task": "t"}
    body = json.dumps({"tenant": "bench", "type": "progress", "progress": progress}).encode()
    headers = signed_headers(secret, f"m-{job_id}-{n}", int(time.time()), body)
    headers["Content-Type"] = "application/json"
    url = f"/v1/internal/jobs/{job_id}/events"
    response = await client.post(url, content=body, headers=headers)
    response.raise_for_status()


async def _wait_for(got: dict[int, float], n: int) -> float:
    deadline = time.perf_counter() + 10
    while n not in got:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"event {n} never arrived")
        await asyncio.sleep(0.0005)
    return got[n]


def _stats(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} | {ms.max():.1f}"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _job(client: httpx.AsyncClient) -> str:
    body = {"crew": "research", "inputs": {"topic": "t"}}
    return str((await client.post("/v1/jobs", json=body, headers=AUTH)).json()["id"])


async def measure(
    base: str, secret: str, events: int, streams: int, pid: int, jitter: float = 0.0
) -> None:
    limits = httpx.Limits(max_connections=streams + 20, max_keepalive_connections=streams + 20)
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        job_id = await _job(client)
        rows = []
        for name in ("edgecrew", "bare"):
            got: dict[int, float] = {}
            ready = asyncio.Event()
            url = f"/v1/jobs/{job_id}/events" if name == "edgecrew" else "/bare/events"
            listener = asyncio.create_task(_listen(client, url, got, ready, AUTH))
            await ready.wait()
            await asyncio.sleep(0.2)
            samples = []
            for n in range(1, events + 1):
                if jitter:  # a callback lands at any moment of a stream's poll interval
                    await asyncio.sleep(random.uniform(0, jitter))
                sent = time.perf_counter()
                if name == "edgecrew":
                    await _callback(client, secret, job_id, n)
                else:
                    await client.post("/bare/feed", json={"n": n})
                samples.append(await _wait_for(got, n) - sent)
            listener.cancel()
            rows.append(f"| {name} | {events} | {_stats(samples)} |")
        print("| endpoint | events | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        print("\n".join(rows))

        ids = [await _job(client) for _ in range(streams)]
        before = _rss_mib(pid)
        held: list[dict[int, float]] = [{} for _ in ids]
        readies = [asyncio.Event() for _ in ids]
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(_listen(client, f"/v1/jobs/{j}/events", g, r, AUTH))
            for j, g, r in zip(ids, held, readies, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in readies))
        opened = time.perf_counter() - started
        await asyncio.sleep(5)
        during = _rss_mib(pid)
        sent = time.perf_counter()
        await asyncio.gather(*(_callback(client, secret, j, 1) for j in ids))
        arrived = [await _wait_for(g, 1) - sent for g in held]
        for task in tasks:
            task.cancel()
        print(f"\n{streams} streams held: opened in {opened:.2f} s; server RSS "
              f"{before:.0f} MiB before, {during:.0f} MiB held "
              f"({(during - before) * 1024 / streams:.0f} KiB a stream); one callback to each "
              f"job, all {len(arrived)} arrived, last after {max(arrived):.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--cores", default="0,1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--poll-only", action="store_true",
                        help="streams poll the ledger (every EDGECREW_JOB_EVENTS_POLL_SECONDS, "
                        "1 s) and are never woken in-process, as on Cloudflare")  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    secret = os.environ.get("BENCH_SECRET", "")
    if args.serve:
        serve(args.port, Path(args.data), secret)
        return
    from shared.signing import new_secret

    secret = new_secret()
    with tempfile.TemporaryDirectory() as data:
        command = ["taskset", "-c", args.cores, sys.executable, __file__, "--serve",
                   "--port", str(args.port), "--data", data]  # fmt: skip
        poll_only = {"BENCH_POLL_ONLY": "1"} if args.poll_only else {}
        server = subprocess.Popen(command, env={**os.environ, "BENCH_SECRET": secret, **poll_only})
        try:
            base = f"http://127.0.0.1:{args.port}"
            for _ in range(100):
                try:
                    httpx.get(f"{base}/healthz").raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            mode = "streams poll only, as on Cloudflare" if args.poll_only else "in-process wake"
            print(f"server on cores {args.cores} (taskset), Python {sys.version.split()[0]}, "
                  f"{mode}\n")  # fmt: skip
            jitter = 1.0 if args.poll_only else 0.0  # the poll interval
            asyncio.run(measure(base, secret, args.events, args.streams, server.pid, jitter))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
