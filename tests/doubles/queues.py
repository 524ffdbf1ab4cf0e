"""A DeliveryQueue fake that records what was sent."""

from __future__ import annotations

from collections.abc import Mapping


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, object], int]] = []

    async def send(self, message: Mapping[str, object], *, delay_seconds: int = 0) -> None:
        self.sent.append((dict(message), delay_seconds))
