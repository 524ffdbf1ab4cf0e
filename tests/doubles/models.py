"""Hand-written model fakes that record what they were given."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncIterator, Sequence

from edge.ports import ChatMessage, DependencyUnavailable

_WORD = re.compile(r"[a-z0-9]+")


def bag_of_words_vector(text: str, dimensions: int = 384) -> list[float]:
    """A deterministic embedding: hashed word counts, normalized. Shared words => closer."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        slot = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
        vector[slot % dimensions] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class RecordingEmbedder:
    """An Embedder that records every batch it was asked to embed."""

    def __init__(self, dimensions: int = 384, model: str = "fake-bow") -> None:
        self._dimensions = dimensions
        self._model = model
        self.batches: list[list[str]] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def check(self) -> bool:
        await self.embed(["readiness probe"])
        return True

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return [bag_of_words_vector(t, self._dimensions) for t in texts]


class RecordingGenerator:
    """A TextGenerator that records prompts and answers with a scripted reply in pieces."""

    def __init__(self, reply: str = "The answer is in the sources [1].") -> None:
        self.reply = reply
        self.calls: list[list[ChatMessage]] = []
        self.fail_with: Exception | None = None

    @property
    def model(self) -> str:
        return "fake-llm"

    async def check(self) -> bool:
        if self.fail_with:
            raise self.fail_with
        return True

    async def generate(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> str:
        self.calls.append(list(messages))
        if self.fail_with:
            raise self.fail_with
        return self.reply

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> AsyncIterator[str]:
        self.calls.append(list(messages))
        if self.fail_with:
            raise self.fail_with
        for word in self.reply.split(" "):
            yield word + " "


def unavailable() -> DependencyUnavailable:
    return DependencyUnavailable("text generator", "ConnectError", retry_after=7)
