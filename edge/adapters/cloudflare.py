"""Cloudflare adapters: the ports over the KV, Vectorize and Workers AI bindings.

This module and `edge/entry.py` are the only ones that know about JS values. Bindings come
wrapped by the Workers runtime SDK (dict options go in as JS objects, results come back as
dicts), but we still convert at this boundary both ways: a raw binding (no vendored SDK)
needs JS arguments and hands back JsProxy objects, and Pyodide >= 0.28 turns JS null into
`jsnull`, not None. tests/pyodide runs these adapters in real Pyodide both ways. Under
CPython the pyodide imports fail and the Python doubles take and return plain values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from edge.adapters.openai_compatible import OpenAICompatibleGenerator
from edge.adapters.sse_lines import sse_data
from edge.ports import (
    ChatMessage,
    DependencyUnavailable,
    InvalidCursor,
    KVEntry,
    KVKey,
    KVListPage,
    Metadata,
    MetadataValue,
    Ports,
    TextGenerator,
    VectorMatch,
    VectorRecord,
)
from edge.settings import ENV_KEYS, Settings

try:
    from pyodide.ffi import JsException, JsProxy
except ImportError:  # CPython: no JS here, tests use plain-Python binding doubles.

    class JsException(Exception):  # type: ignore[no-redef]
        """Stands in for pyodide's JsException so doubles can raise what the runtime would."""

    class JsProxy:  # type: ignore[no-redef]
        pass


try:
    from pyodide.ffi import jsnull as _JSNULL
except ImportError:  # CPython, or Pyodide < 0.28 where JS null already arrives as None
    _JSNULL = None

try:
    from js import Object as _JSObject
    from pyodide.ffi import to_js as _to_js
except ImportError:  # CPython: the doubles take plain Python values
    _JSObject = _to_js = None

#: Output sizes of Workers AI embedding models, to catch a mismatched index at startup.
WORKERS_AI_EMBEDDING_DIMENSIONS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
    "@cf/baai/bge-m3": 1024,
}
VECTORIZE_UPSERT_BATCH = 1000
_ID_FIELD = "_id"


