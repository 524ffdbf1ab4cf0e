"""Cloudflare Workers AI as the crews' LLM, through langchain-cloudflare.

`EDGECREW_CREW_LLM_PROVIDER=workers-ai` with `EDGECREW_CF_ACCOUNT_ID` and
`EDGECREW_CF_API_TOKEN` puts agents that name no LLM on Workers AI's REST API
(`/accounts/{id}/ai/run/{model}`): no model server of our own to run. CrewAI takes any
`BaseLLM`; this one hands each call to langchain-cloudflare's `ChatCloudflareWorkersAI`,
which speaks that API (and its response shapes) for us. Agents here follow CrewAI's text
protocol (Thought / Action / Final Answer), so a reply is plain text, cut at CrewAI's stop
words (the REST API takes none).
"""

from __future__ import annotations

from typing import Any

from crewai.llms.base_llm import BaseLLM
from pydantic import Field, PrivateAttr, SecretStr

from executor.cloudflare_api import cloudflare_error
from executor.settings import ExecutorSettings

#: Most Workers AI chat models take at least this many tokens (llama-3.1-8b: 8k and more).
CONTEXT_WINDOW = 8192
_ROLES = {"system": "system", "user": "human", "assistant": "ai"}


class WorkersAIError(RuntimeError):
    """Workers AI refused or failed a call; the message names the model and the status,
    never the token."""


class WorkersAILLM(BaseLLM):
    """A CrewAI LLM on Workers AI (an account id and an API token)."""

    llm_type: str = "workers-ai"
    provider: str = "cloudflare"
    account_id: str = ""
    api_token: SecretStr = Field(default=SecretStr(""), exclude=True, repr=False)
    timeout: float = 120.0
    _chat: Any = PrivateAttr(default=None)

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None,
             available_functions: Any = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> str:  # fmt: skip
        """One chat completion: CrewAI's messages in, the reply's text out."""
        import httpx

        try:
            reply = self._client().invoke(_as_langchain(messages))
        except httpx.HTTPStatusError as exc:
            status, said = exc.response.status_code, cloudflare_error(exc.response)
            raise WorkersAIError(f"Workers AI answered {status} for {self.model}{said}") from exc
        except httpx.TransportError as exc:
            raise WorkersAIError(f"Workers AI unreachable: {type(exc).__name__}") from exc
        return self._apply_stop_words(str(reply.content))

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return CONTEXT_WINDOW

    def _client(self) -> Any:
        """langchain-cloudflare's chat model, built on first use (an httpx client inside)."""
        if self._chat is None:
            from langchain_cloudflare import ChatCloudflareWorkersAI

            # Its fields' aliases, which is what its type hints know.
            self._chat = ChatCloudflareWorkersAI(
                model_name=self.model,
                cloudflare_account_id=self.account_id,
                cloudflare_api_token=self.api_token,
                temperature=self.temperature if self.temperature is not None else 0.2,
                max_tokens=int(self.max_tokens) if self.max_tokens else None,
                timeout=self.timeout,
                max_retries=2,
            )
        return self._chat


def workers_ai_llm(settings: ExecutorSettings) -> WorkersAILLM:
    """The executor's LLM on Workers AI, from its settings."""
    return WorkersAILLM(
        model=settings.llm_model,
        account_id=settings.cloudflare_account_id,
        api_token=SecretStr(settings.cloudflare_api_token),
        max_tokens=settings.llm_max_tokens,
        temperature=0.2,
    )


def _as_langchain(messages: Any) -> list[tuple[str, str]]:
    """CrewAI's messages (a string, or `{role, content}` dicts) as LangChain's tuples."""
    if isinstance(messages, str):
        return [("human", messages)]
    converted = []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else str(content or "")
        converted.append((_ROLES.get(str(message.get("role")), "human"), text))
    return converted
