"""Cloudflare adapters: the ports over the KV, Vectorize and Workers AI bindings.

Only `_js` (and `edge/entry.py`) import `js`/`pyodide`; the adapters here see plain Python.
"""

from __future__ import annotations

from typing import Any

from edge.adapters.cloudflare._js import JsException, has_fetch, to_js, to_py
from edge.adapters.cloudflare.fetch_transport import FetchTransport
from edge.adapters.cloudflare.job_ledger import DurableObjectJobLedger
from edge.adapters.cloudflare.kv import CloudflareKV
from edge.adapters.cloudflare.queues import CloudflareQueue
from edge.adapters.cloudflare.rate_limit import CloudflareRateLimiter
from edge.adapters.cloudflare.vectorize import CloudflareVectorIndex, vectorize_id
from edge.adapters.cloudflare.workers_ai import (
    WORKERS_AI_EMBEDDING_DIMENSIONS,
    WorkersAIEmbedder,
    WorkersAIGenerator,
)
from edge.adapters.openai_compatible import OpenAICompatibleGenerator
from edge.adapters.prefect import PrefectOrchestrator
from edge.adapters.prefect_schedules import PrefectCrewScheduler
from edge.ports import Ports, TextGenerator
from edge.settings import ENV_KEYS, Settings

__all__ = [
    "WORKERS_AI_EMBEDDING_DIMENSIONS",
    "CloudflareKV",
    "CloudflareQueue",
    "CloudflareRateLimiter",
    "CloudflareVectorIndex",
    "DurableObjectJobLedger",
    "JsException",
    "OpenAICompatibleGenerator",
    "WorkersAIEmbedder",
    "WorkersAIGenerator",
    "build_cloudflare_ports",
    "env_mapping",
    "to_js",
    "to_py",
    "vectorize_id",
]


def env_mapping(env: Any) -> dict[str, str]:
    """The settings' keys read off the Worker env (vars and secrets), as strings."""
    found: dict[str, str] = {}
    for key in ENV_KEYS:
        value = to_py(getattr(env, key, None))
        if value is not None:
            found[key] = str(value)
    return found


def build_cloudflare_ports(env: Any, settings: Settings) -> Ports:
    """Ports over the Worker's bindings; an OpenAI-compatible LLM if one is configured."""
    generator: TextGenerator
    # A Worker has no sockets: HTTP goes through fetch(). Under CPython (the tests' doubles)
    # httpx keeps its own transport.
    transport = FetchTransport() if has_fetch() else None
    if settings.llm_base_url:
        generator = OpenAICompatibleGenerator(
            settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key,
            transport=transport,
        )  # fmt: skip
    else:
        generator = WorkersAIGenerator(env.AI, model=settings.llm_model)
    orchestrator = (
        PrefectOrchestrator(
            settings.prefect_api_url, api_key=settings.prefect_api_key, transport=transport
        )
        if settings.prefect_api_url
        else None
    )
    webhooks = getattr(env, "WEBHOOKS", None)
    limiter = getattr(env, "RATE_LIMITER", None)
    jobs = getattr(env, "JOBS", None)
    return Ports(
        orchestrator=orchestrator,
        scheduler=None if orchestrator is None else PrefectCrewScheduler(orchestrator),
        ledger=None if jobs is None else DurableObjectJobLedger(jobs),
        deliveries=None if webhooks is None else CloudflareQueue(webhooks),
        rate_limiter=None if limiter is None else CloudflareRateLimiter(limiter),
        kv=CloudflareKV(env.KV),
        vectors=CloudflareVectorIndex(env.VECTORIZE, dimensions=settings.embed_dimensions),
        embedder=WorkersAIEmbedder(
            env.AI, model=settings.embed_model, dimensions=settings.embed_dimensions
        ),
        generator=generator,
        http_transport=transport,
    )