def to_py(value: Any) -> Any:
    """Plain Python from whatever a binding returned: JsProxy, jsnull, SDK JsDict, ..."""
    if value is None or value is _JSNULL:
        return None
    if isinstance(value, JsProxy) and hasattr(value, "to_py"):
        value = value.to_py()
    if isinstance(value, dict):
        return {str(k): to_py(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_py(v) for v in value]
    return value


def to_js(value: Any) -> Any:
    """A binding argument as JS: dicts as plain objects, lists as arrays, None as null.

    The runtime SDK's binding wrapper converts arguments too, and passes JS values through
    unchanged; converting here keeps the adapters right on a raw binding as well, which
    would otherwise receive a PyProxy it cannot read.
    """
    if _to_js is None or not isinstance(value, dict | list | tuple):
        return value
    return _to_js(_null_for_none(value), dict_converter=_JSObject.fromEntries)


def _null_for_none(value: Any) -> Any:
    # to_js turns None into undefined, which drops object keys; KV and Vectorize want null.
    if value is None:
        return _JSNULL
    if isinstance(value, dict):
        return {k: _null_for_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_null_for_none(v) for v in value]
    return value


def env_mapping(env: Any) -> dict[str, str]:
    """The settings' keys read off the Worker env (vars and secrets), as strings."""
    found: dict[str, str] = {}
    for key in ENV_KEYS:
        value = to_py(getattr(env, key, None))
        if value is not None:
            found[key] = str(value)
    return found


class CloudflareKV:
    """KeyValueStore over a Workers KV namespace binding."""

    def __init__(self, binding: Any) -> None:
        self._kv = binding

    async def get(self, key: str) -> str | None:
        value = await self._call("get", key)
        return None if value is None else str(value)

    async def get_with_metadata(self, key: str) -> KVEntry | None:
        result = await self._call("getWithMetadata", key) or {}
        if result.get("value") is None:
            return None
        return KVEntry(str(result["value"]), result.get("metadata"))

    async def put(
        self,
        key: str,
        value: str,
        *,
        ttl_seconds: int | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        options: dict[str, Any] = {}
        if ttl_seconds is not None:
            options["expirationTtl"] = ttl_seconds
        if metadata is not None:
            options["metadata"] = metadata
        if options:
            await self._call("put", key, value, options)
        else:
            await self._call("put", key, value)

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def list(
        self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> KVListPage:
        options: dict[str, Any] = {"prefix": prefix, "limit": limit}
        if cursor:
            options["cursor"] = cursor
        try:
            result = await self._call("list", options)
        except DependencyUnavailable as exc:
            if cursor:  # KV rejects cursors it did not issue
                raise InvalidCursor(f"KV rejected the cursor: {exc}") from exc
            raise
        keys = [KVKey(k["name"], k.get("expiration"), k.get("metadata")) for k in result["keys"]]
        done = bool(result.get("list_complete", True))
        return KVListPage(keys, None if done else result.get("cursor"))

    async def _call(self, method: str, *args: Any) -> Any:
        # A KV error (429 on > 1 write/s to one key, an outage) is the platform's, not the
        # client's: surface it as 503 + Retry-After rather than a 500.
        try:
            return to_py(await getattr(self._kv, method)(*map(to_js, args)))
        except JsException as exc:
            raise DependencyUnavailable("Workers KV", f"{method} failed: {exc}", 1) from exc


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


class WorkersAIEmbedder:
    """Embedder over the Workers AI binding (bge models)."""

    def __init__(self, binding: Any, *, model: str, dimensions: int) -> None:
        self._ai = binding
        self._model = model
        self._dimensions = WORKERS_AI_EMBEDDING_DIMENSIONS.get(model, dimensions)

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            result = to_py(await self._ai.run(self._model, to_js({"text": list(texts)})))
        except JsException as exc:
            raise DependencyUnavailable("Workers AI", f"embedding failed: {exc}") from exc
        vectors: list[list[float]] = [[float(x) for x in row] for row in result["data"]]
        if any(len(v) != self._dimensions for v in vectors):
            raise DependencyUnavailable(
                "Workers AI", f"{self._model} returned vectors that are not {self._dimensions}-d"
            )
        return vectors


class WorkersAIGenerator:
    """TextGenerator over the Workers AI binding; streaming reads the SSE ReadableStream."""

    def __init__(self, binding: Any, *, model: str) -> None:
        self._ai = binding
        self._model = model

    @property
    def model(self) -> str:
        return self._model

    async def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str:
        result = to_py(await self._run(messages, max_tokens, stream=False))
        return str(result.get("response") or "")

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> AsyncIterator[str]:
        body = await self._run(messages, max_tokens, stream=True)
        async for data in sse_data(_read_stream(body)):
            if data.strip() == "[DONE]":
                break
            piece = json.loads(data).get("response")
            if piece:
                yield str(piece)

    async def _run(self, messages: Sequence[ChatMessage], max_tokens: int, *, stream: bool) -> Any:
        inputs = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "stream": stream,
        }
        try:
            return await self._ai.run(self._model, to_js(inputs))
        except JsException as exc:
            raise DependencyUnavailable("Workers AI", f"generation failed: {exc}") from exc


def vectorize_id(namespace: str, record_id: str) -> str:
    """A Vectorize id (<= 64 bytes) unique to this namespace and record id."""
    return hashlib.sha256(f"{namespace}\x00{record_id}".encode()).hexdigest()[:48]


def build_cloudflare_ports(env: Any, settings: Settings) -> Ports:
    """Ports over the Worker's bindings; an OpenAI-compatible LLM if one is configured."""
    generator: TextGenerator
    if settings.llm_base_url:
        generator = OpenAICompatibleGenerator(
            settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key
        )
    else:
        generator = WorkersAIGenerator(env.AI, model=settings.llm_model)
    return Ports(
        kv=CloudflareKV(env.KV),
        vectors=CloudflareVectorIndex(env.VECTORIZE, dimensions=settings.embed_dimensions),
        embedder=WorkersAIEmbedder(
            env.AI, model=settings.embed_model, dimensions=settings.embed_dimensions
        ),
        generator=generator,
    )


async def _read_stream(stream: Any) -> AsyncIterator[bytes]:
    """Bytes from a JS ReadableStream (the AI binding passes it through unwrapped)."""
    reader = stream.getReader()
    while True:
        chunk = await reader.read()
        if chunk.done:
            return
        yield bytes(chunk.value.to_bytes())


def _metadata_with_id(record: VectorRecord) -> dict[str, object]:
    metadata: dict[str, object] = dict(record.metadata)
    metadata[_ID_FIELD] = record.id
    return metadata


def _match(raw: Mapping[str, Any]) -> VectorMatch:
    metadata: dict[str, MetadataValue] = dict(raw.get("metadata") or {})
    record_id = str(metadata.pop(_ID_FIELD, raw["id"]))
    return VectorMatch(record_id, float(raw["score"]), metadata)
