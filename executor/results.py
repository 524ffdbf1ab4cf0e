"""A job's result as the edge can take it: JSON, and small enough for one callback.

A crew's output can hold anything its code returns (a flow's state with datetimes, a
task's `json_dict`, files); the edge takes JSON bodies up to 1 MiB. A result that could
not be posted would fail a crew that succeeded, and Prefect's retry would run it again,
so the result is made to fit here: values JSON cannot hold become their text, and an
oversized result first loses the files' text, then has its long strings cut, saying so.
"""

from __future__ import annotations

import json
from typing import Any

#: What the result may take of the edge's 1 MiB body limit (the rest is the envelope).
MAX_RESULT_BYTES = 768 * 1024
#: The longest a string stays once a result is too big.
CUT_STRING_CHARS = 16 * 1024


def fitted(result: dict[str, Any]) -> dict[str, Any]:
    """`result`, JSON-safe and at most MAX_RESULT_BYTES encoded; `truncated: true` if cut."""
    safe: dict[str, Any] = json.loads(json.dumps(result, default=str))
    if _size(safe) <= MAX_RESULT_BYTES:
        return safe
    for entry in safe.get("files", []):
        entry.pop("text", None)
    safe["truncated"] = True
    limit = CUT_STRING_CHARS
    while _size(safe) > MAX_RESULT_BYTES and limit >= 64:
        cut: dict[str, Any] = _cut(safe, limit)
        safe, limit = cut, limit // 2
    if _size(safe) > MAX_RESULT_BYTES:  # too many small values: keep what says most
        safe = {"output": str(safe.get("output", ""))[:CUT_STRING_CHARS], "truncated": True}
    return safe


def _size(value: Any) -> int:
    return len(json.dumps(value).encode())


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + " …[cut]"
    if isinstance(value, list):
        return [_cut(item, limit) for item in value]
    if isinstance(value, dict):
        return {key: _cut(item, limit) for key, item in value.items()}
    return value
