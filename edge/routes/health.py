from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge.problems import problem_response, problem_responses
from edge.readiness import UP, probe
from edge.schemas import Health, Readiness

router = APIRouter(tags=["health"])

#: What a client (or load balancer) should wait before asking again when not ready.
NOT_READY_RETRY_SECONDS = 5
#: Probes are unauthenticated: one answer serves every caller for this long, so no one
#: can turn /readyz into a stream of calls to Prefect or the models.
CACHE_SECONDS = 5.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the app is up (it does not call any dependency)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses(503),
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Readiness: every dependency answers a cheap probe within 2 s (no auth needed)."""
    checks = await _recent_probe(request)
    down = sorted(name for name, outcome in checks.items() if outcome not in UP)
    if not down:
        return Readiness(status="ready", checks=checks)
    return problem_response(
        503,
        f"not ready: {', '.join(down)} did not answer",
        headers={"Retry-After": str(NOT_READY_RETRY_SECONDS)},
        checks=checks,
    )


async def _recent_probe(request: Request) -> dict[str, str]:
    state = request.app.state
    cached: tuple[float, dict[str, str]] | None = getattr(state, "readiness", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    checks = await probe(state.ports)
    state.readiness = (time.monotonic(), checks)
    return checks
