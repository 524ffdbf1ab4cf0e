"""Per-tenant rate limits: the GCRA limiter, the 429 guard in the app, the Cloudflare
binding adapter and its wrangler.toml declaration."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.cloudflare import CloudflareRateLimiter, JsException
from edge.adapters.cloudflare.rate_limit import PERIOD_SECONDS
from edge.app import create_app
from edge.ports import Ports, RateDecision
from edge.rate_limits import GcraLimiter
from edge.settings import Settings, SettingsError
from tests.conftest import AUTH_A, AUTH_B, Clock, asgi_client

ROOT = Path(__file__).resolve().parents[1]


async def test_gcra_allows_the_limit_as_a_burst_then_one_per_interval(clock: Clock) -> None:
    limiter = GcraLimiter(3, 60.0, clock=clock)
    assert [(await limiter.hit("a")).allowed for _ in range(3)] == [True, True, True]
    refused = await limiter.hit("a")
    assert refused == RateDecision(False, 20), "one request frees up every 60/3 s"
    assert (await limiter.hit("b")).allowed, "keys are counted apart"

    clock.advance(19)
    assert not (await limiter.hit("a")).allowed
    clock.advance(1)
    assert (await limiter.hit("a")).allowed
    assert not (await limiter.hit("a")).allowed, "one freed, one used"
    clock.advance(60)
    assert [(await limiter.hit("a")).allowed for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("start", [0.0, 123.456, 12345.678, 1_000_000.1])
@pytest.mark.parametrize("limit", [1, 3, 7, 10, 13, 600, 997])
async def test_a_full_burst_is_allowed_whatever_the_limit(start: float, limit: int) -> None:
    """Float rounding once refused the last request of some bursts (7/min at t=123.456)."""
    limiter = GcraLimiter(limit, 60.0, clock=Clock(start))
    allowed = [(await limiter.hit("a")).allowed for _ in range(limit + 1)]
    assert allowed == [True] * limit + [False]


async def test_refused_requests_are_not_counted(clock: Clock) -> None:
    limiter = GcraLimiter(1, 10.0, clock=clock)
    assert (await limiter.hit("a")).allowed
    for _ in range(50):  # a client hammering while refused does not push its wait out
        assert (await limiter.hit("a")).retry_after <= 10
    clock.advance(10)
    assert (await limiter.hit("a")).allowed


@pytest.fixture
def limited_app(settings: Settings, local_ports: Ports, clock: Clock) -> Any:
    ports = dataclasses.replace(local_ports, rate_limiter=GcraLimiter(2, 60.0, clock=clock))
    return create_app(settings, ports)


async def test_a_tenant_over_its_limit_gets_429_with_retry_after(limited_app: Any) -> None:
    async with asgi_client(limited_app) as client:
        for _ in range(2):
            assert (await client.get("/v1/crews", headers=AUTH_A)).status_code == 200
        refused = await client.get("/v1/crews", headers=AUTH_A)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["status"] == 429
        assert (await client.get("/v1/crews", headers=AUTH_B)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200, "health is never limited"
        bad_key = await client.get("/v1/crews", headers={"Authorization": "Bearer nope"})
        assert bad_key.status_code == 401, "authentication comes first"


async def test_a_refused_request_changes_nothing(limited_app: Any) -> None:
    document = {"documents": [{"id": "d1", "text": "Heron-7 lives in Oslo."}]}
    async with asgi_client(limited_app) as client:
        for _ in range(2):
            await client.get("/v1/crews", headers=AUTH_A)
        refused = await client.post("/v1/documents", json=document, headers=AUTH_A)
        assert refused.status_code == 429
    page = await limited_app.state.ports.kv.list(prefix="doc:")
    assert list(page.keys) == [], "the refused ingest stored nothing"


class FakeRateLimitBinding:
    """Shaped like the Workers Rate Limiting binding: `limit({key})` → `{success}`."""

    def __init__(self, allow: int, fail: bool = False) -> None:
        self.allow = allow
        self.fail = fail
        self.keys: list[str] = []

    async def limit(self, options: dict[str, str]) -> dict[str, bool]:
        if self.fail:
            raise JsException("rate limiter unavailable")
        self.keys.append(options["key"])
        return {"success": len(self.keys) <= self.allow}


async def test_the_cloudflare_adapter_asks_the_binding_per_tenant() -> None:
    binding = FakeRateLimitBinding(allow=1)
    limiter = CloudflareRateLimiter(binding)
    assert await limiter.hit("tenant_a") == RateDecision(True, 0)
    assert await limiter.hit("tenant_a") == RateDecision(False, PERIOD_SECONDS)
    assert binding.keys == ["tenant_a", "tenant_a"]


async def test_the_cloudflare_adapter_fails_open() -> None:
    limiter = CloudflareRateLimiter(FakeRateLimitBinding(allow=0, fail=True))
    assert (await limiter.hit("tenant_a")).allowed


def test_wrangler_declares_the_limiter_with_the_adapters_period() -> None:
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    (limiter,) = config["ratelimits"]
    assert limiter["name"] == "RATE_LIMITER"
    assert limiter["simple"]["period"] == PERIOD_SECONDS
    assert limiter["simple"]["period"] in (10, 60), "the only periods Cloudflare accepts"


def test_the_local_limit_is_a_setting() -> None:
    settings = Settings.from_env({"EDGECREW_RATE_LIMIT_PER_MINUTE": "0"})
    assert settings.rate_limit_per_minute == 0
    assert Settings.from_env({}).rate_limit_per_minute == 600
    with pytest.raises(SettingsError, match="EDGECREW_RATE_LIMIT_PER_MINUTE"):
        Settings.from_env({"EDGECREW_RATE_LIMIT_PER_MINUTE": "-1"})
