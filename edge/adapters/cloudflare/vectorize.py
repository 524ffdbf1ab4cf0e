"""VectorIndex over a Vectorize binding; a namespace per tenant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge.adapters.cloudflare._js import JsException, to_js, to_py
from edge.ports import DependencyUnavailable, Metadata, MetadataValue, VectorMatch, VectorRecord
from shared.documents import VECTORIZE_ID_FIELD as _ID_FIELD
from shared.documents import vectorize_id

__all__ = ["CloudflareVectorIndex", "vectorize_id"]

VECTORIZE_UPSERT_BATCH = 1000


class CloudflareVectorIndex:
    """VectorIndex over a Vectorize binding; a namespace per tenant.

    Vectorize ids are unique across the whole index, so each id is a digest of
    (namespace, id): two tenants' `doc#0` never collide, and ids stay under 64 bytes.
    """

    def __init__(self, binding: Any, *, dimensions: int) -> None:
        self._index = binding
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def upsert(self, namespace: str, records: Sequence[VectorRecord]) -> None:
        vectors = [
            {
                "id": vectorize_id(namespace, r.id),
                "values": [float(x) for x in r.values],  # lists only: tuples can't cross RPC
                "namespace": namespace,
                "metadata": _metadata_with_id(r),
            }
            for r in records
        ]
        for start in range(0, len(vectors), VECTORIZE_UPSERT_BATCH):
            await self._call("upsert", vectors[start : start + VECTORIZE_UPSERT_BATCH])

    async def delete(self, namespace: str, ids: Sequence[str]) -> None:
        if ids:
            await self._call("deleteByIds", [vectorize_id(namespace, i) for i in ids])

    async def query(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        top_k: int,
        filter: Metadata | None = None,
    ) -> list[VectorMatch]:
        options: dict[str, Any] = {
            "topK": top_k,
            "namespace": namespace,
            "returnMetadata": "all",
            "returnValues": False,
        }
        if filter:
            options["filter"] = dict(filter)
        result = await self._call("query", [float(x) for x in vector], options)
        return [_match(m) for m in result.get("matches", [])]

    async def _call(self, method: str, *args: Any) -> dict[str, Any]:
        try:
            result = to_py(await getattr(self._index, method)(*map(to_js, args)))
        except JsException as exc:
            raise DependencyUnavailable("Vectorize", f"{method} failed: {exc}") from exc
        return result if isinstance(result, dict) else {}


def _metadata_with_id(record: VectorRecord) -> dict[str, object]:
    metadata: dict[str, object] = dict(record.metadata)
    metadata[_ID_FIELD] = record.id
    return metadata


def _match(raw: Mapping[str, Any]) -> VectorMatch:
    metadata: dict[str, MetadataValue] = dict(raw.get("metadata") or {})
    record_id = str(metadata.pop(_ID_FIELD, raw["id"]))
    return VectorMatch(record_id, float(raw["score"]), metadata)
