"""Wire the edge app with the local adapters (the one place that knows them all)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI

from edge.adapters.openai_compatible import OpenAICompatibleGenerator
from edge.adapters.prefect import PrefectOrchestrator
from edge.adapters.prefect_schedules import PrefectCrewScheduler
from edge.app import create_app
from edge.local.background import background_lifespan
from edge.local.minilm_embedder import DIMENSIONS, MODEL_NAME, MiniLMEmbedder
from edge.local.numpy_index import NumpyVectorIndex
from edge.local.sqlite_kv import SqliteKV
from edge.local.sqlite_ledger import SqliteJobLedger
from edge.local.sqlite_queue import SqliteQueue
from edge.ports import Embedder, Ports, TextGenerator
from edge.rate_limits import GcraLimiter
from edge.settings import Settings

#: Local mode's defaults; the environment (or .env) overrides any of them.
LOCAL_DEFAULTS = {
    "EDGECREW_EMBED_MODEL": MODEL_NAME,
    "EDGECREW_EMBED_DIMENSIONS": str(DIMENSIONS),
    "EDGECREW_LLM_BASE_URL": "http://127.0.0.1:8081/v1",
    "EDGECREW_LLM_MODEL": "smollm2",
    "EDGECREW_DATA_DIR": ".edgecrew",
}


def local_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment over local defaults."""
    return {**LOCAL_DEFAULTS, **{k: v for k, v in env.items() if v != ""}}


def build_local_ports(
    settings: Settings,
    data_dir: Path,
    *,
    embedder: Embedder | None = None,
    generator: TextGenerator | None = None,
) -> Ports:
    """SQLite KV and vector files under `data_dir`, MiniLM, an OpenAI-compatible LLM."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if settings.llm_base_url is None and generator is None:
        raise ValueError("EDGECREW_LLM_BASE_URL is required in local mode")
    orchestrator = (
        PrefectOrchestrator(settings.prefect_api_url, api_key=settings.prefect_api_key)
        if settings.prefect_api_url
        else None
    )
    limit = settings.rate_limit_per_minute
    return Ports(
        orchestrator=orchestrator,
        scheduler=None if orchestrator is None else PrefectCrewScheduler(orchestrator),
        ledger=SqliteJobLedger(data_dir / "jobs.sqlite3"),
        deliveries=SqliteQueue(data_dir / "queue.sqlite3"),
        rate_limiter=GcraLimiter(limit, 60.0) if limit else None,
        kv=SqliteKV(data_dir / "kv.sqlite3"),
        vectors=NumpyVectorIndex(
            data_dir / "vectors.sqlite3", dimensions=settings.embed_dimensions
        ),
        embedder=embedder or MiniLMEmbedder(),
        generator=generator
        or OpenAICompatibleGenerator(
            settings.llm_base_url or "", settings.llm_model, api_key=settings.llm_api_key
        ),
    )


def create_local_app() -> FastAPI:
    """uvicorn factory: `uvicorn edge.local.bootstrap:create_local_app --factory`."""
    # uvicorn configures only its own loggers: without this the edge's INFO lines (the
    # reconciler's, a crew's new version published) would never reach the edge's log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    env = local_env(os.environ)
    settings = Settings.from_env(env)
    ports = build_local_ports(settings, Path(env["EDGECREW_DATA_DIR"]))
    assert isinstance(ports.deliveries, SqliteQueue)
    every = float(env.get("EDGECREW_RECONCILE_SECONDS", "15"))
    return create_app(settings, ports, lifespan=background_lifespan(ports.deliveries, every))
