"""/v1/answers on the real local stack: stage breakdown and the cache-hit path.

    .venv/bin/python bench/answers.py [--repeat 200]

Starts SmolLM2 (CTranslate2) and the edge (uvicorn) exactly as `edgecrew dev` does, on
free ports with a throwaway data dir, ingests the project docs, then:
1. asks 20 distinct questions (cache misses) and reports p50/p90 per stage;
2. asks them again `--repeat` times in total (cache hits) and reports client latency;
3. measures GET /healthz in the same run as the floor (HTTP + framework, no work).
Prints markdown; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from edge.local.cli import _edge_service
from edge.local.demo import demo_documents
from edge.local.llm_service import START_TIMEOUT_S, local_llm_service
from edge.local.processes import Supervisor, free_port

QUESTIONS = [
    "What does edgecrew do?",
    "Which port does the local edge listen on?",
    "How do I run the tests?",
    "What is the maximum request body size?",
    "How are answers cached?",
    "What happens when the LLM is down?",
    "How many documents can one ingest request hold?",
    "What embedding model does local mode use?",
    "How do I deploy the edge to Cloudflare?",
    "What does a 415 status mean?",
    "What is EDGECREW_CHUNK_OVERLAP?",
    "How is a tenant isolated from another?",
    "What is the default LLM on Cloudflare?",
    "How are server-sent events used for answers?",
    "Which characters may a document id contain?",
    "What does make dev install?",
    "What is the top_k limit?",
    "Where are local logs written?",
    "How are API keys configured?",
    "What does the wrangler dry-run check verify?",
]
KEY = "bench-key-0123456789"


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="edgecrew-bench-"))
    port, llm_port = free_port(), free_port()
    env = {
        "EDGECREW_API_KEYS": f"bench:{KEY}",
        "EDGECREW_RATE_LIMIT_PER_MINUTE": "0",  # thousands of requests a minute, on purpose
        "EDGECREW_DATA_DIR": str(data),
        "EDGECREW_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
        "EDGECREW_LLM_MODEL": "smollm2",
        "EDGECREW_EMBED_MODEL": "all-MiniLM-L6-v2",
    }
    os.environ.update(env)
    supervisor = Supervisor(data / "logs")
    try:
        supervisor.start(local_llm_service(llm_port, data), timeout=START_TIMEOUT_S)
        supervisor.start(_edge_service("127.0.0.1", port, env))
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
            docs = demo_documents()
            client.post("/v1/documents", json={"documents": docs}).raise_for_status()
            client.post("/v1/answers", json={"question": "warm up"}).raise_for_status()
            report_misses(client)
            report_hits(client, args.repeat)
    finally:
        supervisor.stop_all()


def report_misses(client: httpx.Client) -> None:
    stages: dict[str, list[float]] = {k: [] for k in ("embed", "search", "generate", "overhead")}
    client_ms: list[float] = []
    for question in QUESTIONS:
        started = time.perf_counter()
        body = client.post("/v1/answers", json={"question": question}).json()
        elapsed = (time.perf_counter() - started) * 1000
        assert body["cached"] is False, "benchmark questions must be cache misses"
        t = body["timings_ms"]
        for stage in ("embed", "search", "generate"):
            stages[stage].append(t[stage])
        stages["overhead"].append(elapsed - t["embed"] - t["search"] - t["generate"])
        client_ms.append(elapsed)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; LLM SmolLM2-135M (CTranslate2 int8, CPU), embedder "
        "all-MiniLM-L6-v2 (CPU), max 256 answer tokens\n"
    )
    print(f"cache misses ({len(QUESTIONS)} distinct questions):\n")
    print("| stage | p50 ms | p90 ms | share of p50 total |")
    print("|---|---|---|---|")
    total = pct(client_ms, 50)
    for stage, samples in stages.items():
        print(
            f"| {stage} | {pct(samples, 50):.1f} | {pct(samples, 90):.1f} "
            f"| {pct(samples, 50) / total:.1%} |"
        )
    print(f"| **client total** | {total:.1f} | {pct(client_ms, 90):.1f} | |")


def report_hits(client: httpx.Client, repeat: int) -> None:
    hits: list[float] = []
    health: list[float] = []
    for i in range(repeat):
        question = QUESTIONS[i % len(QUESTIONS)]
        started = time.perf_counter()
        body = client.post("/v1/answers", json={"question": question}).json()
        hits.append((time.perf_counter() - started) * 1000)
        assert body["cached"] is True
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        health.append((time.perf_counter() - started) * 1000)
    print(f"\ncache hits ({repeat} requests, interleaved with GET /healthz as the floor):\n")
    print("| request | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| POST /v1/answers (cache hit) | {pct(hits, 50):.2f} | {pct(hits, 99):.2f} |")
    print(f"| GET /healthz (baseline) | {pct(health, 50):.2f} | {pct(health, 99):.2f} |")
    print(f"\ncache hit / healthz p50 ratio: {pct(hits, 50) / pct(health, 50):.2f}x")


if __name__ == "__main__":
    main()
