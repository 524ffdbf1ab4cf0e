"""Per-tenant rate limits: the ASGI guard that answers 429, and the in-memory limiter.

The guard runs after authentication (it needs the tenant) and before the body is read,
so a tenant over its limit costs the edge almost nothing. On Cloudflare the limiter is
the Workers Rate Limiting binding (`edge/adapters/cloudflare/rate_limit.py`); locally it
is `GcraLimiter` below.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.ports import RateDecision, RateLimiter
from edge.problems import problem_response


class RateLimitGuard:
    """429 + Retry-After for a tenant over its limit; requests without a tenant pass."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = scope.get("state", {}).get("tenant") if scope["type"] == "http" else None
        if tenant is not None:
            decision = await self.limiter.hit(str(tenant))
            if not decision.allowed:
                retry_after = str(max(1, decision.retry_after))
                response = problem_response(
                    429,
                    f"Too many requests for this API key; retry in {retry_after} s",
                    headers={"Retry-After": retry_after},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class GcraLimiter:
    """`limit` requests per `period` seconds per key, bursts up to `limit` allowed.

    GCRA (the generic cell rate algorithm): one float per key, the time at which its
    bucket is empty again, and an exact Retry-After. Hand-written rather than the
    `limits` package: its in-memory storage expires keys from background asyncio tasks
    and reads the wall clock itself, where this needs a clock tests can drive and no
    task outliving a request.
    """

    def __init__(
        self, limit: int, period: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._interval = period / limit
        self._period = period
        self._clock = clock
        self._empty_at: dict[str, float] = {}
        self._next_prune = 0.0

    async def hit(self, key: str) -> RateDecision:
        now = self._clock()
        empty_at = max(self._empty_at.get(key, now), now) + self._interval
        # The tolerance absorbs float rounding: `limit` additions of period/limit can
        # land a hair above `period` and refuse the last request of a full burst.
        if empty_at - now > self._period + 1e-6:
            return RateDecision(False, math.ceil(empty_at - now - self._period))
        self._empty_at[key] = empty_at
        if now >= self._next_prune:  # forget drained buckets, once a period at most
            self._empty_at = {k: t for k, t in self._empty_at.items() if t > now}
            self._next_prune = now + self._period
        return RateDecision(True)
