"""DeliveryQueue over a Cloudflare Queues producer binding."""

from __future__ import annotations

from collections.abc import Mapping

from edge.adapters.cloudflare._js import JsException, to_js
from edge.ports import DependencyUnavailable

MAX_DELAY_SECONDS = 43_200  # Cloudflare Queues' ceiling for delaySeconds (12 h)


class CloudflareQueue:
    def __init__(self, binding: object) -> None:
        self._queue = binding

    async def send(self, message: Mapping[str, object], *, delay_seconds: int = 0) -> None:
        args = [to_js(dict(message))]
        if delay_seconds:
            args.append(to_js({"delaySeconds": min(delay_seconds, MAX_DELAY_SECONDS)}))
        try:
            await self._queue.send(*args)  # type: ignore[attr-defined]
        except JsException as exc:
            raise DependencyUnavailable("Cloudflare Queues", f"send failed: {exc}", 1) from exc
