"""Edge overhead: edgecrew's `POST /v1/jobs` and `GET /v1/jobs/{id}` against a minimal
Starlette app that makes the same storage calls, both under uvicorn, in the same run.

    .venv/bin/python bench/edge_overhead.py [--requests 300] [--rounds 3]

Both apps run as their own uvicorn process (one each, uvloop and httptools as uvicorn
picks them) over the same local adapters (SQLite KV and job ledger, SQLite queue), and
both hand jobs to the same Prefect stand-in: a uvicorn process answering the three
Prefect REST calls a hand-over makes, at once (so what is measured is the edge, not
Prefect). The minimal app does what edgecrew's request does to storage, call for call
(`minimal_app`'s comments list them; the counts are printed for both, from counting
wrappers around the adapters), with no framework above Starlette: no auth middleware, no
validation models, no problem+json, no rate limiter, no idempotency logic beyond the
key-to-id mapping.

Each round measures edgecrew then the minimal app, so a noisy machine moves both; the
report is p50/p99 per request at concurrency 1 and 50, and the ratio edgecrew/minimal
per round. Prints markdown; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.local.processes import Service, Supervisor, free_port  # noqa: E402
from edge.local.sqlite_kv import SqliteKV  # noqa: E402
from edge.local.sqlite_ledger import SqliteJobLedger  # noqa: E402
from edge.local.sqlite_queue import SqliteQueue  # noqa: E402

KEY = "ek_bench_" + "0" * 32
TENANT = "bench"
DIRECT = 8  # edgecrew's DIRECT_SUBMISSIONS: hand-overs in flight before the queue


class Counting:
    """Counts the calls made to an adapter (what the report's calls/request shows)."""

    def __init__(self, inner: Any, counts: dict[str, int], name: str) -> None:
        self._inner, self._counts, self._name = inner, counts, name

    def __getattr__(self, attr: str) -> Any:
        found = getattr(self._inner, attr)
        if not callable(found) or attr.startswith("_"):
            return found
        key = f"{self._name}.{attr}"

        def call(*args: Any, **kwargs: Any) -> Any:
            self._counts[key] = self._counts.get(key, 0) + 1
            return found(*args, **kwargs)

        return call


def counts_route(counts: dict[str, int]) -> Route:
    async def read(_: Request) -> JSONResponse:
        return JSONResponse(counts)

    return Route("/_bench/calls", read)


# --- the Prefect stand-in ---------------------------------------------------------------------


def prefect_stub() -> Starlette:
    """The three calls a hand-over makes, answered at once, one run per idempotency key."""
    runs: dict[str, dict[str, Any]] = {}

    async def deployment(request: Request) -> JSONResponse:
        return JSONResponse({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, request.url.path))})

    async def create(request: Request) -> JSONResponse:
        body = await request.json()
        key = body["idempotency_key"]
        if key not in runs:
            runs[key] = {"id": str(uuid.uuid4()), "state": {"type": "SCHEDULED",
                         "name": "Scheduled", "timestamp": "2026-12-01T00:00:00Z"}}  # fmt: skip
        return JSONResponse(runs[key], status_code=201)

    async def ok(_: Request) -> JSONResponse:
        return JSONResponse([])

    return Starlette(
        routes=[
            Route("/api/deployments/name/{flow}/{pool}", deployment),
            Route("/api/deployments/{id}/create_flow_run", create, methods=["POST"]),
            Route("/api/deployments/filter", ok, methods=["POST"]),
            Route("/api/health", ok),
        ]
    )


# --- the two apps -----------------------------------------------------------------------------


def edgecrew_app() -> Starlette:
    """edgecrew's local app on the local adapters, counting their calls."""
    from edge.app import create_app
    from edge.local.numpy_index import NumpyVectorIndex
    from edge.ports import Ports
    from edge.settings import Settings
    from tests.doubles.catalog import publish_shipped_crews
    from tests.doubles.models import RecordingEmbedder, RecordingGenerator

    data = Path(os.environ["BENCH_DATA"])
    settings = Settings.from_env({
        "EDGECREW_API_KEYS": f"{TENANT}:{KEY}", "EDGECREW_EMBED_MODEL": "fake-bow",
        "EDGECREW_PREFECT_API_URL": os.environ["BENCH_PREFECT"],
        "EDGECREW_EXECUTOR_SECRET": os.environ["BENCH_EXECUTOR_SECRET"],
        "EDGECREW_SECRET_KEY": "k" * 40, "EDGECREW_RATE_LIMIT_PER_MINUTE": "0",
    })  # fmt: skip
    counts: dict[str, int] = {}
    kv = SqliteKV(data / "kv.sqlite3")
    asyncio.run(publish_shipped_crews(kv))
    queue = SqliteQueue(data / "queue.sqlite3")
    from edge.adapters.prefect import PrefectOrchestrator

    ports = Ports(
        kv=Counting(kv, counts, "kv"),
        ledger=Counting(SqliteJobLedger(data / "jobs.sqlite3"), counts, "ledger"),
        deliveries=Counting(queue, counts, "queue"),
        orchestrator=Counting(PrefectOrchestrator(os.environ["BENCH_PREFECT"]), counts, "prefect"),
        vectors=NumpyVectorIndex(data / "vectors.sqlite3", dimensions=384),
        embedder=RecordingEmbedder(),
        generator=RecordingGenerator(),
    )
    # No queue consumer or reconciler: the minimal app has none, and their hand-overs of
    # the queued jobs would compete for the same two cores.
    app = create_app(settings, ports)
    app.router.routes.append(counts_route(counts))
    return app


