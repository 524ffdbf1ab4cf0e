"""Stand-in for workerd's `allow_entropy`: `allow_bad_entropy_calls(n)` lets the next `n`
reads of randomness through while a module is imported (workerd refuses randomness in
the global scope otherwise). Here it only counts: the harness does not refuse randomness
at import yet (issue 9), so a module-level `uuid4()` would pass here and fail to deploy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

ALLOWED = [0]


@contextmanager
def allow_bad_entropy_calls(calls: int) -> Iterator[None]:
    ALLOWED[0] += calls
    try:
        yield
    finally:
        ALLOWED[0] = max(0, ALLOWED[0] - calls)
