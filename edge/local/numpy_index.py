"""An exact cosine index: one numpy matrix per namespace in memory, persisted in SQLite.

Chosen by measurement (docs/benchmarks.md): a tenant's query only touches that tenant's
rows, and metadata filters narrow the rows through an inverted index before any maths, so
it is never slower than brute force over everything and usually much faster.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.ports import Metadata, MetadataValue, VectorMatch, VectorRecord

Vector = npt.NDArray[np.float32]
_Posting = tuple[str, str, MetadataValue]  # (key, kind, value): 1 and True must differ

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
"""


class NumpyVectorIndex:
    """A VectorIndex for local mode. Namespaces are tenants; they share nothing."""

    def __init__(self, path: str | Path, *, dimensions: int) -> None:
        self._dimensions = dimensions
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._namespaces: dict[str, _Namespace] = {}
        self._check_stored_dimensions()

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def upsert(self, namespace: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        matrix = self._normalized([r.values for r in records])
        with self._lock:
            space = self._namespace(namespace)
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                [
                    (namespace, r.id, row.tobytes(), json.dumps(dict(r.metadata)))
                    for r, row in zip(records, matrix, strict=True)
                ],
            )
            self._db.execute("COMMIT")
            for record, row in zip(records, matrix, strict=True):
                space.put(record.id, row, dict(record.metadata))

    async def delete(self, namespace: str, ids: Sequence[str]) -> None:
        with self._lock:
            space = self._namespace(namespace)
            self._db.executemany(
                "DELETE FROM vectors WHERE namespace = ? AND id = ?", [(namespace, i) for i in ids]
            )
            for vector_id in ids:
                space.remove(vector_id)

    async def query(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        top_k: int,
        filter: Metadata | None = None,
    ) -> list[VectorMatch]:
        (query,) = self._normalized([vector])
        with self._lock:
            return self._namespace(namespace).search(query, top_k, filter)

    def count(self, namespace: str) -> int:
        with self._lock:
            return self._namespace(namespace).size

    def close(self) -> None:
        self._db.close()

    def _normalized(self, vectors: Sequence[Sequence[float]]) -> Vector:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self._dimensions:
            raise ValueError(
                f"vectors must have {self._dimensions} dimensions, got shape {matrix.shape}"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        normalized: Vector = matrix / norms
        return normalized

    def _namespace(self, name: str) -> _Namespace:
        space = self._namespaces.get(name)
        if space is None:
            space = self._namespaces[name] = _Namespace(self._dimensions)
            rows = self._db.execute(
                "SELECT id, vector, metadata FROM vectors WHERE namespace = ?", (name,)
            )
            for vector_id, blob, metadata in rows:
                space.put(vector_id, np.frombuffer(blob, dtype=np.float32), json.loads(metadata))
        return space

    def _check_stored_dimensions(self) -> None:
        row = self._db.execute("SELECT length(vector) FROM vectors LIMIT 1").fetchone()
        if row is not None and row[0] != self._dimensions * 4:
            raise ValueError(
                f"the index holds {row[0] // 4}-dimension vectors but {self._dimensions} "
                "were configured; use a new index file or the matching model"
            )


class _Namespace:
    """Rows of one namespace; deleting moves the last row into the hole.

    Postings map (key, kind, value) to the set of rows holding it, so a filter becomes a
    set intersection before any vector maths.
    """

    def __init__(self, dimensions: int) -> None:
        self.matrix: Vector = np.empty((16, dimensions), dtype=np.float32)
        self.size = 0
        self.ids: list[str] = []
        self.metadata: list[dict[str, MetadataValue]] = []
        self.rows: dict[str, int] = {}
        self.postings: dict[_Posting, set[int]] = {}

    def put(self, vector_id: str, vector: Vector, metadata: dict[str, MetadataValue]) -> None:
        row = self.rows.get(vector_id)
        if row is None:
            row = self._append(vector_id)
        else:
            self._unindex(row)
        self.matrix[row] = vector
        self.metadata[row] = metadata
        self._index(row)

    def remove(self, vector_id: str) -> None:
        row = self.rows.pop(vector_id, None)
        if row is None:
            return
        self._unindex(row)
        last = self.size - 1
        if row != last:
            self._unindex(last)
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.ids[row], self.metadata[row] = moved, self.metadata[last]
            self.rows[moved] = row
            self._index(row)
        self.ids.pop()
        self.metadata.pop()
        self.size -= 1

    def search(self, query: Vector, top_k: int, filter: Metadata | None) -> list[VectorMatch]:
        candidates: npt.NDArray[np.intp] | None = None
        if filter:
            candidates = self._filtered_rows(filter)
            if candidates.size * 4 < self.size:  # few rows: score only those
                scores = self.matrix[candidates] @ query
            else:  # many rows: one contiguous product is cheaper than gathering them
                scores = (self.matrix[: self.size] @ query)[candidates]
        else:
            scores = self.matrix[: self.size] @ query
        if scores.size == 0:
            return []
        k = min(top_k, scores.size)
        best = np.argpartition(scores, scores.size - k)[scores.size - k :]
        best = best[np.argsort(-scores[best], kind="stable")]
        matches = []
        for position in best:
            row = int(position if candidates is None else candidates[position])
            matches.append(
                VectorMatch(self.ids[row], float(scores[position]), dict(self.metadata[row]))
            )
        return matches

    def _filtered_rows(self, filter: Metadata) -> npt.NDArray[np.intp]:
        sets = sorted((self.postings.get(p, set()) for p in _postings(filter)), key=len)
        rows = set.intersection(*sets) if sets else set()
        return np.fromiter(rows, dtype=np.intp, count=len(rows))

    def _append(self, vector_id: str) -> int:
        if self.size == len(self.matrix):
            grown = np.empty((len(self.matrix) * 2, self.matrix.shape[1]), dtype=np.float32)
            grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
        row = self.size
        self.size += 1
        self.ids.append(vector_id)
        self.metadata.append({})
        self.rows[vector_id] = row
        return row

    def _index(self, row: int) -> None:
        for posting in _postings(self.metadata[row]):
            self.postings.setdefault(posting, set()).add(row)

    def _unindex(self, row: int) -> None:
        for posting in _postings(self.metadata[row]):
            holders = self.postings.get(posting)
            if holders is not None:
                holders.discard(row)
                if not holders:
                    del self.postings[posting]


def _postings(metadata: Metadata) -> list[_Posting]:
    # Large free text (the chunk itself) is never a filter target; skip indexing it.
    return [
        (key, _kind(value), float(value) if _kind(value) == "num" else value)
        for key, value in metadata.items()
        if not key.startswith("_")
    ]


def _kind(value: MetadataValue) -> str:
    if isinstance(value, bool):
        return "bool"
    return "num" if isinstance(value, int | float) else "str"
