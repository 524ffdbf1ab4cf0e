"""Checks for edge/adapters/cloudflare/, run inside real Pyodide by run_adapters.mjs.

Not a pytest module: it imports `pyodide` and `workers`, which exist only inside Pyodide.
`run(mode, js_env, helpers)` runs every check against the JS fake bindings and returns a JSON
report; run_adapters.mjs prints it and sets the exit status.

mode "sdk": the adapters get the env as the Workers runtime SDK wraps it (production).
mode "raw": the adapters get the JS bindings unwrapped (a Worker without a vendored SDK).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyodide.ffi import JsProxy, jsnull

from edge.adapters.cloudflare import (
    CloudflareKV,
    CloudflareRateLimiter,
    CloudflareVectorIndex,
    WorkersAIEmbedder,
    WorkersAIGenerator,
    build_cloudflare_ports,
    env_mapping,
    vectorize_id,
)
from edge.ports import (
    ChatMessage,
    DependencyUnavailable,
    InvalidCursor,
    KVEntry,
    RateDecision,
    VectorRecord,
)
from edge.settings import Settings

LLM = "@cf/meta/llama-3.1-8b-instruct"
DIMS = 8  # the fake Vectorize index's dimensions


@dataclass
class Ctx:
    mode: str
    env: Any  # what the adapters are given: the SDK-wrapped env, or the raw JS env
    fakes: Any  # the raw JS fakes, to read what each binding was called with
    helpers: Any

    def calls(self, binding: str, method: str) -> list[list[Any]]:
        """Arguments of each `method` call the binding saw, as JSON (what JS received)."""
        calls = json.loads(getattr(self.fakes, binding).callsJson())
        return [c["args"] for c in calls if c["method"] == method]


Check = Callable[[Ctx], Awaitable[None]]
CHECKS: list[tuple[Check, tuple[str, ...]]] = []


def check(*modes: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS.append((fn, modes or ("sdk", "raw")))
        return fn

    return register


def adapter_env(mode: str, js_env: Any) -> Any:
    if mode == "raw":
        return js_env
    from workers import WorkerEntrypoint  # the SDK, as vendored into python_modules/

    class Default(WorkerEntrypoint):  # type: ignore[misc]
        pass

    # workerd constructs the entrypoint with (ctx, env); the SDK wraps env on the way in.
    return Default(object(), js_env).env


def assert_plain(value: Any, path: str = "value") -> None:
    """Only what the ports promise: no JsProxy, no jsnull, anywhere inside."""
    if value is jsnull:
        raise AssertionError(f"{path} is pyodide.ffi.jsnull, not None")
    if isinstance(value, JsProxy):
        raise AssertionError(f"{path} is a JsProxy: {type(value).__name__} {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{path} has a non-str key {key!r}"
            assert_plain(item, f"{path}[{key!r}]")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_plain(item, f"{path}[{i}]")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise AssertionError(f"{path} is a {type(value).__name__}: {value!r}")


def basis(i: int, scale: float = 1.0) -> list[float]:
    return [scale if j == i else 0.0 for j in range(DIMS)]


async def raises_unavailable(dependency: str, awaitable: Awaitable[Any]) -> DependencyUnavailable:
    try:
        await awaitable
    except DependencyUnavailable as exc:
        assert exc.dependency == dependency, exc
        return exc
    raise AssertionError(f"expected DependencyUnavailable({dependency!r})")


# --- the environment itself -------------------------------------------------------------------


@check("sdk")
async def check_sdk_wraps_the_bindings(ctx: Ctx) -> None:
    assert type(ctx.env).__name__ == "_EnvWrapper", type(ctx.env)
    for name in ("KV", "VECTORIZE", "AI"):
        assert type(getattr(ctx.env, name)).__name__ == "_BindingWrapper", name


@check("raw")
async def check_raw_binding_hands_back_jsnull(ctx: Ctx) -> None:
    # What the adapter must cope with when nothing wraps the binding (Pyodide >= 0.28).
    assert (await ctx.env.KV.get("never-written")) is jsnull
    entry = await ctx.env.KV.getWithMetadata("never-written")
    assert isinstance(entry, JsProxy), type(entry)


@check()
async def check_env_mapping_reads_vars_as_strings(ctx: Ctx) -> None:
    found = env_mapping(ctx.env)
    assert found == {
        "EDGECREW_API_KEYS": "tenant_a:key-a-0123456789",
        "EDGECREW_EMBED_MODEL": "@test/embed-8",
        "EDGECREW_EMBED_DIMENSIONS": "8",
    }, found


# --- KV -------------------------------------------------------------------------------------


@check()
async def check_kv_missing_key_is_none(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    assert (await kv.get("missing")) is None
    assert (await kv.get_with_metadata("missing")) is None


@check()
async def check_kv_put_get_round_trip(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    value = "héllo ✓ 🎉 " + "x" * 200
    await kv.put("rt:plain", value)
    assert ctx.calls("KV", "put")[-1] == ["rt:plain", value], "no options object expected"
    got = await kv.get("rt:plain")
    assert got == value and type(got) is str, repr(got)
    entry = await kv.get_with_metadata("rt:plain")
    assert entry == KVEntry(value, None), entry


@check()
async def check_kv_ttl_and_metadata_cross_as_an_options_object(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    metadata: dict[str, object] = {
        "tenant": "a",
        "n": 3,
        "ratio": 0.5,
        "ok": True,
        "tags": ["x", "y"],
        "nested": {"deep": None, "list": [1, {"k": "v"}]},
    }
    before = int(time.time())
    await kv.put("rt:meta", "v1", ttl_seconds=120, metadata=metadata)
    seen = ctx.calls("KV", "put")[-1]
    assert seen == ["rt:meta", "v1", {"expirationTtl": 120, "metadata": metadata}], seen

    entry = await kv.get_with_metadata("rt:meta")
    assert entry is not None and entry.value == "v1", entry
    assert entry.metadata == metadata, entry.metadata
    assert_plain(entry.metadata, "KVEntry.metadata")

    page = await kv.list(prefix="rt:meta")
    [key] = page.keys
    assert key.metadata == metadata, key.metadata
    assert_plain(key.metadata, "KVKey.metadata")
    assert isinstance(key.expiration, int), repr(key.expiration)
    assert before + 120 <= key.expiration <= int(time.time()) + 121, key.expiration

    await kv.put("rt:ttl-only", "v2", ttl_seconds=60)
    assert ctx.calls("KV", "put")[-1] == ["rt:ttl-only", "v2", {"expirationTtl": 60}]


@check()
async def check_kv_list_pages_with_the_cursor_until_complete(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    expected = [f"page:{i:02}" for i in range(7)]
    for i, name in enumerate(expected):
        await kv.put(name, str(i), metadata={"i": i} if i % 2 == 0 else None)
    await kv.put("pagf:outside", "x")
    await kv.put("other:1", "x")

    names: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await kv.list(prefix="page:", limit=3, cursor=cursor)
        pages += 1
        for key in page.keys:
            assert_plain(key.metadata, f"{key.name}.metadata")
            assert key.expiration is None, key
            assert key.metadata == (
                {"i": int(key.name[-2:])} if int(key.name[-2:]) % 2 == 0 else None
            )
        names += [k.name for k in page.keys]
        if page.cursor is None:
            break
        assert isinstance(page.cursor, str) and page.cursor, repr(page.cursor)
        cursor = page.cursor
        assert pages < 10, "list never completed"
    assert names == expected, names
    assert pages == 3, pages

    seen = [args[0] for args in ctx.calls("KV", "list")[-3:]]
    assert [o["prefix"] for o in seen] == ["page:"] * 3, seen
    assert [o["limit"] for o in seen] == [3] * 3, seen
    assert ["cursor" in o for o in seen] == [False, True, True], seen


@check()
async def check_kv_delete(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    await kv.put("del:1", "x")
    await kv.delete("del:1")
    await kv.delete("del:never-there")
    assert (await kv.get("del:1")) is None
    assert (await kv.list(prefix="del:")).keys == []


@check()
async def check_kv_rejected_cursor_is_invalid_cursor(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    try:
        await kv.list(prefix="page:", cursor="not-a-cursor-kv-issued")
    except InvalidCursor as exc:
        assert "Invalid cursor" in str(exc), exc
    else:
        raise AssertionError("expected InvalidCursor")


@check()
async def check_kv_errors_become_dependency_unavailable(ctx: Ctx) -> None:
    kv = CloudflareKV(ctx.env.KV)
    ctx.fakes.KV.failNext("KV PUT failed: 429 Too Many Requests")
    exc = await raises_unavailable("Workers KV", kv.put("busy", "x"))
    assert "429 Too Many Requests" in str(exc) and exc.retry_after == 1, exc
    ctx.fakes.KV.failNext("KV GET failed: 503 Service Unavailable")
    exc = await raises_unavailable("Workers KV", kv.get("busy"))
    assert "503 Service Unavailable" in str(exc), exc


# --- Rate Limiting -------------------------------------------------------------------------


@check()
async def check_rate_limiter_counts_per_key_and_fails_open(ctx: Ctx) -> None:
    limiter = CloudflareRateLimiter(ctx.env.RATE_LIMITER)
    assert [(await limiter.hit("tenant_a")).allowed for _ in range(2)] == [True, True]
    assert await limiter.hit("tenant_a") == RateDecision(False, 60)
    assert (await limiter.hit("tenant_b")).allowed
    assert ctx.calls("RATE_LIMITER", "limit")[0] == [{"key": "tenant_a"}]
    ctx.fakes.RATE_LIMITER.failNext("rate limiter unavailable")
    assert (await limiter.hit("tenant_a")).allowed, "an outage lets requests through"


# --- Vectorize ------------------------------------------------------------------------------


async def seeded_index(ctx: Ctx) -> CloudflareVectorIndex:
    index = CloudflareVectorIndex(ctx.env.VECTORIZE, dimensions=DIMS)
    await index.upsert(
        "t1",
        [
            VectorRecord(
                "doc#0",
                (1, 0, 0, 0, 0, 0, 0, 0),  # a tuple of ints: the adapter must send a float list
                {"doc_id": "doc", "chunk": 0, "lang": "en", "weight": 0.25, "draft": False},
            ),
            VectorRecord(
                "doc#1",
                [0.9, 0.1, 0, 0, 0, 0, 0, 0],
                {"doc_id": "doc", "chunk": 1, "lang": "fr", "weight": 1.5, "draft": True},
            ),
        ],
    )
    await index.upsert("t2", [VectorRecord("doc#0", basis(0), {"doc_id": "other", "chunk": 0})])
    return index


@check()
async def check_vectors_namespaces_ids_and_metadata(ctx: Ctx) -> None:
    index = await seeded_index(ctx)
    upserts = ctx.calls("VECTORIZE", "upsert")[-2:]
    assert upserts[0][0] == [
        {"id": vectorize_id("t1", "doc#0"), "namespace": "t1"},
        {"id": vectorize_id("t1", "doc#1"), "namespace": "t1"},
    ], upserts
    assert upserts[1][0] == [{"id": vectorize_id("t2", "doc#0"), "namespace": "t2"}], upserts

    matches = await index.query("t1", basis(0), top_k=5)
    assert [m.id for m in matches] == ["doc#0", "doc#1"], matches
    assert all(type(m.score) is float for m in matches), matches
    assert abs(matches[0].score - 1.0) < 1e-9 and matches[0].score > matches[1].score, matches
    assert matches[0].metadata == {
        "doc_id": "doc",
        "chunk": 0,
        "lang": "en",
        "weight": 0.25,
        "draft": False,
    }, matches[0].metadata
    for m in matches:
        assert_plain(m.metadata, f"{m.id}.metadata")

    [other] = await index.query("t2", basis(0), top_k=5)
    assert (other.id, other.metadata) == ("doc#0", {"doc_id": "other", "chunk": 0}), other

    options = ctx.calls("VECTORIZE", "query")[-2][1]
    assert options == {
        "topK": 5,
        "namespace": "t1",
        "returnMetadata": "all",
        "returnValues": False,
    }, options


@check()
async def check_vectors_filter(ctx: Ctx) -> None:
    index = await seeded_index(ctx)
    french = await index.query("t1", basis(0), top_k=3, filter={"lang": "fr"})
    assert [m.id for m in french] == ["doc#1"], french
    assert ctx.calls("VECTORIZE", "query")[-1][1]["filter"] == {"lang": "fr"}
    published = await index.query("t1", basis(0), top_k=3, filter={"draft": False, "chunk": 0})
    assert [m.id for m in published] == ["doc#0"], published
    assert await index.query("t2", basis(0), top_k=3, filter={"lang": "fr"}) == []


@check()
async def check_vectors_delete(ctx: Ctx) -> None:
    index = await seeded_index(ctx)
    await index.delete("t1", ["doc#0"])
    assert ctx.calls("VECTORIZE", "deleteByIds")[-1] == [[vectorize_id("t1", "doc#0")]]
    assert [m.id for m in await index.query("t1", basis(0), top_k=5)] == ["doc#1"]
    assert [m.id for m in await index.query("t2", basis(0), top_k=5)] == ["doc#0"]
    sent = len(ctx.calls("VECTORIZE", "deleteByIds"))
    await index.delete("t1", [])  # nothing to send
    assert len(ctx.calls("VECTORIZE", "deleteByIds")) == sent


@check()
async def check_vectors_upsert_batches_of_1000(ctx: Ctx) -> None:
    index = CloudflareVectorIndex(ctx.env.VECTORIZE, dimensions=DIMS)
    before = len(ctx.calls("VECTORIZE", "upsert"))
    records = [VectorRecord(f"r{i}", basis(i % DIMS, 1 + i / 1000), {"i": i}) for i in range(1001)]
    await index.upsert("bulk", records)
    sizes = [len(args[0]) for args in ctx.calls("VECTORIZE", "upsert")[before:]]
    assert sizes == [1000, 1], sizes
    top = await index.query("bulk", basis(3), top_k=20)
    assert len(top) == 20 and all(m.metadata["i"] % DIMS == 3 for m in top), top


@check()
async def check_vectors_errors_become_dependency_unavailable(ctx: Ctx) -> None:
    index = CloudflareVectorIndex(ctx.env.VECTORIZE, dimensions=DIMS)
    exc = await raises_unavailable("Vectorize", index.query("t1", [1.0, 0.0, 0.0], top_k=1))
    assert "VECTOR_DIMENSION_MISMATCH" in str(exc), exc


# --- Workers AI -----------------------------------------------------------------------------


@check()
async def check_embed_shape_and_values(ctx: Ctx) -> None:
    embedder = WorkersAIEmbedder(ctx.env.AI, model="@cf/baai/bge-small-en-v1.5", dimensions=1)
    assert embedder.dimensions == 384
    texts = ["a", "héllo ✓"]
    vectors = await embedder.embed(texts)
    assert ctx.calls("AI", "run")[-1] == ["@cf/baai/bge-small-en-v1.5", {"text": texts}]
    assert [len(v) for v in vectors] == [384, 384], [len(v) for v in vectors]
    assert all(type(x) is float for v in vectors for x in v)
    assert_plain(vectors, "vectors")
    assert vectors[0] != vectors[1]
    assert (await embedder.embed(["a"])) == [vectors[0]]


@check()
async def check_embed_dimension_mismatch(ctx: Ctx) -> None:
    embedder = WorkersAIEmbedder(ctx.env.AI, model="@test/embed-8", dimensions=16)
    exc = await raises_unavailable("Workers AI", embedder.embed(["a"]))
    assert "not 16-d" in str(exc), exc


@check()
async def check_ai_errors_become_dependency_unavailable(ctx: Ctx) -> None:
    broken = str(ctx.helpers.brokenModel)
    embedder = WorkersAIEmbedder(ctx.env.AI, model=broken, dimensions=8)
    exc = await raises_unavailable("Workers AI", embedder.embed(["a"]))
    assert "InferenceUpstreamError" in str(exc), exc
    generator = WorkersAIGenerator(ctx.env.AI, model=broken)
    hi = [ChatMessage("user", "hi")]
    exc = await raises_unavailable("Workers AI", generator.generate(hi, max_tokens=8))
    assert "InferenceUpstreamError" in str(exc), exc
    exc = await raises_unavailable("Workers AI", anext(generator.stream(hi, max_tokens=8)))
    assert "InferenceUpstreamError" in str(exc), exc


def conversation(question: str) -> list[ChatMessage]:
    return [ChatMessage("system", "Answer briefly."), ChatMessage("user", question)]


def sent_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]


@check()
async def check_generate(ctx: Ctx) -> None:
    generator = WorkersAIGenerator(ctx.env.AI, model=LLM)
    text = await generator.generate(conversation("Où est Paris ?"), max_tokens=64)
    assert text == ctx.helpers.replyTo("Où est Paris ?"), repr(text)
    assert ctx.calls("AI", "run")[-1] == [
        LLM,
        {"messages": sent_messages("Où est Paris ?"), "max_tokens": 64, "stream": False},
    ]


@check()
async def check_stream_reassembles_sse_split_at_any_byte(ctx: Ctx) -> None:
    generator = WorkersAIGenerator(ctx.env.AI, model=LLM)
    question = "Stream me — ünïcode 🎉 please"
    pieces = [p async for p in generator.stream(conversation(question), max_tokens=32)]
    assert all(type(p) is str and p for p in pieces), pieces
    assert len(pieces) > 5, pieces
    assert "".join(pieces) == ctx.helpers.replyTo(question), pieces
    assert ctx.calls("AI", "run")[-1] == [
        LLM,
        {"messages": sent_messages(question), "max_tokens": 32, "stream": True},
    ]


# --- wiring ---------------------------------------------------------------------------------


@check()
async def check_build_cloudflare_ports_end_to_end(ctx: Ctx) -> None:
    settings = Settings.from_env(env_mapping(ctx.env))
    ports = build_cloudflare_ports(ctx.env, settings)
    assert isinstance(ports.generator, WorkersAIGenerator)
    assert ports.embedder.dimensions == ports.vectors.dimensions == DIMS
    texts = ["the Seine flows through Paris", "bread and cheese"]
    vectors = await ports.embedder.embed(texts)
    await ports.vectors.upsert(
        "tenant_a",
        [
            VectorRecord(f"d{i}#0", v, {"text": t})
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ],
    )
    [query] = await ports.embedder.embed(["the Seine flows through Paris"])
    best = (await ports.vectors.query("tenant_a", query, top_k=2))[0]
    assert (best.id, best.metadata) == ("d0#0", {"text": texts[0]}), best
    await ports.kv.put("answers:1", json.dumps({"answer": best.id}), ttl_seconds=3600)
    assert json.loads(await ports.kv.get("answers:1") or "null") == {"answer": "d0#0"}
    assert ports.rate_limiter is not None and (await ports.rate_limiter.hit("t")).allowed


# --- runner ---------------------------------------------------------------------------------


async def run(mode: str, js_env: Any, helpers: Any) -> str:
    ctx = Ctx(mode, adapter_env(mode, js_env), js_env, helpers)
    results: list[dict[str, Any]] = []
    for fn, modes in CHECKS:
        if mode not in modes:
            continue
        name = fn.__name__.removeprefix("check_")
        try:
            await fn(ctx)
        except Exception as exc:
            error = "".join(traceback.format_exception(exc, limit=-3))
            results.append({"name": name, "ok": False, "error": error})
        else:
            results.append({"name": name, "ok": True})
    return json.dumps({"results": results})


# --- the whole app, as workerd runs it ---------------------------------------------------------


class _WorkerClient:
    """Requests to edge/entry.py's WorkerEntrypoint as workerd makes them: a JS Request,
    wrapped in the SDK's Request, handed to `fetch`, answered with a JS Response."""

    def __init__(self, js_env: Any) -> None:
        import edge.entry as entry

        entry._app = None  # a fresh app for these bindings
        self._worker = entry.Default(object(), js_env)

    async def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, str]:  # fmt: skip
        import js
        from pyodide.ffi import to_js
        from workers import Request

        sent = {"content-type": "application/json", **(headers or {})}
        if key:
            sent["authorization"] = f"Bearer {key}"
        init: dict[str, Any] = {"method": method, "headers": sent}
        if body is not None:
            init["body"] = body if isinstance(body, str) else json.dumps(body)
        request = js.Request.new(
            f"https://edge.test{path}", to_js(init, dict_converter=js.Object.fromEntries)
        )
        response = await self._worker.fetch(Request(request))
        kind = response.headers.get("content-type") or ""
        return response.status, kind, await response.text()

    async def handle(self, handler: str, *js_args: Any) -> Any:
        """Call another handler (`queue`, `scheduled`) as workerd does: each JS argument
        through the SDK's `python_from_rpc`, the method called with them (workerd
        src/pyodide/internal/introspection.py, `wrapper_func`)."""
        from workers import python_from_rpc

        result = getattr(self._worker, handler)(*[python_from_rpc(a) for a in js_args])
        return await result if inspect.isawaitable(result) else result

    async def signed(self, path: str, message_id: str, secret: str, body: Any) -> tuple[int, str]:
        """A call from the executor, signed with its secret (Standard Webhooks)."""
        import time

        from shared.signing import signed_headers

        raw = json.dumps(body)
        headers = signed_headers(secret, message_id, int(time.time()), raw.encode())
        status, _, text = await self.call("POST", path, raw, headers=headers)
        return status, text


