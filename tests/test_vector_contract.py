"""One contract for every VectorIndex adapter that runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.adapters.cloudflare import CloudflareVectorIndex, vectorize_id
from edge.local.numpy_index import NumpyVectorIndex
from edge.ports import VectorIndex, VectorRecord
from tests.doubles.cloudflare_bindings import FakeVectorize

DIMS = 8


def unit(*hot: int) -> list[float]:
    vector = [0.0] * DIMS
    for i in hot:
        vector[i] = 1.0
    return vector


@pytest.fixture(params=["numpy", "cloudflare"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> VectorIndex:
    if request.param == "numpy":
        return NumpyVectorIndex(tmp_path / "vectors.sqlite3", dimensions=DIMS)
    return CloudflareVectorIndex(FakeVectorize(DIMS), dimensions=DIMS)


async def test_query_ranks_by_cosine(index: VectorIndex) -> None:
    await index.upsert(
        "t1",
        [
            VectorRecord("a", unit(0)),
            VectorRecord("b", unit(0, 1)),
            VectorRecord("c", unit(2)),
        ],
    )
    matches = await index.query("t1", unit(0), top_k=2)
    assert [m.id for m in matches] == ["a", "b"]
    assert matches[0].score == pytest.approx(1.0)
    assert matches[1].score == pytest.approx(2**-0.5)


async def test_namespaces_are_isolated_even_with_equal_ids(index: VectorIndex) -> None:
    await index.upsert("t1", [VectorRecord("doc#0", unit(0), {"owner": "t1"})])
    await index.upsert("t2", [VectorRecord("doc#0", unit(0), {"owner": "t2"})])
    (match,) = await index.query("t1", unit(0), top_k=5)
    assert (match.id, match.metadata["owner"]) == ("doc#0", "t1")
    await index.delete("t2", ["doc#0"])
    assert [m.id for m in await index.query("t1", unit(0), top_k=5)] == ["doc#0"]
    assert await index.query("t2", unit(0), top_k=5) == []


async def test_upsert_replaces_and_delete_removes(index: VectorIndex) -> None:
    await index.upsert("t1", [VectorRecord("a", unit(0), {"v": 1})])
    await index.upsert("t1", [VectorRecord("a", unit(1), {"v": 2})])
    (match,) = await index.query("t1", unit(1), top_k=5)
    assert match.metadata["v"] == 2
    assert match.score == pytest.approx(1.0)
    await index.delete("t1", ["a", "never-there"])
    assert await index.query("t1", unit(1), top_k=5) == []


async def test_metadata_filter_is_equality_on_every_pair(index: VectorIndex) -> None:
    await index.upsert(
        "t1",
        [
            VectorRecord("a", unit(0), {"source": "handbook", "lang": "en"}),
            VectorRecord("b", unit(0), {"source": "handbook", "lang": "fr"}),
            VectorRecord("c", unit(0), {"source": "wiki", "lang": "en"}),
        ],
    )
    only = await index.query("t1", unit(0), top_k=5, filter={"source": "handbook", "lang": "en"})
    assert [m.id for m in only] == ["a"]
    none = await index.query("t1", unit(0), top_k=5, filter={"source": "nowhere"})
    assert none == []


async def test_metadata_comes_back_unchanged(index: VectorIndex) -> None:
    metadata = {"s": "text", "n": 3, "f": 0.5, "b": True}
    await index.upsert("t1", [VectorRecord("a", unit(3), metadata)])
    (match,) = await index.query("t1", unit(3), top_k=1)
    assert match.metadata == metadata


async def test_top_k_larger_than_the_namespace(index: VectorIndex) -> None:
    await index.upsert("t1", [VectorRecord(str(i), unit(i)) for i in range(3)])
    assert len(await index.query("t1", unit(0), top_k=20)) == 3
    assert await index.query("empty", unit(0), top_k=5) == []


async def test_numpy_index_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "vectors.sqlite3"
    first = NumpyVectorIndex(path, dimensions=DIMS)
    await first.upsert("t1", [VectorRecord("a", unit(0), {"k": "v"}), VectorRecord("b", unit(1))])
    await first.delete("t1", ["b"])
    first.close()
    again = NumpyVectorIndex(path, dimensions=DIMS)
    matches = await again.query("t1", unit(0), top_k=5)
    assert [(m.id, m.metadata) for m in matches] == [("a", {"k": "v"})]


async def test_numpy_index_refuses_a_file_of_other_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "vectors.sqlite3"
    first = NumpyVectorIndex(path, dimensions=DIMS)
    await first.upsert("t1", [VectorRecord("a", unit(0))])
    first.close()
    with pytest.raises(ValueError, match="8-dimension vectors but 16"):
        NumpyVectorIndex(path, dimensions=16)


async def test_numpy_index_refuses_wrong_sized_vectors(tmp_path: Path) -> None:
    index = NumpyVectorIndex(tmp_path / "v.sqlite3", dimensions=DIMS)
    with pytest.raises(ValueError, match="8 dimensions"):
        await index.upsert("t1", [VectorRecord("a", [1.0, 2.0])])


async def test_numpy_index_swap_delete_keeps_rows_consistent(tmp_path: Path) -> None:
    index = NumpyVectorIndex(tmp_path / "v.sqlite3", dimensions=DIMS)
    await index.upsert("t", [VectorRecord(f"r{i}", unit(i), {"i": i}) for i in range(DIMS)])
    await index.delete("t", ["r0", "r3"])
    for i in [1, 2, 4, 5, 6, 7]:
        (best,) = await index.query("t", unit(i), top_k=1, filter={"i": i})
        assert (best.id, best.score) == (f"r{i}", pytest.approx(1.0))
    assert await index.query("t", unit(0), top_k=1, filter={"i": 0}) == []


def test_vectorize_ids_fit_and_differ_per_namespace() -> None:
    long_id = "d" * 128 + "#999"
    assert len(vectorize_id("tenant", long_id).encode()) <= 64
    assert vectorize_id("t1", "doc#0") != vectorize_id("t2", "doc#0")
