"""Text around the local LLM: chat prompts in, token pieces out, stop sequences cut.

The prompt side uses the `tokenizers` library and the model's own Jinja chat template, as
transformers' `apply_chat_template` does, without importing transformers (10 s on 2 cores)
at every start; the conversion checks that both give the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


class ChatPrompt:
    """A model's chat template and tokenizer: messages to prompt ids, ids back to text."""

    def __init__(self, tokenizer: Tokenizer, template: str, special: Mapping[str, str]) -> None:
        self._tokenizer = tokenizer
        self._template = _environment().from_string(template)
        self._special = dict(special)  # bos_token / eos_token, which templates may use

    @classmethod
    def load(
        cls, tokenizer_file: Path, template_file: Path, special: Mapping[str, str]
    ) -> ChatPrompt:
        """Read a saved tokenizer.json and chat template."""
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return cls(tokenizer, template_file.read_text(), special)

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt text for `messages`, ending where the assistant's reply begins."""
        return self._template.render(
            messages=list(messages), add_generation_prompt=True, **self._special
        )

    def ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The prompt ids for `messages` (the template writes the special tokens itself)."""
        return list(self._tokenizer.encode(self.render(messages), add_special_tokens=False).ids)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary entries for `ids` (CTranslate2 takes tokens, not ids)."""
        return [self._tokenizer.id_to_token(i) or "" for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)


def _environment() -> ImmutableSandboxedEnvironment:
    # What transformers gives chat templates: a sandbox, these whitespace rules, loop
    # controls, `raise_exception`, `strftime_now` and a non-escaping `tojson`.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, ensure_ascii=False, indent=indent
    )
    env.globals["raise_exception"] = _raise_template_error
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _raise_template_error(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


class IncrementalDecoder:
    """Token ids in, text out as soon as it is whole (a character may span several tokens)."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # ids before this were emitted and no longer affect the text
        self._read = 0  # ids before this are in the text already emitted

    def push(self, token_id: int) -> str:
        """The new text that `token_id` completes ("" while a character is unfinished)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]


class StopMatcher:
    """Cuts generated text at the first stop sequence, holding back what may start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text safe to emit now, and whether a stop sequence has been reached."""
        buffer = self._pending + text
        found = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if found:
            self._pending = ""
            return buffer[: min(found)], True
        held = self._held_back(buffer)
        self._pending = buffer[len(buffer) - held :]
        return buffer[: len(buffer) - held], False

    def flush(self) -> str:
        """What was held back, once generation has ended without a stop sequence."""
        text, self._pending = self._pending, ""
        return text

    def _held_back(self, buffer: str) -> int:
        """The length of the longest end of `buffer` that begins some stop sequence."""
        longest = max((len(s) for s in self._stops), default=1)
        for size in range(min(len(buffer), longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0