@check("sdk")
async def check_the_app_answers_through_the_worker_entrypoint(ctx: Ctx) -> None:
    """edge/entry.py's WorkerEntrypoint, the SDK's ASGI bridge, FastAPI and pydantic from
    worker.lock, the bindings' fakes: health, auth, bad input, ingest, search, an answer
    as JSON and as server-sent events, then jobs with Prefect reached through fetch()."""
    import anyio.to_thread

    # FastAPI runs the routes' sync dependencies through anyio.to_thread, which needs a
    # thread the runtime does not have: the SDK's patch (through the stand-ins) runs them
    # inline. Without it the requests below fail with "can't start new thread".
    assert anyio.to_thread.run_sync.__module__ == "_workers_sdk_package_patches", (
        anyio.to_thread.run_sync.__module__
    )
    client = _WorkerClient(ctx.helpers.appEnv())
    key = "key-a-0123456789"
    status, _, text = await client.call("GET", "/healthz")
    assert status == 200, (status, text)
    status, kind, text = await client.call("GET", "/v1/crews")
    assert (status, kind) == (401, "application/problem+json"), (status, kind, text)
    status, kind, text = await client.call("POST", "/v1/search", {"query": 5}, key=key)
    assert (status, kind) == (422, "application/problem+json"), (status, kind, text)
    doc = {"documents": [{"id": "atlas", "text": "Heron-7 is the staging database in Oslo."}]}
    status, _, text = await client.call("POST", "/v1/documents", doc, key=key)
    assert status in (200, 201), (status, text)
    query = {"query": "staging database"}
    status, _, text = await client.call("POST", "/v1/search", query, key=key)
    assert status == 200, (status, text)
    assert json.loads(text)["matches"][0]["chunk_id"] == "atlas#0", text
    question = {"question": "What is the staging database?"}
    status, _, text = await client.call("POST", "/v1/answers", question, key=key)
    assert status == 200, (status, text)
    answer = json.loads(text)
    assert answer["answer"].startswith("Echo:"), answer
    assert [c["chunk_id"] for c in answer["citations"]] == ["atlas#0"], answer
    streamed = {**question, "stream": True}
    status, kind, text = await client.call("POST", "/v1/answers", streamed, key=key)
    assert status == 200 and kind.startswith("text/event-stream"), (status, kind, text)
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert "token" in events and events[-1] == "done", events
    await _a_jobs_life(client, key, ctx.helpers)


