"""One local model on CTranslate2: chat messages in, text pieces out, blocking (run it in a
thread). Sampling, stop sequences and cancellation are applied between tokens."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from edge.local.llm_model import MODEL_INFO, load_prompt
from edge.local.llm_text import ChatPrompt, IncrementalDecoder, StopMatcher

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0  # 0 means greedy: always the most likely token
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.1


@dataclass(frozen=True)
class Outcome:
    finish_reason: FinishReason
    completion_tokens: int
    first_token_seconds: float | None  # None when no token came


class ChatEngine(Protocol):
    """What the server needs of a model (tests give it a scripted one)."""

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]: ...

    def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        emit: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Outcome: ...


class CTranslate2Engine:
    """A converted model (see llm_model) on the CPU, int8."""

    def __init__(self, directory: Path, *, threads: int) -> None:
        import ctranslate2

        info = json.loads((directory / MODEL_INFO).read_text())
        #: The context the model was trained with; the server's may be smaller.
        self.context_length = int(info["context_length"])
        self._prompt: ChatPrompt = load_prompt(directory)
        # Its info lines say which instruction set it chose for this CPU: worth a few log
        # lines at start (the crash this runtime replaced was a wrong choice of kernels).
        ctranslate2.set_log_level(logging.INFO)
        # One replica: the server runs one request at a time, each on all `threads`.
        self._generator = ctranslate2.Generator(
            str(directory), device="cpu", compute_type="int8", intra_threads=threads
        )
        ctranslate2.set_log_level(logging.WARNING)

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self._prompt.ids(messages)

    def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        emit: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Outcome:
        """Generate until the end token, a stop sequence, `max_tokens` or `cancelled`."""
        started = time.monotonic()
        first: float | None = None
        decoder = IncrementalDecoder(self._prompt.decode)
        stops = StopMatcher(sampling.stop)
        count = 0
        reason: FinishReason
        steps = self._generator.generate_tokens(
            self._prompt.tokens(prompt_ids), max_length=sampling.max_tokens, **_options(sampling)
        )
        # Closing the iterator tells CTranslate2 to stop decoding after the current step.
        with contextlib.closing(steps):
            for step in steps:
                first = time.monotonic() - started if first is None else first
                count += 1
                text, stopped = stops.feed(decoder.push(step.token_id))
                if text:
                    emit(text)
                if stopped or cancelled.is_set():
                    reason = "stop" if stopped else "cancelled"
                    break
            else:  # CTranslate2 does not yield the end token: fewer tokens means it came
                reason = "length" if count >= sampling.max_tokens else "stop"
        if reason != "cancelled" and (rest := stops.flush()):
            emit(rest)  # held back as a possible stop sequence, which never came
        return Outcome(reason, count, first)


def _options(sampling: Sampling) -> dict[str, float | int]:
    if sampling.temperature == 0:
        return {"sampling_topk": 1, "repetition_penalty": sampling.repetition_penalty}
    # topk 0: sample from the whole vocabulary, narrowed by top_p.
    return {
        "sampling_topk": 0,
        "sampling_topp": sampling.top_p,
        "sampling_temperature": sampling.temperature,
        "repetition_penalty": sampling.repetition_penalty,
    }
