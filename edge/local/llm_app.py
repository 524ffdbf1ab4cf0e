"""The local LLM's OpenAI-compatible app (llm_server starts it).

Ours because nothing serves CTranslate2 generators over OpenAI's API: llama.cpp's server needs
a compiled llama.cpp (the build that crashed on AVX-512 FP16 CPUs and took minutes to compile),
vLLM and TGI want GPUs. This is the small part edgecrew and CrewAI use; see llm_api.

Requests run one at a time, first come first served, on one worker thread (never on the event
loop): on a small CPU, parallel generations would only split the same cores, and one at a time
keeps every request's latency predictable. A client that disconnects stops its generation
before the next token, so a dropped stream frees the model for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from edge.local.llm_api import ChatCompletionRequest, OpenAIError, Reply, error_body, sampling_for
from edge.local.llm_engine import ChatEngine, Outcome, Sampling

log = logging.getLogger("edge.local.llm_server")

Piece = str | Outcome


class Generation:
    """One request's generation: its pieces as they come, and a way to stop it."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.queue: asyncio.Queue[Piece | Exception] = asyncio.Queue()

    def cancel(self) -> None:
        """Stop before the next token (or never start); safe to call more than once."""
        self.cancelled.set()

    async def pieces(self) -> AsyncIterator[Piece]:
        """Text pieces, then the Outcome."""
        while not isinstance(item := await self.queue.get(), Outcome):
            if isinstance(item, Exception):
                raise OpenAIError(500, "generation failed", kind="server_error") from item
            yield item
        yield item


class SerialRunner:
    """Runs generations one at a time, first come first served, on a dedicated thread."""

    def __init__(self, engine: ChatEngine) -> None:
        self._engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-generate")
        self._active: set[Generation] = set()

    def start(self, prompt: Sequence[int], sampling: Sampling, *, stream: bool) -> Generation:
        """Queue a generation; the caller must cancel it if it stops listening."""
        loop = asyncio.get_running_loop()
        generation = Generation()
        queued = time.monotonic()

        def put(item: Piece | Exception) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server stops
                loop.call_soon_threadsafe(generation.queue.put_nowait, item)

        def work() -> None:
            try:
                if generation.cancelled.is_set():  # its client left while it waited
                    outcome = Outcome("cancelled", 0, None)
                else:
                    outcome = self._engine.generate(prompt, sampling, put, generation.cancelled)
                _log_request(len(prompt), outcome, queued, stream=stream)
                put(outcome)
            except Exception as exc:  # handed to the request's task, which reports it
                put(exc)
            finally:
                self._active.discard(generation)

        self._active.add(generation)
        self._pool.submit(work)
        return generation

    def close(self) -> None:
        """Stop what is running and what waits (at shutdown)."""
        for generation in list(self._active):
            generation.cancel()
        self._pool.shutdown(wait=False)


def create_llm_app(engine: ChatEngine, alias: str, context: int) -> FastAPI:
    """The server for one model, called `alias` by clients, with a `context`-token window."""
    runner = SerialRunner(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()

    app = FastAPI(title=f"edgecrew local LLM ({alias})", lifespan=lifespan)
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": alias}  # listening means loaded: see main()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": alias, "object": "model", "created": 0, "owned_by": "edgecrew"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        if body.model != alias:
            raise OpenAIError(
                404, f"The model `{body.model}` does not exist; this server has `{alias}`.",
                param="model", code="model_not_found",
            )  # fmt: skip
        prompt = await _prompt_ids(engine, [m.as_template_input() for m in body.messages])
        sampling = sampling_for(body, len(prompt), context)
        generation = runner.start(prompt, sampling, stream=body.stream)
        reply = Reply(alias)
        if body.stream:
            events = _stream(generation, reply, len(prompt), include_usage=body.include_usage())
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(await _complete(request, generation, reply, len(prompt)))

    return app


async def _prompt_ids(engine: ChatEngine, messages: list[dict[str, str]]) -> list[int]:
    try:  # a long prompt takes milliseconds to tokenize: not on the event loop
        return await asyncio.to_thread(engine.prompt_ids, messages)
    except jinja2.TemplateError as exc:  # the model's template refused these messages
        raise OpenAIError(400, f"the messages do not fit the chat template: {exc}") from exc


async def _complete(
    request: Request, generation: Generation, reply: Reply, prompt_tokens: int
) -> dict[str, Any]:
    watcher = asyncio.create_task(_cancel_on_disconnect(request, generation))
    texts: list[str] = []
    try:
        async for piece in generation.pieces():
            if isinstance(piece, Outcome):
                return reply.completion("".join(texts), piece, prompt_tokens)
            texts.append(piece)
    finally:
        watcher.cancel()
        generation.cancel()  # a no-op once it has ended; stops it if this task was cancelled
    raise AssertionError("unreachable: pieces() ends with an Outcome")


async def _cancel_on_disconnect(request: Request, generation: Generation) -> None:
    # The body has been read: the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    generation.cancel()


async def _stream(
    generation: Generation, reply: Reply, prompt_tokens: int, *, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI sends them; a client that leaves cancels the generation."""
    try:
        yield _event(reply.chunk({"role": "assistant", "content": ""}, with_usage=include_usage))
        async for piece in generation.pieces():
            if isinstance(piece, Outcome):
                yield _event(reply.chunk({}, piece.finish_reason, with_usage=include_usage))
                if include_usage:
                    yield _event(reply.usage_chunk(prompt_tokens, piece.completion_tokens))
            else:
                yield _event(reply.chunk({"content": piece}, with_usage=include_usage))
        yield "data: [DONE]\n\n"
    except OpenAIError as exc:  # mid-stream the status is sent already: report it in-band
        log.error("%s", exc, exc_info=exc.__cause__)
        yield _event(exc.body())
    finally:  # also when the response is closed or cancelled because the client left
        generation.cancel()


def _event(body: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _log_request(prompt_tokens: int, outcome: Outcome, queued: float, *, stream: bool) -> None:
    """One line per request, written when its generation ends (also when its client left)."""
    first = outcome.first_token_seconds
    log.info(
        "chat completion%s: %d prompt + %d completion tokens, first token %s, %d ms, %s",
        " (stream)" if stream else "",
        prompt_tokens,
        outcome.completion_tokens,
        f"{first * 1000:.0f} ms" if first is not None else "none",
        (time.monotonic() - queued) * 1000,
        outcome.finish_reason,
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape, so OpenAI clients show the message (400 for bad input)."""

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s", exc, exc_info=exc.__cause__)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            message, param = "We could not parse the JSON body of your request.", None
        else:
            param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
            message = f"{param or 'body'}: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{exc.detail} ({request.method} {request.url.path})"
        return JSONResponse(error_body(message), status_code=exc.status_code, headers=exc.headers)
