"""Stand-in for workerd's `entropy_patches` (src/pyodide/internal/topLevelEntropy/): the two
ends of the import phase, in which randomness is refused.

`before_top_level()` runs before the Worker's main module is imported. It patches
`os.urandom` to raise OSError(EIO) instead of reaching getentropy(), whose JS end throws
and fatally ends Pyodide. It also blocks stdlib `random`, as workerd's `random` import
patch does (entropy_import_context.py): `random.random()` at top level raises RuntimeError,
`Random(seed)` and `SystemRandom` stay allowed. `_random.Random.seed(None)` is refused
like `os.urandom`. `before_first_request()` lifts all of it, reseeds `random`, and runs
the registered before-first-request handlers.

One difference: Node's Pyodide imports `random` while it boots, before any patch can be
installed, so its import patch is applied here afterwards. This has the same effect,
including SystemRandom's `_urandom` being the patched `os.urandom`. workerd's tempfile
and multiprocessing patches are left out because nothing here imports those modules at
top level.
"""

from __future__ import annotations

import os
import sys
from functools import wraps
from typing import Any

from _cloudflare import import_patch_manager
from _cloudflare.allow_entropy import _set_in_request_context, raise_unless_entropy_allowed

_orig_urandom = os.urandom
_orig_random_seed: Any = None


@wraps(_orig_urandom)
def _patch_urandom(size: int) -> bytes:
    raise_unless_entropy_allowed()
    return _orig_urandom(size)


def before_top_level() -> None:
    """Enter the import phase (workerd: `before_top_level`)."""
    global _orig_random_seed
    os.urandom = _patch_urandom
    random, _random = sys.modules["random"], sys.modules["_random"]
    random._urandom = _patch_urandom  # what it binds when imported after the patch
    _orig_random_seed = _random.Random.seed

    @wraps(_orig_random_seed)
    def patched_seed(self: Any, val: Any = None) -> Any:
        if val is None:
            raise_unless_entropy_allowed()
        return _orig_random_seed(self, val)

    _random.Random.seed = patched_seed
    import_patch_manager.block_calls(random, allowlist=("Random", "SystemRandom"))


def before_first_request() -> None:
    """Leave the import phase (workerd: `before_first_request`); run once."""
    _set_in_request_context()
    os.urandom = _orig_urandom
    import_patch_manager.remove_import_patch_manager()
    sys.modules["_random"].Random.seed = _orig_random_seed
    sys.modules["random"].seed()  # the import phase may have seen a poor seed
    for handler in import_patch_manager.BEFORE_FIRST_REQUEST:
        handler()
