"""Python doubles shaped like the JS binding APIs, as the Workers runtime SDK exposes them.

Shapes follow Cloudflare's documented binding APIs: camelCase methods, an options object
(dict) as the last argument, plain dicts back, None for a missing KV key. Like the real
KV, `list` pages in key order with `list_complete` and `cursor`; like Vectorize, ids are
global to the index and `namespace` scopes queries.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import sqlite3
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from edge.adapters.cloudflare import JsException
from edge.adapters.cloudflare.job_ledger import JobLedgerCell


class FakeKVNamespace:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.store: dict[str, tuple[str, int | None, Any]] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def get(self, key: str, options: Any = None) -> str | None:
        self.calls.append(("get", (key, options)))
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def getWithMetadata(self, key: str, options: Any = None) -> dict[str, Any]:
        self.calls.append(("getWithMetadata", (key, options)))
        entry = self._live(key)
        if entry is None:
            return {"value": None, "metadata": None, "cacheStatus": None}
        return {"value": entry[0], "metadata": entry[2], "cacheStatus": None}

    async def put(self, key: str, value: str, options: dict[str, Any] | None = None) -> None:
        self.calls.append(("put", (key, value, options)))
        if not isinstance(value, str):
            raise TypeError("this double stores text values only")
        options = options or {}
        ttl = options.get("expirationTtl")
        if ttl is not None and ttl < 60:
            raise RuntimeError("KV PUT failed: 400 Invalid expiration_ttl of " + str(ttl))
        expiration = None if ttl is None else int(self._clock()) + int(ttl)
        self.store[key] = (value, expiration, options.get("metadata"))

    async def delete(self, key: str) -> None:
        self.calls.append(("delete", (key,)))
        self.store.pop(key, None)

    async def list(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append(("list", (options,)))
        options = options or {}
        prefix = options.get("prefix") or ""
        limit = options.get("limit", 1000)
        after = base64.b64decode(options["cursor"]).decode() if options.get("cursor") else ""
        names = sorted(k for k in self.store if k.startswith(prefix) and k > after)
        names = [n for n in names if self._live(n) is not None]
        page, more = names[:limit], len(names) > limit
        keys = []
        for name in page:
            _, expiration, metadata = self.store[name]
            key: dict[str, Any] = {"name": name}
            if expiration is not None:
                key["expiration"] = expiration
            if metadata is not None:
                key["metadata"] = metadata
            keys.append(key)
        result: dict[str, Any] = {"keys": keys, "list_complete": not more, "cacheStatus": None}
        if more:
            result["cursor"] = base64.b64encode(page[-1].encode()).decode()
        return result

    def _live(self, key: str) -> tuple[str, int | None, Any] | None:
        entry = self.store.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= self._clock()):
            return None
        return entry


class FakeVectorize:
    def __init__(self, dimensions: int = 384) -> None:
        self.dimensions = dimensions
        self.vectors: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []

    async def upsert(self, vectors: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(("upsert", vectors))
        for vector in vectors:
            if not isinstance(vector["values"], list):
                raise TypeError("values must be a list (tuples cannot be sent over RPC)")
            if len(vector["values"]) != self.dimensions:
                raise RuntimeError("VECTOR_UPSERT_ERROR (code = 40005): invalid vector length")
            if len(vector["id"].encode()) > 64:
                raise RuntimeError("VECTOR_UPSERT_ERROR: id longer than 64 bytes")
            if len(json.dumps(vector.get("metadata", {})).encode()) > 10 * 1024:
                raise RuntimeError("VECTOR_UPSERT_ERROR: metadata over 10 KiB")
            self.vectors[vector["id"]] = json.loads(json.dumps(vector))
        return {"mutationId": f"m{len(self.calls)}"}

    async def deleteByIds(self, ids: list[str]) -> dict[str, Any]:
        self.calls.append(("deleteByIds", ids))
        for vector_id in ids:
            self.vectors.pop(vector_id, None)
        return {"mutationId": f"m{len(self.calls)}"}

    async def query(self, vector: list[float], options: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("query", options))
        top_k = options.get("topK", 5)
        if top_k > 20 and options.get("returnMetadata") == "all":
            raise RuntimeError("VECTOR_QUERY_ERROR: topK over 20 with returnMetadata=all")
        candidates = [
            v
            for v in self.vectors.values()
            if v.get("namespace") == options.get("namespace")
            and _matches(v.get("metadata", {}), options.get("filter") or {})
        ]
        scored = sorted(
            ((_cosine(vector, v["values"]), v) for v in candidates), key=lambda p: -p[0]
        )[:top_k]
        matches = []
        for score, v in scored:
            match: dict[str, Any] = {"id": v["id"], "score": score}
            if options.get("returnMetadata") in ("all", "indexed"):
                match["metadata"] = dict(v.get("metadata", {}))
            matches.append(match)
        return {"count": len(matches), "matches": matches}


class FakeAI:
    """Workers AI: embeddings as {shape, data}; chat as {response} or an SSE ReadableStream."""

    def __init__(
        self,
        embed: Callable[[str], list[float]],
        reply: str = "Grounded reply [1].",
        chunk_size: int = 7,
    ) -> None:
        self._embed = embed
        self.reply = reply
        self.chunk_size = chunk_size
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def run(self, model: str, inputs: dict[str, Any]) -> Any:
        self.calls.append((model, inputs))
        if "text" in inputs:
            texts = inputs["text"] if isinstance(inputs["text"], list) else [inputs["text"]]
            data = [self._embed(t) for t in texts]
            return {"shape": [len(data), len(data[0]) if data else 0], "data": data}
        if inputs.get("stream"):
            frames = "".join(
                f"data: {json.dumps({'response': word + ' '})}\n\n"
                for word in self.reply.split(" ")
            )
            frames += 'data: {"response":"","usage":{"total_tokens":9}}\n\ndata: [DONE]\n\n'
            return FakeReadableStream(frames.encode(), self.chunk_size)
        return {"response": self.reply, "usage": {"total_tokens": 9}}


class FakeReadableStream:
    """A JS ReadableStream of Uint8Array chunks, cut at arbitrary byte offsets."""

    def __init__(self, payload: bytes, chunk_size: int) -> None:
        self._chunks = [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)]

    def getReader(self) -> Any:
        chunks = iter(self._chunks)

        async def read() -> SimpleNamespace:
            chunk = next(chunks, None)
            if chunk is None:
                return SimpleNamespace(done=True, value=None)
            return SimpleNamespace(done=False, value=FakeUint8Array(chunk))

        return SimpleNamespace(read=read)


class FakeUint8Array:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _matches(metadata: dict[str, Any], filter: dict[str, Any]) -> bool:
    for key, condition in filter.items():
        expected = condition.get("$eq") if isinstance(condition, dict) else condition
        if metadata.get(key) != expected:
            return False
    return True


class FakeQueueProducer:
    """A Queues producer binding: `send(body, {delaySeconds})`."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []

    async def send(self, body: Any, options: Any = None) -> None:
        self.sent.append((body, options))


