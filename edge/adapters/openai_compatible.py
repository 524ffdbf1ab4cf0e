"""A TextGenerator for any OpenAI-compatible chat API (llama.cpp, vLLM, Workers AI's /v1).

Plain httpx, so it runs under CPython and in the Worker alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from edge.ports import ChatMessage, DependencyUnavailable


class OpenAICompatibleGenerator:
    """Chat completions over `{base_url}/chat/completions`, streamed or not."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float = 0.2,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._models_url = base_url.rstrip("/") + "/models"
        self._model = model
        self._temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            timeout=timeout, headers=headers, transport=transport
        )

    @property
    def model(self) -> str:
        return self._model

    async def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str:
        try:
            response = await self._client.post(self._url, json=self._body(messages, max_tokens))
        except httpx.HTTPError as exc:
            raise DependencyUnavailable("text generator", type(exc).__name__) from exc
        data = _checked(response).json()
        return str(data["choices"][0]["message"]["content"] or "")

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> AsyncIterator[str]:
        body = {**self._body(messages, max_tokens), "stream": True}
        try:
            async with self._client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _checked(response)
                async for line in response.aiter_lines():
                    piece = _delta(line)
                    if piece is None:
                        break
                    if piece:
                        yield piece
        except httpx.HTTPError as exc:
            raise DependencyUnavailable("text generator", type(exc).__name__) from exc

    async def check(self) -> bool:
        try:
            response = await self._client.get(self._models_url)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable("text generator", type(exc).__name__) from exc
        _checked(response)
        return True

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, messages: Sequence[ChatMessage], max_tokens: int) -> dict[str, Any]:
        return {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": self._temperature,
        }


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        # 4xx here means our request or configuration (model name, key, context size), not
        # the API client's input; either way the client can only retry later.
        raise DependencyUnavailable(
            "text generator", f"HTTP {response.status_code}: {response.text[:200]}"
        )
    return response


def _delta(line: str) -> str | None:
    """The text in one SSE line of a streamed completion; None at `[DONE]`."""
    if not line.startswith("data:"):
        return ""
    payload = line[5:].strip()
    if payload == "[DONE]":
        return None
    choices = json.loads(payload).get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")