async def publish_summarize_crew(client: _WorkerClient, secret: str) -> None:
    """The executor publishes its catalog: one crew, `summarize` (pool cpu, input `text`)."""
    from shared.crews import CrewSpec

    schema = {"type": "object", "properties": {"text": {"type": "string", "minLength": 1}},
              "required": ["text"], "additionalProperties": False}  # fmt: skip
    crew = CrewSpec("summarize", "Summarize.", "cpu", schema, tasks=("summarize_task",),
                    version="1.0.0+abc")  # fmt: skip
    published = {"worker": "w1", "pool": "cpu", "crews": [crew.public()]}
    status, text = await client.signed("/v1/internal/crews", "pub-1", secret, published)
    assert status == 200, (status, text)


async def _its_event_stream(client: _WorkerClient, key: str, job_id: str) -> None:
    """GET /v1/jobs/{id}/events of the ended job through the Worker: the stream (SSE
    through the SDK's ASGI bridge) ends after the terminal event, the JSON page says the
    same, and a reader that has the terminal event gets 204."""
    path = f"/v1/jobs/{job_id}/events"
    sse = {"accept": "text/event-stream"}
    status, kind, text = await client.call("GET", path, key=key, headers=sse)
    assert status == 200 and kind.startswith("text/event-stream"), (status, kind, text)
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert names == ["job.queued", "job.succeeded"], names
    status, _, text = await client.call(
        "GET", path, key=key, headers={"accept": "application/json"}
    )
    page = json.loads(text)
    assert status == 200 and [e["type"] for e in page["events"]] == names, text
    last = str(page["events"][-1]["id"])
    status, _, text = await client.call(
        "GET", path, key=key, headers={**sse, "last-event-id": last}
    )
    assert status == 204 and text == "", (status, text)


