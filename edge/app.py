"""The app factory: one FastAPI app from settings and ports, with no work at import time."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from edge.auth import ApiKeys
from edge.guards import ApiKeyAuth, BodySizeLimit, ExecutorSignatureAuth
from edge.ingestions import Ingestions
from edge.jobs.redelivery import Redeliveries
from edge.jobs.service import JobService
from edge.ports import Ports
from edge.problems import document_problems, install_problem_handlers, problem_responses
from edge.rag.knowledge import KnowledgeBase
from edge.rate_limits import RateLimitGuard
from edge.routes import (
    answers,
    callbacks,
    deliveries,
    documents,
    health,
    ingestions,
    job_events,
    jobs,
    schedules,
    search,
    webhooks,
)
from edge.schedules.service import ScheduleService
from edge.settings import Settings, SettingsError
from shared.limits import DEFAULT_LIMITS

API_DESCRIPTION = """\
edgecrew puts an HTTPS front door on AI agents: grounded answers from a per-tenant
knowledge base at the edge. Errors are `application/problem+json` (RFC 9457).
"""


def create_app(
    settings: Settings, ports: Ports, *, lifespan: Lifespan[FastAPI] | None = None
) -> FastAPI:
    """Build the edge app; raises SettingsError when the adapters do not fit together.

    `lifespan` is for local mode's background loops; the Worker passes none (it runs
    per request there) and uses Queue and Cron handlers instead.
    """
    check_dimensions(settings, ports)
    app = FastAPI(title="edgecrew", version="1", description=API_DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.ports = ports
    app.state.knowledge = KnowledgeBase(ports, settings)
    app.state.jobs = JobService(ports, settings)
    app.state.ingestions = Ingestions(app.state.jobs, app.state.knowledge, ports, settings)
    app.state.schedules = ScheduleService(ports, app.state.jobs)
    app.state.redeliveries = Redeliveries(app.state.jobs, ports)
    # The guards in front of every route can refuse a malformed or oversized body anywhere.
    guarded = problem_responses(400, 413)
    routers = (health, documents, search, answers, jobs, job_events, deliveries, webhooks,
               ingestions, schedules, callbacks)  # fmt: skip
    for module in routers:
        app.include_router(module.router, responses=guarded)
    app.include_router(ingestions.internal, responses=guarded)
    app.include_router(schedules.internal, responses=guarded)
    install_problem_handlers(app)
    document_problems(app)
    # Added last so it runs first: authenticate (an API key, or the executor's signature),
    # count the request, then bound the body; routing and validation come after all that.
    max_bytes = DEFAULT_LIMITS.max_body_bytes
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    if ports.rate_limiter is not None:
        app.add_middleware(RateLimitGuard, limiter=ports.rate_limiter)
    app.add_middleware(ExecutorSignatureAuth, secret=settings.executor_secret, max_bytes=max_bytes)
    app.add_middleware(ApiKeyAuth, keys=ApiKeys(settings.api_keys))
    return app


def check_dimensions(settings: Settings, ports: Ports) -> None:
    """The embedder, the index and the settings must agree on vector size."""
    sizes = {
        "EDGECREW_EMBED_DIMENSIONS": settings.embed_dimensions,
        f"embedder {ports.embedder.model!r}": ports.embedder.dimensions,
        "vector index": ports.vectors.dimensions,
    }
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{name}={size}" for name, size in sizes.items())
        raise SettingsError(f"embedding dimensions disagree: {listed}")