def minimal_app() -> Starlette:
    """The same storage calls as edgecrew's request, and nothing else."""
    data = Path(os.environ["BENCH_DATA"])
    counts: dict[str, int] = {}
    kv: Any = Counting(SqliteKV(data / "kv.sqlite3"), counts, "kv")
    ledger: Any = Counting(SqliteJobLedger(data / "jobs.sqlite3"), counts, "ledger")
    queue: Any = Counting(SqliteQueue(data / "queue.sqlite3"), counts, "queue")
    prefect = httpx.AsyncClient(base_url=os.environ["BENCH_PREFECT"] + "/", timeout=5)
    deployments: dict[str, str] = {}
    direct = [0]

    async def submit(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return Response(status_code=401)
        body = await request.json()
        key = request.headers["idempotency-key"]
        job_id = "job_" + hashlib.sha256(f"{TENANT}:{key}".encode()).hexdigest()[:26]
        now = time.time()
        # The idempotency look-up: the ledger, then KV for a record from before it.
        if await ledger.read(TENANT, job_id, now=now) is None:
            await kv.get(f"job:{TENANT}:{job_id}")
        await kv.get(f"catalog:crew:{body['crew']}")  # the crew's catalog entry
        record = {"id": job_id, "tenant": TENANT, "status": "submitting", "flow_run_id": None,
                  "inputs": body["inputs"], "crew": body["crew"], "expires_at": now + 86400,
                  "updated_at": "2026-12-01T00:00:00.000Z"}  # fmt: skip
        job, _ = await ledger.create(record, now=now)
        await copy(job)
        if direct[0] < DIRECT:  # handed to Prefect in the request, as edgecrew's are
            direct[0] += 1
            try:
                name = "run-crew-job/gpu"
                if name not in deployments:
                    deployments[name] = (await prefect.get(f"deployments/name/{name}")).json()["id"]
                body = {"idempotency_key": job_id, "parameters": {}}
                path = f"deployments/{deployments[name]}/create_flow_run"
                run = (await prefect.post(path, json=body)).json()
                change = {"at": "2026-12-01T00:00:00.000Z", "event": {"type": "queued"},
                          "set": {"flow_run_id": run["id"]}, "expires_at": now + 86400}  # fmt: skip
                _, job = await ledger.change(TENANT, job_id, change, now=now)
                await copy(job)
            finally:
                direct[0] -= 1
        else:
            await queue.send({"kind": "submit", "tenant": TENANT, "job_id": job_id, "attempt": 1})
        return JSONResponse({"id": job_id, "status": job["status"]}, status_code=202)

    async def copy(job: dict[str, Any]) -> None:
        """KV's copy as edgecrew writes it: index entry, active mark, record; then the
        ledger read that checks no newer change landed meanwhile."""
        summary = {"id": job["id"], "status": job["status"]}
        await kv.put(f"jobs:{TENANT}:{job['id']}", "", metadata=summary, ttl_seconds=86400)
        await kv.put(f"active:{TENANT}:{job['id']}", "", ttl_seconds=86400)
        await kv.put(f"job:{TENANT}:{job['id']}", json.dumps(job), ttl_seconds=86400)
        await ledger.read(TENANT, job["id"], now=time.time())

    async def read(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return Response(status_code=401)
        job_id = request.path_params["job_id"]
        raw = await kv.get(f"job:{TENANT}:{job_id}")
        if raw is None:
            return Response(status_code=404)
        job = json.loads(raw)
        deliveries = await kv.get(f"deliveries:{TENANT}:{job_id}")
        job["deliveries"] = json.loads(deliveries) if deliveries else []
        return JSONResponse(job)

    return Starlette(
        routes=[
            Route("/v1/jobs", submit, methods=["POST"]),
            Route("/v1/jobs/{job_id}", read),
            Route("/healthz", lambda _: JSONResponse({"ok": True})),
            counts_route(counts),
        ]
    )


# --- the client -------------------------------------------------------------------------------


async def measure(base: str, requests: int, concurrency: int, tag: str) -> dict[str, Any]:
    """`requests` POSTs then as many GETs, `concurrency` in flight; latencies in ms."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency)
    posts: list[float] = []
    gets: list[float] = []
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:
        gate = asyncio.Semaphore(concurrency)

        async def post(n: int) -> None:
            async with gate:
                body = {"crew": "research", "inputs": {"topic": f"bench {n}"}}
                sent = time.perf_counter()
                key = {"Idempotency-Key": f"{tag}-{n}"}
                answer = await c.post("/v1/jobs", json=body, headers=key)
                posts.append((time.perf_counter() - sent) * 1000)
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["id"])

        async def get(job_id: str) -> None:
            async with gate:
                sent = time.perf_counter()
                answer = await c.get(f"/v1/jobs/{job_id}")
                gets.append((time.perf_counter() - sent) * 1000)
                assert answer.status_code == 200, answer.text

        await post(-1)  # warm: the deployment id, the connection
        posts.clear()
        started = time.perf_counter()
        await asyncio.gather(*(post(n) for n in range(requests)))
        post_rate = requests / (time.perf_counter() - started)
        await asyncio.gather(*(get(job_id) for job_id in ids))
        calls = (await c.get("/_bench/calls")).json()
    return {"post": posts, "get": gets, "post_rate": post_rate, "calls": calls}


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def serve(which: str, port: int) -> None:
    factory = {"prefect": prefect_stub, "edgecrew": edgecrew_app, "minimal": minimal_app}[which]
    uvicorn.run(factory(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["prefect", "edgecrew", "minimal"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    from shared.signing import new_secret

    root = Path(tempfile.mkdtemp(prefix="edgecrew-overhead-"))
    supervisor = Supervisor(root / "logs")
    ports = {name: free_port() for name in ("prefect", "edgecrew", "minimal")}
    env = {"BENCH_PREFECT": f"http://127.0.0.1:{ports['prefect']}/api",
           "BENCH_EXECUTOR_SECRET": new_secret(), "PYTHONPATH": str(ROOT)}  # fmt: skip
    health = {"prefect": "/api/health", "edgecrew": "/healthz", "minimal": "/healthz"}
    results: dict[str, list[dict[str, Any]]] = {"edgecrew": [], "minimal": []}
    try:
        for name, port in ports.items():
            (root / name).mkdir()
            supervisor.start(Service(
                name=name, argv=[sys.executable, __file__, "--serve", name, "--port", str(port)],
                health_url=f"http://127.0.0.1:{port}{health[name]}",
                env={**env, "BENCH_DATA": str(root / name)}, restart=False,
            ), timeout=120)  # fmt: skip
        for round_ in range(args.rounds):
            for concurrency in (1, 50):
                for name in ("edgecrew", "minimal"):
                    base = f"http://127.0.0.1:{ports[name]}"
                    tag = f"r{round_}-c{concurrency}"
                    found = asyncio.run(measure(base, args.requests, concurrency, tag))
                    results[name].append({"round": round_, "concurrency": concurrency, **found})
    finally:
        supervisor.stop_all()
    report(results, args)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; {args.requests} requests a measurement, "
          f"{args.rounds} rounds\n")  # fmt: skip
    print(
        "| request | concurrency | edgecrew p50 / p99 ms | minimal p50 / p99 ms "
        "| ratio p50 (per round) | ratio p99 (per round) |"
    )
    print("|---|---|---|---|---|---|")
    for verb in ("post", "get"):
        for concurrency in (1, 50):
            ours = [r for r in results["edgecrew"] if r["concurrency"] == concurrency]
            base = [r for r in results["minimal"] if r["concurrency"] == concurrency]
            both = [s for r in ours for s in r[verb]], [s for r in base for s in r[verb]]
            pairs = list(zip(ours, base, strict=True))
            ratios = {q: [pct(a[verb], q) / pct(b[verb], q) for a, b in pairs] for q in (50, 99)}
            cells = [
                f"{pct(both[0], 50):.1f} / {pct(both[0], 99):.1f}",
                f"{pct(both[1], 50):.1f} / {pct(both[1], 99):.1f}",
                ", ".join(f"{r:.2f}" for r in ratios[50]),
                ", ".join(f"{r:.2f}" for r in ratios[99]),
            ]
            print(f"| {verb.upper()} | {concurrency} | " + " | ".join(cells) + " |")
    rates = {name: [r["post_rate"] for r in found if r["concurrency"] == 50]
             for name, found in results.items()}  # fmt: skip
    print(f"\nPOST accepted/s at concurrency 50: edgecrew "
          f"{', '.join(f'{r:.0f}' for r in rates['edgecrew'])}; minimal "
          f"{', '.join(f'{r:.0f}' for r in rates['minimal'])}\n")  # fmt: skip
    posts = 2 * args.rounds * (args.requests + 1)  # each measurement warms up with one
    for name, found in results.items():
        calls = found[-1]["calls"]
        per = ", ".join(f"{call} {count / posts:.2f}" for call, count in sorted(calls.items()))
        print(f"calls per POST + GET pair ({name}): {per}\n")


if __name__ == "__main__":
    main()
