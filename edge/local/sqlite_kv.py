"""Workers KV semantics on a SQLite file: string values, TTL, metadata, prefix list + cursor."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.ports import (
    KV_MIN_TTL_SECONDS,
    DependencyUnavailable,
    InvalidCursor,
    KVEntry,
    KVKey,
    KVListPage,
)

# Workers KV's documented limits, kept here so local mode fails where Cloudflare would.
MAX_KEY_BYTES = 512
MAX_METADATA_BYTES = 1024
MAX_LIST_LIMIT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expiration INTEGER,
    metadata TEXT
) WITHOUT ROWID;
"""


class SqliteKV:
    """A KeyValueStore in one SQLite file (or ":memory:"). Safe to share between threads."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = SqliteGuard("local key-value store")
        self._clock = clock

    async def get(self, key: str) -> str | None:
        entry = await self.get_with_metadata(key)
        return None if entry is None else entry.value

    async def get_with_metadata(self, key: str) -> KVEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value, metadata FROM kv WHERE key = ? "
                "AND (expiration IS NULL OR expiration > ?)",
                (key, self._now()),
            ).fetchone()
        if row is None:
            return None
        return KVEntry(row[0], None if row[1] is None else json.loads(row[1]))

    async def put(
        self,
        key: str,
        value: str,
        *,
        ttl_seconds: int | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        _check_key(key)
        if ttl_seconds is not None and ttl_seconds < KV_MIN_TTL_SECONDS:
            raise ValueError(f"ttl_seconds must be >= {KV_MIN_TTL_SECONDS}, got {ttl_seconds}")
        encoded_metadata = None if metadata is None else json.dumps(metadata)
        if encoded_metadata is not None and len(encoded_metadata.encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata of {key!r} exceeds {MAX_METADATA_BYTES} bytes as JSON")
        expiration = None if ttl_seconds is None else self._now() + ttl_seconds
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kv (key, value, expiration, metadata) VALUES (?, ?, ?, ?)",
                (key, value, expiration, encoded_metadata),
            )

    async def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kv WHERE key = ?", (key,))

    async def list(
        self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None
    ) -> KVListPage:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIST_LIMIT}, got {limit}")
        after = _decode_cursor(cursor) if cursor else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, expiration, metadata FROM kv "
                "WHERE substr(key, 1, ?) = ? AND key > ? "
                "AND (expiration IS NULL OR expiration > ?) ORDER BY key LIMIT ?",
                (len(prefix), prefix, after, self._now(), limit + 1),
            ).fetchall()
        page = [
            KVKey(name, expiration, None if meta is None else json.loads(meta))
            for name, expiration, meta in rows[:limit]
        ]
        more = len(rows) > limit
        return KVListPage(page, _encode_cursor(page[-1].name) if more else None)

    def purge_expired(self) -> int:
        """Drop expired rows (reads already hide them); returns how many went."""
        with self._lock:
            return self._db.execute(
                "DELETE FROM kv WHERE expiration IS NOT NULL AND expiration <= ?", (self._now(),)
            ).rowcount

    def close(self) -> None:
        self._db.close()

    def _now(self) -> int:
        return int(self._clock())


class SqliteGuard:
    """The store's lock; also turns SQLite failures (locked, disk full) into a 503."""

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._name = name

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        self._lock.release()
        if isinstance(error, sqlite3.OperationalError):
            raise DependencyUnavailable(self._name, str(error), 1) from error


def _check_key(key: str) -> None:
    if not key or key in {".", ".."}:
        raise ValueError(f"invalid KV key {key!r}")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"KV key longer than {MAX_KEY_BYTES} bytes: {key[:40]!r}...")


def _encode_cursor(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor(f"not a cursor this store issued: {cursor[:40]!r}") from None