async def _a_jobs_life(client: _WorkerClient, key: str, helpers: Any) -> None:
    secret = helpers.executorSecret
    await publish_summarize_crew(client, secret)
    job = {"crew": "summarize", "inputs": {}}
    status, _, text = await client.call("POST", "/v1/jobs", job, key=key)
    assert status == 422 and "text" in text, (status, text)
    job = {"crew": "summarize", "inputs": {"text": "Long."}}
    status, _, text = await client.call("POST", "/v1/jobs", job, key=key)
    assert status == 202, (status, text)
    job_id = json.loads(text)["id"]
    sent = [c["args"] for c in json.loads(helpers.network.callsJson())]
    assert ["POST", "/api/deployments/dep-cpu/create_flow_run"] in sent, sent
    event = {"tenant": "tenant_a", "type": "succeeded", "result": {"output": "Short."}}
    path = f"/v1/internal/jobs/{job_id}/events"
    status, text = await client.signed(path, f"{job_id}:succeeded", secret, event)
    assert status == 200, (status, text)
    status, _, text = await client.call("GET", f"/v1/jobs/{job_id}", key=key)
    assert status == 200, (status, text)
    assert json.loads(text)["status"] == "succeeded", text
    assert json.loads(text)["crew_version"] == "1.0.0+abc", text
    await _its_event_stream(client, key, job_id)
    status, _, text = await client.call("GET", "/v1/jobs", key=key)
    assert [j["id"] for j in json.loads(text)["jobs"]] == [job_id], text
    job = {"crew": "summarize", "inputs": {"text": "Cancel me."}}
    status, _, text = await client.call("POST", "/v1/jobs", job, key=key)
    assert status == 202, (status, text)
    other = json.loads(text)["id"]
    status, _, text = await client.call("POST", f"/v1/jobs/{other}/cancel", key=key)
    assert status == 202, (status, text)
    assert json.loads(text)["status"] == "cancelled", text  # never started: Prefect confirms
    sent = [c["args"] for c in json.loads(helpers.network.callsJson())]
    assert ["POST", "/api/flow_runs/run-2/set_state"] in sent, sent


