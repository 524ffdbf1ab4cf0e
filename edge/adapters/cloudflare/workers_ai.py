"""Embedder and TextGenerator over the Workers AI binding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from edge.adapters.cloudflare._js import JsException, to_js, to_py
from edge.adapters.sse_lines import sse_data
from edge.ports import ChatMessage, DependencyUnavailable

#: Output sizes of Workers AI embedding models, to catch a mismatched index at startup.
WORKERS_AI_EMBEDDING_DIMENSIONS = {
    "@cf/baai/bge-small-en-v1.5": 384,
    "@cf/baai/bge-base-en-v1.5": 768,
    "@cf/baai/bge-large-en-v1.5": 1024,
    "@cf/baai/bge-m3": 1024,
}


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

    async def check(self) -> bool:
        """Not probed, as the generator is not: an embedding per probe would be billed."""
        return False

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

    async def check(self) -> bool:
        """Nothing free to ask: the AI binding has no health call, and a generation per
        probe would be billed. Failures show up as 503s on the answers route instead."""
        return False

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


async def _read_stream(stream: Any) -> AsyncIterator[bytes]:
    """Bytes from a JS ReadableStream (the AI binding passes it through unwrapped)."""
    reader = stream.getReader()
    while True:
        chunk = await reader.read()
        if chunk.done:
            return
        yield bytes(chunk.value.to_bytes())
