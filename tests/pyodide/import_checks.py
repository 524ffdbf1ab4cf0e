"""Randomness at import, refused as workerd refuses it; run inside Pyodide by run_adapters.mjs.

`import_phase()` runs in the Worker's top level (before the first request, randomness refused):
it imports the Worker's main module and records what the negative controls ran into. The
check then runs in a request, where the same calls must work.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import secrets
import sys
import uuid
from typing import Any

from adapter_checks import Ctx, check

PROBE = "entropy_at_import"  # tests/pyodide/entropy_at_import.py: uuid4() at module scope
#: Modules the Worker's import must bring in under the rule (so the rule covered them).
APP_MODULES = ("edge.entry", "edge.app", "fastapi", "pydantic_core", "httpx", "workers")


def import_phase() -> str:
    """What the Worker's top level ran into, as JSON (the check asserts on it)."""
    import js
    from _cloudflare.allow_entropy import allow_bad_entropy_calls

    import edge.entry  # noqa: F401  the main module, and everything it imports

    seen: dict[str, Any] = {"imported": [m for m in APP_MODULES if m in sys.modules]}
    seen["uuid4 at module scope"] = _error_of(lambda: importlib.import_module(PROBE))
    sys.modules.pop(PROBE, None)
    seen["os.urandom"] = _error_of(lambda: os.urandom(8))
    seen["secrets.token_hex"] = _error_of(secrets.token_hex)  # SystemRandom: allowed to exist
    seen["random.random"] = _error_of(random.random)
    seen["js crypto.getRandomValues"] = _error_of(
        lambda: js.crypto.getRandomValues(js.Uint8Array.new(8))
    )
    with allow_bad_entropy_calls(1):  # one getentropy() call allowed, and used up exactly
        seen["os.urandom with 1 allowed"] = _error_of(lambda: os.urandom(8))
    return json.dumps(seen)


def _error_of(call: Any) -> str | None:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@check()
async def check_randomness_is_refused_at_import_and_allowed_in_a_request(ctx: Ctx) -> None:
    """workerd's rule (src/pyodide/internal/topLevelEntropy/): refused at top level, then fine."""
    seen = json.loads(ctx.helpers.importPhase)
    assert seen["imported"] == list(APP_MODULES), seen["imported"]
    refused = "OSError: [Errno 29] Cannot get entropy outside of request context"
    assert seen["uuid4 at module scope"] == refused, seen
    assert seen["os.urandom"] == refused, seen
    assert seen["secrets.token_hex"] == refused, seen
    assert seen["random.random"] == (
        "RuntimeError: Cannot use random.random() outside of request context"
    ), seen
    assert (seen["js crypto.getRandomValues"] or "").startswith(
        "JsException: Error: Disallowed operation called within global scope"
    ), seen
    assert seen["os.urandom with 1 allowed"] is None, seen  # the JS gate took it off
    gate = "PythonUserError: Disallowed operation called within global scope"
    assert ctx.helpers.gateAtImport == gate, ctx.helpers.gateAtImport

    probe = importlib.import_module(PROBE)  # in a request: the same module scope runs
    try:
        assert isinstance(probe.TOKEN, uuid.UUID) and probe.TOKEN.version == 4, probe.TOKEN
    finally:
        sys.modules.pop(PROBE, None)
    assert len(os.urandom(8)) == 8 and len(secrets.token_hex(4)) == 8
    assert 0 <= random.random() < 1
    import js

    assert js.crypto.getRandomValues(js.Uint8Array.new(8)).length == 8
