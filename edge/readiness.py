"""Readiness: can this edge serve right now? Each dependency asked once, concurrently.

`GET /healthz` says the process is up; `GET /readyz` (what load balancers and Kubernetes
probe) says whether its dependencies answer. Every probe is cheap and bounded by a short
timeout, so a slow dependency reads as down instead of hanging the probe, and a busy
model server still reads as up (no generation is asked for). Models that would bill per
probe (Workers AI) are reported `not probed` rather than `ok`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from edge.ports import DependencyUnavailable, Ports

log = logging.getLogger("edgecrew.readiness")

PROBE_TIMEOUT_SECONDS = 2.0
PROBE_KEY = "readyz:probe"
OK = "ok"
NOT_PROBED = "not probed"
UP = frozenset({OK, NOT_PROBED})


async def probe(ports: Ports, *, within: float = PROBE_TIMEOUT_SECONDS) -> dict[str, str]:
    """`ok`, `not probed`, or why not, for each dependency this edge is wired with.

    The reasons are fixed phrases: an upstream's own error text (which may quote a URL
    or a key) goes to the log, never into the answer.
    """
    unit = [1.0] + [0.0] * (ports.vectors.dimensions - 1)  # any non-zero vector will do

    async def kv() -> bool:
        await ports.kv.get(PROBE_KEY)
        return True

    async def vectors() -> bool:
        await ports.vectors.query(PROBE_KEY, unit, top_k=1)
        return True

    # Callables, not coroutines: each is started inside its own guard in `_outcome`.
    checks: dict[str, Callable[[], Awaitable[bool]]] = {
        "kv": kv,
        "vectors": vectors,
        "embedder": ports.embedder.check,
        "generator": ports.generator.check,
    }
    if (orchestrator := ports.orchestrator) is not None:
        checks["orchestrator"] = orchestrator.check
    if (ledger := ports.ledger) is not None:

        async def job_ledger() -> bool:
            await ledger.read(PROBE_KEY, "probe", now=time.time())
            return True

        checks["ledger"] = job_ledger
    outcomes = await asyncio.gather(
        *(_outcome(name, check, within) for name, check in checks.items())
    )
    return dict(zip(checks, outcomes, strict=True))


async def _outcome(name: str, check: Callable[[], Awaitable[bool]], within: float) -> str:
    try:
        probed = await asyncio.wait_for(check(), within)
    except TimeoutError:
        return f"no answer within {within:g} s"
    except DependencyUnavailable as exc:
        log.warning("readiness: %s: %s", name, exc)
        return "unavailable"
    except Exception as exc:  # a probe must answer, whatever a dependency does
        log.warning("readiness: %s failed: %s", name, type(exc).__name__)
        return f"failed ({type(exc).__name__})"
    return OK if probed else NOT_PROBED
