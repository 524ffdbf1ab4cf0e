"""The request headers that shape a job's answer and life: `Prefer: wait` and `Cancel-After`.

Pure parsing, no I/O: the routes turn what these return into answers and 422s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The longest a request may be held open for its job (Replicate's limit too): past it a
#: client is better served by the webhook or the event stream than by an open request.
MAX_WAIT_SECONDS = 60
#: The furthest deadline a job may have; a job's record outlives it (30 days by default).
MAX_DEADLINE_SECONDS = 7 * 86400

_DELTA_SECONDS = re.compile(r"[0-9]+")
# Go-style durations as Replicate takes them (`90s`, `5m`, `1h30m`), or bare seconds.
_DURATION = re.compile(r"(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def preferred_wait(headers: Iterable[str]) -> int | None:
    """Seconds the client prefers to wait (RFC 7240 `wait`), clamped to the maximum.

    None when it states no usable `wait`: as RFC 7240 asks, a preference the server cannot
    use is ignored, not refused (a client stating one can always take the `202`). Every
    `Prefer` field counts as one list; only the first `wait` is considered (§2); names
    are case-insensitive and parameters after `;` are ignored. A bare `wait` asks for the
    maximum, as Replicate's `Prefer: wait` does; `wait=0` asks for no waiting at all.
    """
    for field in headers:
        for preference in _split(field, ","):
            token, _, value = _split(preference, ";")[0].partition("=")
            if token.strip().lower() != "wait":
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]  # RFC 7240 allows a quoted word
            if not value and "=" not in preference:
                return MAX_WAIT_SECONDS
            if not _DELTA_SECONDS.fullmatch(value):
                return None
            return _at_most(value, MAX_WAIT_SECONDS) or None
    return None


def duration_seconds(text: str) -> int:
    """`90s`, `5m`, `1h30m` or `90` as seconds; ValueError naming what is wrong."""
    value = text.strip().lower()
    too_long = MAX_DEADLINE_SECONDS + 1
    if _DELTA_SECONDS.fullmatch(value):
        seconds = _at_most(value, too_long)
    else:
        match = _DURATION.fullmatch(value)
        if not value or match is None:
            raise ValueError(f"{text!r} is not a duration such as 90s, 5m, 1h30m or 90 (seconds)")
        seconds = sum(
            _at_most(number, too_long) * _UNIT_SECONDS[unit]
            for unit, number in match.groupdict().items()
            if number
        )
    if not 1 <= seconds <= MAX_DEADLINE_SECONDS:
        raise ValueError(f"must be between 1 second and {MAX_DEADLINE_SECONDS // 86400} days")
    return seconds


def _at_most(digits: str, cap: int) -> int:
    """A decimal number, or `cap` if it is larger (never parsing a huge one)."""
    significant = digits.lstrip("0") or "0"
    return cap if len(significant) > len(str(cap)) else min(int(significant), cap)


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
