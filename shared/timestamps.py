"""RFC 3339 UTC timestamps, spelled one way everywhere the API shows a time."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def rfc3339(timestamp: float | None = None, *, timespec: str = "milliseconds") -> str:
    """`2026-11-27T12:00:00.123Z` for a unix time (now when omitted)."""
    moment = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """The unix time of an RFC 3339 timestamp (`Z` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
