"""RateLimiter over the Workers Rate Limiting binding (`[[ratelimits]]` in wrangler.toml).

The binding answers only allowed or not, counted per Cloudflare location; Retry-After is
its period, the longest a client may have to wait.
"""

from __future__ import annotations

import logging

from edge.adapters.cloudflare._js import JsException, to_js, to_py
from edge.ports import RateDecision

log = logging.getLogger("edgecrew.ratelimit")

#: The `period` of the binding in wrangler.toml (Cloudflare allows 10 or 60).
PERIOD_SECONDS = 60


class CloudflareRateLimiter:
    def __init__(self, binding: object) -> None:
        self._binding = binding

    async def hit(self, key: str) -> RateDecision:
        try:
            outcome = to_py(await self._binding.limit(to_js({"key": key})))  # type: ignore[attr-defined]
        except JsException as exc:
            # Fail open: a limiter hiccup must not turn every request into an error.
            log.warning("rate limiter unavailable, request allowed: %s", exc)
            return RateDecision(True)
        allowed = bool(outcome.get("success")) if isinstance(outcome, dict) else True
        return RateDecision(allowed, 0 if allowed else PERIOD_SECONDS)
