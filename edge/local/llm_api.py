"""The part of OpenAI's chat completions API that edgecrew and CrewAI use: requests, errors,
responses and stream chunks as plain data (the server in llm_server sends them).

Fields a client may send that this server does not act on (tools, response_format, penalties,
user, ...) are accepted and ignored, as llama.cpp's server did: CrewAI sends some of them.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.local.llm_engine import FinishReason, Outcome, Sampling


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return error_body(self.message, kind=self.kind, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # None: an assistant turn that only called tools

    def as_template_input(self) -> dict[str, str]:
        """The message as chat templates expect it: a role and one string."""
        role = "system" if self.role == "developer" else self.role  # OpenAI's newer name
        if isinstance(self.content, list):
            return {"role": role, "content": "".join(part.text for part in self.content)}
        return {"role": role, "content": self.content or ""}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # Not OpenAI's, but vLLM's OpenAI server takes it too. The default is what
    # llama-cpp-python's server applied (`repeat_penalty`): without it a model this small
    # loops on one phrase within a hundred tokens.
    repetition_penalty: float = Field(default=1.1, ge=1, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Accepted, not reproducible: CTranslate2 seeds its sampler once per worker thread, not
    # per request. Temperature 0 is deterministic.
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def sampling_for(request: ChatCompletionRequest, prompt_tokens: int, context: int) -> Sampling:
    """The request's sampling within the context; 400 when the prompt and reply cannot fit."""
    wanted = request.max_completion_tokens or request.max_tokens
    # Unset means "up to the end of the context", as OpenAI does.
    max_tokens = wanted if wanted is not None else context - prompt_tokens
    if max_tokens < 1 or prompt_tokens + max_tokens > context:
        raise OpenAIError(
            400,
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max(max_tokens, 0)} tokens ({prompt_tokens} in the messages, "
            f"{max(max_tokens, 0)} in the completion). Please reduce the length of the "
            "messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=request.stop_sequences(),
        repetition_penalty=request.repetition_penalty,
    )


class Reply:
    """The fields every response and chunk of one completion share."""

    def __init__(self, model: str) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model

    def completion(self, text: str, outcome: Outcome, prompt_tokens: int) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": _finish(outcome.finish_reason)}
        return {
            **self._head("chat.completion"),
            "choices": [{**choice, "logprobs": None}],
            "usage": usage(prompt_tokens, outcome.completion_tokens),
        }

    def chunk(
        self, delta: dict[str, str], finish: FinishReason | None = None, *, with_usage: bool = False
    ) -> dict[str, Any]:
        finish_reason = _finish(finish) if finish else None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body = {**self._head("chat.completion.chunk"), "choices": [choice]}
        if with_usage:
            body["usage"] = None  # the usage chunk comes last, as OpenAI sends it
        return body

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            **self._head("chat.completion.chunk"),
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _finish(reason: FinishReason) -> str:
    return "stop" if reason == "cancelled" else reason  # nobody reads a cancelled one
