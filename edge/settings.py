"""Settings read from one env mapping (Worker bindings' vars and secrets, or os.environ).

Errors name the key and what was wrong with its value, but never echo a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

_T = TypeVar("_T")
_TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,48}$")

#: What `edgecrew dev` uses when EDGECREW_API_KEYS is not set anywhere. Documented in the README.
DEV_API_KEYS = "dev:dev-key-change-me"


#: Every key `Settings.from_env` reads; the Worker copies exactly these off its env.
ENV_KEYS = (
    "EDGECREW_API_KEYS",
    "EDGECREW_EMBED_MODEL",
    "EDGECREW_EMBED_DIMENSIONS",
    "EDGECREW_EMBED_BATCH_SIZE",
    "EDGECREW_LLM_MODEL",
    "EDGECREW_LLM_BASE_URL",
    "EDGECREW_LLM_API_KEY",
    "EDGECREW_CHUNK_SIZE",
    "EDGECREW_CHUNK_OVERLAP",
    "EDGECREW_MIN_SCORE",
    "EDGECREW_ANSWER_CACHE_TTL",
    "EDGECREW_MAX_ANSWER_TOKENS",
    "EDGECREW_MAX_CONTEXT_CHARS",
    "EDGECREW_PREFECT_API_URL",
    "EDGECREW_PREFECT_API_KEY",
    "EDGECREW_EXECUTOR_SECRET",
    "EDGECREW_SECRET_KEY",
    "EDGECREW_ALLOW_LOOPBACK_WEBHOOKS",
    "EDGECREW_JOB_TTL_DAYS",
    "EDGECREW_STALE_AFTER_SECONDS",
    "EDGECREW_CLAIM_TIMEOUT_SECONDS",
    "EDGECREW_CANCEL_TIMEOUT_SECONDS",
    "EDGECREW_RATE_LIMIT_PER_MINUTE",
    "EDGECREW_JOB_EVENTS_POLL_SECONDS",
    "EDGECREW_JOB_EVENTS_HEARTBEAT_SECONDS",
    "EDGECREW_JOB_EVENTS_MAX_SECONDS",
    "EDGECREW_SCHEDULE_MIN_INTERVAL_SECONDS",
    "EDGECREW_MAX_SCHEDULES_PER_TENANT",
    "EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS",
)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the key."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the edge app needs to know, parsed and checked once at startup."""

    api_keys: Mapping[str, str]  # api key -> tenant
    embed_model: str = "@cf/baai/bge-small-en-v1.5"
    embed_dimensions: int = 384
    embed_batch_size: int = 64
    llm_model: str = "@cf/meta/llama-3.1-8b-instruct"
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    chunk_size: int = 800
    chunk_overlap: int = 120
    min_score: float = 0.0
    answer_cache_ttl: int = 3600
    max_answer_tokens: int = 256
    max_context_chars: int = 6000
    prefect_api_url: str | None = None
    prefect_api_key: str | None = field(default=None, repr=False)
    executor_secret: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    allow_loopback_webhooks: bool = False
    job_ttl_days: int = 30
    stale_after_seconds: int = 60
    # A run a worker claimed (Pending) but did not start within this long, or one that
    # has been Cancelling this long, lost its worker: the reconciler gives it back to
    # the pool (or ends it). The warm worker starts a run in ~0.3 s, Prefect's own ~4 s.
    claim_timeout_seconds: int = 60
    cancel_timeout_seconds: int = 120
    rate_limit_per_minute: int = 600  # per tenant, local mode; 0 = off (Cloudflare: wrangler.toml)
    # A job's event stream reads the ledger this often (sooner when this process made the
    # change), comments `: ping` after this long without an event, and ends after this
    # long with a `retry:` hint (docs/api.md, "Job events": why it is bounded).
    job_events_poll_seconds: float = 1.0
    job_events_heartbeat_seconds: float = 15.0
    job_events_max_seconds: int = 300
    # The shortest `interval_seconds` a schedule may have: each run is a flow run and a
    # job, and Prefect schedules up to 100 runs ahead (tests shorten it).
    schedule_min_interval_seconds: int = 60
    # The most live schedules a tenant may have (0 = no cap): each is a deployment in
    # Prefect, whose scheduler keeps up to 100 runs ahead for every one of them.
    max_schedules_per_tenant: int = 100
    # A schedule's run that started this long ago is looked at once by the reconciler,
    # and made a job if it ran, did not complete and never registered (its flow waits
    # 90 s for KV to show a new schedule before it gives up on registering).
    schedule_adopt_after_seconds: int = 180

    def __post_init__(self) -> None:
        if self.executor_secret and not self.executor_secret.startswith("whsec_"):
            raise SettingsError("EDGECREW_EXECUTOR_SECRET must be a whsec_ secret (value hidden)")
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise SettingsError("EDGECREW_SECRET_KEY must be at least 32 characters (value hidden)")
        if not 100 <= self.chunk_size <= 4000:
            raise SettingsError(f"EDGECREW_CHUNK_SIZE must be 100..4000, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size // 2:
            raise SettingsError(
                "EDGECREW_CHUNK_OVERLAP must be >= 0 and below half of EDGECREW_CHUNK_SIZE, "
                f"got {self.chunk_overlap} with size {self.chunk_size}"
            )
        if self.rate_limit_per_minute < 0:
            raise SettingsError(
                f"EDGECREW_RATE_LIMIT_PER_MINUTE must be >= 0, got {self.rate_limit_per_minute}"
            )
        for name, value in (
            ("EDGECREW_CLAIM_TIMEOUT_SECONDS", self.claim_timeout_seconds),
            ("EDGECREW_CANCEL_TIMEOUT_SECONDS", self.cancel_timeout_seconds),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be >= 1 second, got {value}")
        if not 0.05 <= self.job_events_poll_seconds <= 60:
            raise SettingsError(
                "EDGECREW_JOB_EVENTS_POLL_SECONDS must be 0.05..60, "
                f"got {self.job_events_poll_seconds}"
            )
        if not 0 < self.job_events_heartbeat_seconds <= 60:
            raise SettingsError(
                "EDGECREW_JOB_EVENTS_HEARTBEAT_SECONDS must be above 0 and at most 60, "
                f"got {self.job_events_heartbeat_seconds}"
            )
        if self.job_events_max_seconds < 1:
            raise SettingsError(
                f"EDGECREW_JOB_EVENTS_MAX_SECONDS must be >= 1, got {self.job_events_max_seconds}"
            )
        if self.schedule_min_interval_seconds < 1:
            raise SettingsError(
                "EDGECREW_SCHEDULE_MIN_INTERVAL_SECONDS must be >= 1, "
                f"got {self.schedule_min_interval_seconds}"
            )
        if self.schedule_adopt_after_seconds < 1:
            raise SettingsError(
                "EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS must be >= 1, "
                f"got {self.schedule_adopt_after_seconds}"
            )
        if self.max_schedules_per_tenant < 0:
            raise SettingsError(
                "EDGECREW_MAX_SCHEDULES_PER_TENANT must be >= 0 (0 = no cap), "
                f"got {self.max_schedules_per_tenant}"
            )
        if self.answer_cache_ttl and self.answer_cache_ttl < 60:
            # Workers KV refuses expirationTtl below 60 s; local mode keeps the same rule.
            raise SettingsError(
                f"EDGECREW_ANSWER_CACHE_TTL must be 0 (off) or >= 60, got {self.answer_cache_ttl}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse settings from a mapping of strings, using the class defaults for what is absent."""
        reader = _Reader(env)
        defaults = cls(api_keys={})
        return cls(
            api_keys=parse_api_keys(reader.text("EDGECREW_API_KEYS", "")),
            embed_model=reader.text("EDGECREW_EMBED_MODEL", defaults.embed_model),
            embed_dimensions=reader.integer("EDGECREW_EMBED_DIMENSIONS", defaults.embed_dimensions),
            embed_batch_size=reader.integer("EDGECREW_EMBED_BATCH_SIZE", defaults.embed_batch_size),
            llm_model=reader.text("EDGECREW_LLM_MODEL", defaults.llm_model),
            llm_base_url=reader.text("EDGECREW_LLM_BASE_URL", "") or None,
            llm_api_key=reader.text("EDGECREW_LLM_API_KEY", "") or None,
            chunk_size=reader.integer("EDGECREW_CHUNK_SIZE", defaults.chunk_size),
            chunk_overlap=reader.integer("EDGECREW_CHUNK_OVERLAP", defaults.chunk_overlap),
            min_score=reader.number("EDGECREW_MIN_SCORE", defaults.min_score),
            answer_cache_ttl=reader.integer("EDGECREW_ANSWER_CACHE_TTL", defaults.answer_cache_ttl),
            max_answer_tokens=reader.integer(
                "EDGECREW_MAX_ANSWER_TOKENS", defaults.max_answer_tokens
            ),
            max_context_chars=reader.integer(
                "EDGECREW_MAX_CONTEXT_CHARS", defaults.max_context_chars
            ),
            prefect_api_url=reader.text("EDGECREW_PREFECT_API_URL", "") or None,
            prefect_api_key=reader.text("EDGECREW_PREFECT_API_KEY", "") or None,
            executor_secret=reader.text("EDGECREW_EXECUTOR_SECRET", "") or None,
            secret_key=reader.text("EDGECREW_SECRET_KEY", "") or None,
            allow_loopback_webhooks=reader.boolean("EDGECREW_ALLOW_LOOPBACK_WEBHOOKS", False),
            job_ttl_days=reader.integer("EDGECREW_JOB_TTL_DAYS", defaults.job_ttl_days),
            stale_after_seconds=reader.integer(
                "EDGECREW_STALE_AFTER_SECONDS", defaults.stale_after_seconds
            ),
            claim_timeout_seconds=reader.integer(
                "EDGECREW_CLAIM_TIMEOUT_SECONDS", defaults.claim_timeout_seconds
            ),
            cancel_timeout_seconds=reader.integer(
                "EDGECREW_CANCEL_TIMEOUT_SECONDS", defaults.cancel_timeout_seconds
            ),
            rate_limit_per_minute=reader.integer(
                "EDGECREW_RATE_LIMIT_PER_MINUTE", defaults.rate_limit_per_minute
            ),
            job_events_poll_seconds=reader.number(
                "EDGECREW_JOB_EVENTS_POLL_SECONDS", defaults.job_events_poll_seconds
            ),
            job_events_heartbeat_seconds=reader.number(
                "EDGECREW_JOB_EVENTS_HEARTBEAT_SECONDS", defaults.job_events_heartbeat_seconds
            ),
            job_events_max_seconds=reader.integer(
                "EDGECREW_JOB_EVENTS_MAX_SECONDS", defaults.job_events_max_seconds
            ),
            schedule_min_interval_seconds=reader.integer(
                "EDGECREW_SCHEDULE_MIN_INTERVAL_SECONDS", defaults.schedule_min_interval_seconds
            ),
            max_schedules_per_tenant=reader.integer(
                "EDGECREW_MAX_SCHEDULES_PER_TENANT", defaults.max_schedules_per_tenant
            ),
            schedule_adopt_after_seconds=reader.integer(
                "EDGECREW_SCHEDULE_ADOPT_AFTER_SECONDS", defaults.schedule_adopt_after_seconds
            ),
        )


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse `tenant_a:key1,tenant_b:key2` into {key: tenant}; errors never quote a key."""
    keys: dict[str, str] = {}
    for position, entry in enumerate(filter(None, (e.strip() for e in raw.split(","))), 1):
        tenant, sep, key = entry.partition(":")
        if not sep or not key:
            raise SettingsError(
                f"EDGECREW_API_KEYS entry {position} must look like tenant:key (value hidden)"
            )
        if not _TENANT_RE.match(tenant):
            raise SettingsError(
                f"EDGECREW_API_KEYS entry {position}: tenant {tenant!r} must match "
                f"{_TENANT_RE.pattern}"
            )
        if len(key) < 8:
            raise SettingsError(
                f"EDGECREW_API_KEYS entry {position} (tenant {tenant!r}): key shorter than 8 chars"
            )
        if key in keys:
            raise SettingsError(f"EDGECREW_API_KEYS entry {position}: the same key appears twice")
        keys[key] = tenant
    return keys


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, key: str, default: str) -> str:
        value = self._env.get(key)
        return default if value is None else str(value).strip()

    def integer(self, key: str, default: int) -> int:
        return self._parsed(key, default, int, "an integer")

    def number(self, key: str, default: float) -> float:
        return self._parsed(key, default, float, "a number")

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.text(key, "").lower()
        if raw == "":
            return default
        if raw not in {"true", "false", "1", "0", "yes", "no"}:
            raise SettingsError(f"{key} must be true or false, got {raw!r}")
        return raw in {"true", "1", "yes"}

    def _parsed(self, key: str, default: _T, kind: Callable[[str], _T], noun: str) -> _T:
        raw = self.text(key, "")
        if raw == "":
            return default
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{key} must be {noun}, got {raw!r}") from None
