"""Local vector search: NumpyVectorIndex against numpy brute force, measured in one run.

    .venv/bin/python bench/vector_search.py [--sizes 100000 1000000] [--queries 300]

Brute force is the baseline the issue names: one matrix of every chunk, scores for all of
them, the tenant applied as a mask, top-5 by argpartition. The index keeps a matrix per
tenant (the Vectorize namespace), so a tenant's query touches only its own rows.
Prints a markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.local.numpy_index import NumpyVectorIndex
from edge.ports import VectorRecord

DIMS = 384
TOP_K = 5


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def brute_force_top_k(matrix: np.ndarray, tenants: np.ndarray, query: np.ndarray, tenant: int):
    scores = matrix @ query
    scores[tenants != tenant] = -np.inf
    best = np.argpartition(-scores, TOP_K)[:TOP_K]
    return best[np.argsort(-scores[best])]


async def build_index(path: Path, matrix: np.ndarray, tenants: np.ndarray) -> NumpyVectorIndex:
    index = NumpyVectorIndex(path, dimensions=DIMS)
    batch = 20_000
    for start in range(0, len(matrix), batch):
        for tenant in np.unique(tenants[start : start + batch]):
            rows = np.nonzero(tenants[start : start + batch] == tenant)[0] + start
            records = [
                VectorRecord(f"c{row}", matrix[row], {"source": f"s{row % 4}"}) for row in rows
            ]
            await index.upsert(f"t{tenant}", records)
    return index


async def run_case(size: int, tenant_count: int, queries: int, rng: np.random.Generator):
    matrix = rng.standard_normal((size, DIMS), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    tenants = rng.integers(0, tenant_count, size=size)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        index = await build_index(Path(folder) / "v.sqlite3", matrix, tenants)
        build_s = time.perf_counter() - started
        probes = rng.standard_normal((queries, DIMS), dtype=np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        asked = rng.integers(0, tenant_count, size=queries)
        base, ours, filtered = [], [], []
        for query, tenant in zip(probes, asked, strict=True):
            t0 = time.perf_counter()
            expected = brute_force_top_k(matrix, tenants, query, int(tenant))
            t1 = time.perf_counter()
            got = await index.query(f"t{tenant}", query.tolist(), top_k=TOP_K)
            t2 = time.perf_counter()
            await index.query(f"t{tenant}", query.tolist(), top_k=TOP_K, filter={"source": "s1"})
            t3 = time.perf_counter()
            assert [m.id for m in got] == [f"c{row}" for row in expected], "results differ"
            base.append((t1 - t0) * 1000)
            ours.append((t2 - t1) * 1000)
            filtered.append((t3 - t2) * 1000)
        index.close()
    return {
        "size": size,
        "tenants": tenant_count,
        "build_s": build_s,
        "base": (percentile(base, 50), percentile(base, 99)),
        "ours": (percentile(ours, 50), percentile(ours, 99)),
        "filtered": (percentile(filtered, 50), percentile(filtered, 99)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--tenants", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"numpy {np.__version__}, python {platform.python_version()}, "
        f"{args.queries} queries, top-{TOP_K}, {DIMS} dims, results checked identical\n"
    )
    print(
        "| chunks | tenants | brute force p50 / p99 ms | index p50 / p99 ms | ratio p50 "
        "| index + metadata filter p50 / p99 ms | build s |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for tenant_count in args.tenants:
            r = await run_case(size, tenant_count, args.queries, rng)
            ratio = r["ours"][0] / r["base"][0]
            print(
                f"| {size:,} | {tenant_count} | {r['base'][0]:.2f} / {r['base'][1]:.2f} "
                f"| {r['ours'][0]:.2f} / {r['ours'][1]:.2f} | {ratio:.2f}x "
                f"| {r['filtered'][0]:.2f} / {r['filtered'][1]:.2f} | {r['build_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
