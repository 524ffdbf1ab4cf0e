"""Split a document into overlapping chunks that end on natural boundaries.

In `shared/` because the edge (`POST /v1/documents`) and the executor (bulk ingestions)
must cut a document into the very same chunks, so that both write the same chunk ids.
"""

from __future__ import annotations

from dataclasses import dataclass

# Preferred places to end a chunk, best first. A chunk ends after the separator.
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    start: int  # offset of the chunk in the document, for highlighting
    end: int


def chunk_text(text: str, *, size: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `size` characters; consecutive chunks share about `overlap`."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got {size=} {overlap=}")
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = _chunk_end(text, start, size)
        piece = text[start:end].strip()
        if piece:
            chunks.append(Chunk(len(chunks), piece, start, end))
        if end >= len(text):
            break
        start = _next_start(text, start, end, overlap)
    return chunks


def _chunk_end(text: str, start: int, size: int) -> int:
    hard_end = start + size
    if hard_end >= len(text):
        return len(text)
    # Search only the back half so a chunk is never much smaller than asked.
    window_start = start + size // 2
    for separator in _BREAKS:
        found = text.rfind(separator, window_start, hard_end)
        if found != -1:
            return found + len(separator)
    return hard_end


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    candidate = max(end - overlap, start + 1)
    if candidate < end and overlap:
        # Begin the overlap at a word, not inside one.
        space = text.find(" ", candidate, end)
        if space != -1:
            candidate = space + 1
    return _skip_space(text, candidate)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position
