"""Readiness: can this edge serve right now? Each dependency asked once, concurrently.

`GET /healthz` says the process is up; `GET /readyz` (what load balancers and Kubernetes
probe) says whether its dependencies answer. Every probe is cheap and bounded by a short
timeout, so a slow dependency reads as down instead of hanging the probe, and a busy
model server still reads as up (no generation is asked for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from edge.ports import DependencyUnavailable, Ports

PROBE_TIMEOUT_SECONDS = 2.0
PROBE_KEY = "readyz:probe"
OK = "ok"


async def probe(ports: Ports, *, within: float = PROBE_TIMEOUT_SECONDS) -> dict[str, str]:
    """`ok`, or why not, for each dependency this edge is wired with."""
    unit = [1.0] + [0.0] * (ports.vectors.dimensions - 1)  # any non-zero vector will do
    # Callables, not coroutines: each is started inside its own guard in `_outcome`.
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "kv": lambda: ports.kv.get(PROBE_KEY),
        "vectors": lambda: ports.vectors.query(PROBE_KEY, unit, top_k=1),
        "embedder": lambda: ports.embedder.embed(["readiness probe"]),
        "generator": ports.generator.check,
    }
    if (orchestrator := ports.orchestrator) is not None:
        checks["orchestrator"] = orchestrator.check
    outcomes = await asyncio.gather(*(_outcome(check, within) for check in checks.values()))
    return dict(zip(checks, outcomes, strict=True))


async def _outcome(check: Callable[[], Awaitable[Any]], within: float) -> str:
    try:
        await asyncio.wait_for(check(), within)
    except TimeoutError:
        return f"no answer within {within:g} s"
    except DependencyUnavailable as exc:
        return str(exc)
    except Exception as exc:  # a probe must answer, whatever a dependency does
        return f"failed ({type(exc).__name__})"  # the class only: messages may hold URLs
    return OK
