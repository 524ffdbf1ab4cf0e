"""The grounded prompt: numbered sources, an instruction to cite them, and nothing else.

What reaches the model is bounded whatever the question: the question and the sources
share one budget (`EDGECREW_MAX_CONTEXT_CHARS`), counted in UTF-8 bytes. Byte-level BPE
tokenizers (SmolLM2's, Llama 3's) never make more tokens than bytes, so the budget caps
the tokens the model reads, and with them the time it spends reading, for any text; a
longer question leaves less room for sources instead of making a longer prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge.ports import ChatMessage

#: The longest question `POST /v1/answers` takes, in characters (docs/api.md says why).
MAX_QUESTION_CHARS = 1_000

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided. "
    "Cite the sources you use with their numbers in square brackets, like [1]. "
    "If the sources do not contain the answer, say that you do not know. "
    "Be brief."
)

NO_SOURCES_ANSWER = "I don't know: the knowledge base has nothing relevant to this question."

_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class Source:
    document_id: str
    chunk_id: str
    score: float
    text: str
    metadata: Mapping[str, object] = field(default_factory=dict)


def build_messages(
    question: str, sources: Sequence[Source], *, max_context_chars: int
) -> tuple[list[ChatMessage], list[Source]]:
    """The chat messages and the sources that fit the budget with the question, best first.

    `max_context_chars` bounds the question plus the numbered sources (headers included)
    in UTF-8 bytes; only the fixed instructions around them come on top.
    """
    question = _utf8_prefix(question.strip(), max_context_chars)
    budget = max_context_chars - _utf8_size(question)
    used: list[Source] = []
    blocks: list[str] = []
    for source in sources:
        header = f"[{len(used) + 1}] (from {source.document_id})\n"
        overhead = _utf8_size(header) + (len(_SEPARATOR) if blocks else 0)
        text = _utf8_prefix(source.text, budget - overhead)
        if not text:
            break
        used.append(source)
        blocks.append(header + text)
        budget -= overhead + _utf8_size(text)
    context = _SEPARATOR.join(blocks)
    user = f"Sources:\n{context}\n\nQuestion: {question}\nAnswer with citations:"
    return [ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", user)], used


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` within `max_bytes` UTF-8 bytes, whole characters only."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max(max_bytes, 0)].decode("utf-8", "ignore")
