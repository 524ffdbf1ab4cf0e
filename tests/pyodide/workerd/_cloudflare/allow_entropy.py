"""Stand-in for workerd's `allow_entropy` (src/pyodide/internal/topLevelEntropy/allow_entropy.py).

Until the first request, workerd refuses randomness: Pyodide's getentropy() reaches JS
`crypto.getRandomValues`, which workerd swaps for a function that throws unless the byte
`ALLOWED_ENTROPY_CALLS[0]` is above 0, and then takes one off it per call (topLevelEntropy/
lib.ts, `getRandomValues`). `allow_bad_entropy_calls(n)` sets that byte for the imports that
need a hash seed (pydantic-core, Rust packages); it must be used up exactly, or workerd
raises. Here run_adapters.mjs's `EntropyGate` reads and decrements the same byte (the
address comes from `flag_address()`), as lib.ts does. Copied from workerd, minus the
stderr trick lib.ts uses to learn the address.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from contextlib import contextmanager

ALLOWED_ENTROPY_CALLS = array("b", [0])
IN_REQUEST_CONTEXT = False


def flag_address() -> int:
    """Where the allowance byte lives in Pyodide's memory (what the JS gate reads)."""
    address: int = ALLOWED_ENTROPY_CALLS.buffer_info()[0]
    return address


def in_request_context() -> bool:
    return IN_REQUEST_CONTEXT


def _set_in_request_context() -> None:
    global IN_REQUEST_CONTEXT
    IN_REQUEST_CONTEXT = True


def is_bad_entropy_enabled() -> bool:
    return ALLOWED_ENTROPY_CALLS[0] > 0


def raise_unless_entropy_allowed() -> None:
    """workerd's Python-side refusal, raised before a C call would reach the JS one (fatal)."""
    if not (IN_REQUEST_CONTEXT or is_bad_entropy_enabled()):
        eio = 29  # EIO in Emscripten's errno numbering, as workerd raises it
        raise OSError(eio, "Cannot get entropy outside of request context")


@contextmanager
def allow_bad_entropy_calls(n: int) -> Iterator[None]:
    old_allowed_entropy_calls = ALLOWED_ENTROPY_CALLS[0]
    ALLOWED_ENTROPY_CALLS[0] = n
    yield
    if ALLOWED_ENTROPY_CALLS[0] > 0:
        raise RuntimeError(f"{ALLOWED_ENTROPY_CALLS[0]} unexpected leftover getentropy calls ")
    ALLOWED_ENTROPY_CALLS[0] = old_allowed_entropy_calls