# --- the job ledger: edge/entry.py's Durable Object class -------------------------------------


@check()
async def check_the_job_ledger_contract_on_its_durable_object(ctx: Ctx) -> None:
    """tests/ledger_contract.py (what SQLite passes under CPython) against the real
    JobLedger class, one fresh namespace per scenario; the client reaches it through the
    namespace binding as this mode hands it over."""
    from edge.adapters.cloudflare import DurableObjectJobLedger
    from tests.ledger_contract import SCENARIOS

    for scenario in SCENARIOS:
        js_env = ctx.helpers.jobsEnv()
        ledger = DurableObjectJobLedger(adapter_env(ctx.mode, js_env).JOBS)
        try:
            await scenario(ledger)
        except Exception as exc:
            raise AssertionError(f"scenario {scenario.__name__} failed: {exc!r}") from exc
        assert json.loads(js_env.JOBS.namesJson()), "the scenario reached no object"


@check("sdk")
async def check_the_job_ledger_object_expires_its_job_by_alarm(ctx: Ctx) -> None:
    """An alarm at the job's expiry deletes its record; one that finds the expiry moved
    on (a later change) sets the alarm again instead. The object stays usable."""
    from edge.adapters.cloudflare import DurableObjectJobLedger

    js_env = ctx.helpers.jobsEnv()
    ledger = DurableObjectJobLedger(adapter_env("sdk", js_env).JOBS)
    now = time.time()
    soon = now + 0.05
    kept = {"id": "job_kept", "tenant": "t", "status": "submitting", "expires_at": soon}
    await ledger.create(kept, now=now)
    kept_object = js_env.JOBS.object("t/job_kept")
    assert kept_object.state.storage.alarm == int(soon * 1000), kept_object.state.storage.alarm
    moved = {"at": "t1", "expires_at": now + 3600, "event": {"type": "queued"}}
    assert (await ledger.change("t", "job_kept", moved, now=now))[1] is not None
    gone = {"id": "job_gone", "tenant": "t", "status": "submitting", "expires_at": soon}
    await ledger.create(gone, now=now)
    gone_object = js_env.JOBS.object("t/job_gone")
    await asyncio.sleep(0.1)  # both alarms are due now

    await kept_object.instance.alarm()
    await gone_object.instance.alarm()

    assert kept_object.state.storage.alarm == int((now + 3600) * 1000), "armed again"
    assert (await ledger.read("t", "job_kept", now=time.time())) is not None
    tables = "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'"
    assert gone_object.state.storage.sql.exec(tables).toArray().to_py()[0]["n"] == 0, (
        "the expired job's storage is all deleted"
    )
    assert gone_object.state.storage.alarm in (None, jsnull), "its alarm goes with it"
    assert await ledger.read("t", "job_gone", now=time.time()) is None
    assert gone_object.state.storage.sql.exec(tables).toArray().to_py()[0]["n"] == 0, (
        "a read leaves no storage behind"
    )
    again = {**gone, "expires_at": time.time() + 60}
    assert (await ledger.create(again, now=time.time()))[1], "a reused key starts afresh"
