"""Documents per second into the local knowledge base: a bulk ingestion against the edge's
own ingest route, on the same stack in the same run.

    .venv/bin/python bench/ingest.py [--documents 300 1000]

The real local stack (`edgecrew dev`, as tests/support.py starts it; the edge's LLM is a
stand-in, nothing here generates). For each size, with fresh document ids each time:
- baseline: `POST /v1/documents` in requests of 100 (the edge chunks, embeds with MiniLM
  and indexes within each request), one after the other;
- bulk: one `POST /v1/ingestions` until its job is `succeeded` (Prefect hands it to the
  warm `cpu` worker, the flow process loads MiniLM, embeds, hands the vectors to the
  edge's index and registers the documents), and the flow's own time from its result.
Prints markdown; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edge.settings import DEV_API_KEYS  # noqa: E402
from tests.doubles.openai_server import FakeOpenAIServer  # noqa: E402
from tests.support import DevStack  # noqa: E402

HEADERS = {"Authorization": f"Bearer {DEV_API_KEYS.split(':', 1)[1]}"}
WORDS = [
    "edge",
    "worker",
    "crew",
    "prefect",
    "vector",
    "index",
    "chunk",
    "tenant",
    "answer",
    "webhook",
    "queue",
    "model",
]


def corpus(count: int, run: str) -> list[dict[str, Any]]:
    """Notes of ~400 characters (one 800-character chunk each), ids unique to the run."""
    return [
        {
            "id": f"{run}-{n}",
            "text": f"Note {n} of {run}. "
            + " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(60)),
            "metadata": {"run": run},
        }
        for n in range(count)
    ]


def baseline(stack: DevStack, documents: list[dict[str, Any]]) -> float:
    started = time.monotonic()
    for start in range(0, len(documents), 100):
        body = {"documents": documents[start : start + 100]}
        url = f"{stack.base_url}/v1/documents"
        httpx.post(url, json=body, headers=HEADERS, timeout=300).raise_for_status()
    return time.monotonic() - started


def bulk(stack: DevStack, documents: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    url = f"{stack.base_url}/v1/ingestions"
    accepted = httpx.post(url, json={"documents": documents}, headers=HEADERS, timeout=60)
    accepted.raise_for_status()
    job = stack.wait_for_job(accepted.json()["id"], HEADERS["Authorization"][7:], timeout=900)
    if job["status"] != "succeeded":
        raise SystemExit(f"the ingestion did not succeed: {job}")
    return time.monotonic() - started, job["result"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, nargs="+", default=[300, 1000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, FakeOpenAIServer() as llm:
        env = {"EDGECREW_LLM_BASE_URL": llm.base_url}
        with DevStack.running(Path(folder), "--no-demo", env=env) as stack:
            baseline(stack, corpus(10, "warm"))  # the edge's MiniLM loads on first use
            for count in args.documents:
                posted = baseline(stack, corpus(count, f"posted{count}"))
                took, result = bulk(stack, corpus(count, f"bulk{count}"))
                rows.append((count, posted, took, result))
    print(f"\n{platform.machine()}, {platform.python_version()}\n")
    print("| documents | POST /v1/documents s (docs/s) | POST /v1/ingestions → succeeded s "
          "(docs/s) | inside the flow s (docs/s) | chunks |")  # fmt: skip
    print("|---|---|---|---|---|")
    for count, posted, took, result in rows:
        print(f"| {count} | {posted:.1f} ({count / posted:.0f}) | {took:.1f} ({count / took:.0f})"
              f" | {result['seconds']:.1f} ({result['documents_per_second']:.0f}) "
              f"| {result['chunks']} |")  # fmt: skip


if __name__ == "__main__":
    main()
