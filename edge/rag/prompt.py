"""The grounded prompt: numbered sources, an instruction to cite them, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge.ports import ChatMessage

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided. "
    "Cite the sources you use with their numbers in square brackets, like [1]. "
    "If the sources do not contain the answer, say that you do not know. "
    "Be brief."
)

NO_SOURCES_ANSWER = "I don't know: the knowledge base has nothing relevant to this question."


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
    """The chat messages and the sources that fit in `max_context_chars`, best first."""
    used: list[Source] = []
    blocks: list[str] = []
    budget = max_context_chars
    for source in sources:
        text = source.text[:budget]
        if not text:
            break
        used.append(source)
        blocks.append(f"[{len(used)}] (from {source.document_id})\n{text}")
        budget -= len(text)
    context = "\n\n".join(blocks)
    user = f"Sources:\n{context}\n\nQuestion: {question}\nAnswer with citations:"
    return [ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", user)], used
