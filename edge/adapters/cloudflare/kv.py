"""KeyValueStore over a Workers KV namespace binding."""

from __future__ import annotations

from typing import Any

from edge.adapters.cloudflare._js import JsException, to_js, to_py
from edge.ports import DependencyUnavailable, InvalidCursor, KVEntry, KVKey, KVListPage


class CloudflareKV:
    """KeyValueStore over a Workers KV namespace binding."""

    def __init__(self, binding: Any) -> None:
        self._kv = binding

    async def get(self, key: str) -> str | None:
        value = await self._call("get", key)
        return None if value is None else str(value)

    async def get_with_metadata(self, key: str) -> KVEntry | None:
        result = await self._call("getWithMetadata", key) or {}
        if result.get("value") is None:
            return None
        return KVEntry(str(result["value"]), result.get("metadata"))

    async def put(
        self,
        key: str,
        value: str,
        *,
        ttl_seconds: int | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        options: dict[str, Any] = {}
        if ttl_seconds is not None:
            options["expirationTtl"] = ttl_seconds
        if metadata is not None:
            options["metadata"] = metadata
        if options:
            await self._call("put", key, value, options)
        else:
            await self._call("put", key, value)

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def list(
        self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> KVListPage:
        options: dict[str, Any] = {"prefix": prefix, "limit": limit}
        if cursor:
            options["cursor"] = cursor
        try:
            result = await self._call("list", options)
        except DependencyUnavailable as exc:
            if cursor:  # KV rejects cursors it did not issue
                raise InvalidCursor(f"KV rejected the cursor: {exc}") from exc
            raise
        keys = [KVKey(k["name"], k.get("expiration"), k.get("metadata")) for k in result["keys"]]
        done = bool(result.get("list_complete", True))
        return KVListPage(keys, None if done else result.get("cursor"))

    async def _call(self, method: str, *args: Any) -> Any:
        # A KV error (429 on > 1 write/s to one key, an outage) is the platform's, not the
        # client's: surface it as 503 + Retry-After rather than a 500.
        try:
            return to_py(await getattr(self._kv, method)(*map(to_js, args)))
        except JsException as exc:
            raise DependencyUnavailable("Workers KV", f"{method} failed: {exc}", 1) from exc