class FakeQueueMessage:
    def __init__(self, body: Any) -> None:
        self.body = body
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class FakeSqlStorage:
    """`ctx.storage.sql` of a SQLite-backed Durable Object: synchronous `exec(query,
    *bindings)` returning a cursor with `toArray()`; rows as dicts. Like the runtime, it
    refuses statements that manage transactions (each call is already atomic)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", isolation_level=None)
        self._db.row_factory = sqlite3.Row

    def exec(self, query: str, *bindings: Any) -> SimpleNamespace:
        if query.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT")):
            raise JsException("SqlStorage: use ctx.storage.transactionSync() instead")
        rows = [dict(row) for row in self._db.execute(query, bindings).fetchall()]
        return SimpleNamespace(toArray=lambda: list(rows))


class FakeJobLedgerObject:
    """What workerd does with `edge.entry.JobLedger` (which imports `workers`, so not
    here): one instance per object name over its own storage, methods called over RPC."""

    def __init__(self) -> None:
        self.cell = JobLedgerCell(FakeSqlStorage())

    async def create(self, record_json: str, now: float) -> str:
        await asyncio.sleep(0)  # the RPC hop: concurrent callers interleave here
        return self.cell.create(record_json, now)

    async def read(self, now: float) -> str:
        await asyncio.sleep(0)
        return self.cell.read(now)

    async def change(self, change_json: str, now: float) -> str:
        await asyncio.sleep(0)
        return self.cell.change(change_json, now)


class FakeDurableObjectNamespace:
    """A Durable Object namespace binding: `idFromName` → id, `get(id)` → stub; one object
    per name for the namespace's life. `calls` counts RPC calls by method."""

    def __init__(self) -> None:
        self.objects: dict[str, FakeJobLedgerObject] = {}
        self.calls: list[tuple[str, str]] = []

    def idFromName(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name)

    def get(self, object_id: SimpleNamespace) -> Any:
        target = self.objects.setdefault(object_id.name, FakeJobLedgerObject())
        namespace = self

        class Stub:
            def __getattr__(self, method: str) -> Any:
                namespace.calls.append((object_id.name, method))
                return getattr(target, method)

        return Stub()
