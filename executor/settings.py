"""Executor settings, from the worker's environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class ExecutorSettingsError(ValueError):
    """A setting is missing or malformed; the message names it (never a secret's value)."""


@dataclass(frozen=True)
class ExecutorSettings:
    edge_url: str  # where callbacks and knowledge searches go
    executor_secret: str = field(repr=False)  # whsec_, shared with the edge
    llm_base_url: str = "http://127.0.0.1:8081/v1"
    llm_model: str = "smollm2"
    llm_api_key: str = field(default="not-needed", repr=False)
    llm_max_tokens: int = 256
    callback_attempts: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutorSettings:
        missing = [k for k in ("EDGECREW_EDGE_URL", "EDGECREW_EXECUTOR_SECRET") if not env.get(k)]
        if missing:
            raise ExecutorSettingsError(f"set {', '.join(missing)} for the executor")
        secret = env["EDGECREW_EXECUTOR_SECRET"]
        if not secret.startswith("whsec_"):
            raise ExecutorSettingsError("EDGECREW_EXECUTOR_SECRET must be a whsec_ secret")
        defaults = cls(edge_url="", executor_secret="")
        return cls(
            edge_url=env["EDGECREW_EDGE_URL"].rstrip("/"),
            executor_secret=secret,
            llm_base_url=env.get("EDGECREW_CREW_LLM_BASE_URL") or defaults.llm_base_url,
            llm_model=env.get("EDGECREW_CREW_LLM_MODEL") or defaults.llm_model,
            llm_api_key=env.get("EDGECREW_CREW_LLM_API_KEY") or defaults.llm_api_key,
            llm_max_tokens=int(env.get("EDGECREW_CREW_LLM_MAX_TOKENS") or defaults.llm_max_tokens),
        )
