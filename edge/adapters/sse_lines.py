"""Server-sent-event framing for model streams: bytes in, `data:` payloads out."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def sse_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Yield each event's data; frames may be split across chunks in any place."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *frames, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        for frame in frames:
            data = _frame_data(frame)
            if data is not None:
                yield data
    if buffer.strip():
        data = _frame_data(buffer)
        if data is not None:
            yield data


def _frame_data(frame: bytes) -> str | None:
    lines = [
        line[5:].removeprefix(b" ") for line in frame.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines).decode("utf-8") if lines else None
