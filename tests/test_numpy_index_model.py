"""NumpyVectorIndex against a plain-Python model under random upserts, deletes and filters."""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.local.numpy_index import NumpyVectorIndex
from edge.ports import VectorRecord

DIMS = 4
ids = st.sampled_from([f"v{i}" for i in range(12)])
vectors = st.lists(st.integers(-3, 3), min_size=DIMS, max_size=DIMS).filter(any)
tags = st.sampled_from(["red", "blue"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["t1", "t2"]), ids, vectors, tags),
        st.tuples(st.just("delete"), st.sampled_from(["t1", "t2"]), ids),
    ),
    max_size=40,
)


def cosine(a: list[int], b: list[int]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


@settings(max_examples=60, deadline=None)
@given(ops=operations, probe=vectors, tag=st.none() | tags)
def test_index_agrees_with_a_model(ops: list[tuple], probe: list[int], tag: str | None) -> None:
    asyncio.run(_check(ops, probe, tag))


async def _check(ops: list[tuple], probe: list[int], tag: str | None) -> None:
    model: dict[str, dict[str, tuple[list[int], str]]] = {"t1": {}, "t2": {}}
    with tempfile.TemporaryDirectory() as folder:
        index = NumpyVectorIndex(Path(folder) / "v.sqlite3", dimensions=DIMS)
        for op in ops:
            if op[0] == "put":
                _, ns, vid, vec, color = op
                model[ns][vid] = (vec, color)
                await index.upsert(ns, [VectorRecord(vid, [float(x) for x in vec], {"c": color})])
            else:
                _, ns, vid = op
                model[ns].pop(vid, None)
                await index.delete(ns, [vid])
        for ns, rows in model.items():
            got = await index.query(
                ns, [float(x) for x in probe], top_k=50, filter={"c": tag} if tag else None
            )
            expected = {
                vid: cosine(vec, probe)
                for vid, (vec, color) in rows.items()
                if tag is None or color == tag
            }
            assert {m.id for m in got} == set(expected)
            for match in got:
                assert math.isclose(match.score, expected[match.id], abs_tol=1e-5)
            assert [m.score for m in got] == sorted((m.score for m in got), reverse=True)
        index.close()
