"""Executor settings, from the worker's environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Where the crews' LLM comes from: any OpenAI-compatible server (the local SmolLM2,
#: vLLM), or Cloudflare Workers AI through its REST API (an account id and a token).
LLM_PROVIDERS = ("openai", "workers-ai")
DEFAULT_WORKERS_AI_MODEL = "@cf/meta/llama-3.1-8b-instruct"


class ExecutorSettingsError(ValueError):
    """A setting is missing or malformed; the message names it (never a secret's value)."""


@dataclass(frozen=True)
class ExecutorSettings:
    edge_url: str  # where callbacks and knowledge searches go
    executor_secret: str = field(repr=False)  # whsec_, shared with the edge
    llm_provider: str = "openai"
    llm_base_url: str = "http://127.0.0.1:8081/v1"
    llm_model: str = "smollm2"
    llm_api_key: str = field(default="not-needed", repr=False)
    llm_max_tokens: int = 256
    callback_attempts: int = 8
    #: How long a job may wait for a person's answer (`human_input` tasks) before it
    #: fails with `InputTimeout`; a crew's `input_timeout_seconds` overrides it.
    input_timeout_seconds: int = 86400
    #: Cloudflare's REST API, for Workers AI (the crews' LLM, ingestion embeddings) and
    #: Vectorize (bulk ingestions write there when `vectorize_index` is set).
    cloudflare_account_id: str = ""
    cloudflare_api_token: str = field(default="", repr=False)
    vectorize_index: str = ""

    @property
    def cloudflare(self) -> bool:
        """Whether Cloudflare's REST API is configured (an account id and a token)."""
        return bool(self.cloudflare_account_id and self.cloudflare_api_token)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutorSettings:
        missing = [k for k in ("EDGECREW_EDGE_URL", "EDGECREW_EXECUTOR_SECRET") if not env.get(k)]
        if missing:
            raise ExecutorSettingsError(f"set {', '.join(missing)} for the executor")
        secret = env["EDGECREW_EXECUTOR_SECRET"]
        if not secret.startswith("whsec_"):
            raise ExecutorSettingsError("EDGECREW_EXECUTOR_SECRET must be a whsec_ secret")
        defaults = cls(edge_url="", executor_secret="")
        provider = (env.get("EDGECREW_CREW_LLM_PROVIDER") or defaults.llm_provider).strip()
        if provider not in LLM_PROVIDERS:
            raise ExecutorSettingsError(
                f"EDGECREW_CREW_LLM_PROVIDER must be one of {', '.join(LLM_PROVIDERS)}, "
                f"got {provider!r}"
            )
        model_default = DEFAULT_WORKERS_AI_MODEL if provider == "workers-ai" else defaults.llm_model
        settings = cls(
            edge_url=env["EDGECREW_EDGE_URL"].rstrip("/"),
            executor_secret=secret,
            llm_provider=provider,
            llm_base_url=env.get("EDGECREW_CREW_LLM_BASE_URL") or defaults.llm_base_url,
            llm_model=env.get("EDGECREW_CREW_LLM_MODEL") or model_default,
            llm_api_key=env.get("EDGECREW_CREW_LLM_API_KEY") or defaults.llm_api_key,
            llm_max_tokens=int(env.get("EDGECREW_CREW_LLM_MAX_TOKENS") or defaults.llm_max_tokens),
            input_timeout_seconds=_positive(
                env, "EDGECREW_INPUT_TIMEOUT_SECONDS", defaults.input_timeout_seconds
            ),
            cloudflare_account_id=(env.get("EDGECREW_CF_ACCOUNT_ID") or "").strip(),
            cloudflare_api_token=(env.get("EDGECREW_CF_API_TOKEN") or "").strip(),
            vectorize_index=(env.get("EDGECREW_VECTORIZE_INDEX") or "").strip(),
        )
        needs = {"EDGECREW_CREW_LLM_PROVIDER=workers-ai": provider == "workers-ai",
                 "EDGECREW_VECTORIZE_INDEX": bool(settings.vectorize_index)}  # fmt: skip
        for reason in (name for name, needed in needs.items() if needed):
            if not settings.cloudflare:
                unset = [k for k in ("EDGECREW_CF_ACCOUNT_ID", "EDGECREW_CF_API_TOKEN")
                         if not (env.get(k) or "").strip()]  # fmt: skip
                raise ExecutorSettingsError(f"{reason} needs {' and '.join(unset)} to be set")
        return settings


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ExecutorSettingsError(f"{name} must be a positive number of seconds, got {raw!r}")
    return int(raw)
