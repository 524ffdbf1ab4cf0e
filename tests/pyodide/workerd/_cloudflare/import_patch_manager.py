"""Stand-in for workerd's import patch manager: what the Workers SDK's patches register.

- `register_exec_patch(name)`: a context manager that wraps the first execution of module
  `name` (the SDK makes `anyio.to_thread.run_sync` run inline this way);
- `register_create_patch(name)`: the same, around the module's creation;
- `register_before_first_request(name)`: called with the module before the first request,
  if it was imported through here (workerd reseeds `random` this way);
- `register_after_snapshot(name)`: recorded, never called (there is no memory snapshot);
- `block_calls(module, allowlist=...)`: until the first request, calling anything of the
  module outside `allowlist` raises RuntimeError (`random.random()` at import does).

`remove_import_patch_manager()` ends the import phase, as workerd's does before the first
request: the finder leaves `sys.meta_path`, blocked modules come back. Unlike workerd's,
registrations are only taken as decorators (all the SDK uses), and patches of one module
stack. Source: workerd src/pyodide/internal/topLevelEntropy/import_patch_manager.py.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial, wraps
from typing import Any

_EXEC: dict[str, list[Callable[[Any], Any]]] = {}
_CREATE: dict[str, list[Callable[[Any], Any]]] = {}
LIFECYCLE: dict[str, list[Callable[..., Any]]] = {}
BEFORE_FIRST_REQUEST: list[Callable[[], Any]] = []  # handlers of the modules imported here
_BLOCKED: dict[str, Any] = {}  # name -> the module that `block_calls` put a proxy in front of
IN_REQUEST_CONTEXT = False


def _registrar(table: dict[str, list[Callable[[Any], Any]]], name: str) -> Callable[[Any], Any]:
    def register(patch: Any) -> Any:
        table.setdefault(name, []).append(patch)
        return patch

    return register


def register_exec_patch(name: str) -> Callable[[Any], Any]:
    return _registrar(_EXEC, name)


def register_create_patch(name: str) -> Callable[[Any], Any]:
    return _registrar(_CREATE, name)


def register_after_snapshot(name: str) -> Callable[[Any], Any]:
    return _registrar(LIFECYCLE, f"after_snapshot:{name}")


def register_before_first_request(name: str) -> Callable[[Any], Any]:
    return _registrar(LIFECYCLE, f"before_first_request:{name}")


def block_calls(module: Any, *, allowlist: tuple[str, ...] = ()) -> None:
    sys.modules[module.__name__] = _BlockedCallModule(module, allowlist)
    _BLOCKED[module.__name__] = module


def remove_import_patch_manager() -> None:
    """The import phase is over: no more patching, and blocked calls go through."""
    global IN_REQUEST_CONTEXT
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
    IN_REQUEST_CONTEXT = True
    sys.modules.update(_BLOCKED)


class _BlockedCallModule:
    """A module whose callables raise until the first request, except the allowed ones.

    Code that imported it at top level keeps this proxy, so after the first request it
    passes everything through (as workerd's BlockedCallModule does).
    """

    def __init__(self, module: Any, allowlist: tuple[str, ...]) -> None:
        object.__setattr__(self, "_mod", module)
        object.__setattr__(self, "_allow_list", allowlist)

    def __getattribute__(self, key: str) -> Any:
        mod = object.__getattribute__(self, "_mod")
        orig = getattr(mod, key)
        if IN_REQUEST_CONTEXT or not callable(orig):
            return orig
        if key in object.__getattribute__(self, "_allow_list"):
            return orig

        @wraps(orig)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not IN_REQUEST_CONTEXT:
                raise RuntimeError(f"Cannot use {mod.__name__}.{key}() outside of request context")
            return orig(*args, **kwargs)

        return wrapper

    def __setattr__(self, key: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_mod"), key, value)

    def __dir__(self) -> list[str]:
        return dir(object.__getattribute__(self, "_mod"))


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, name: str, loader: Any) -> None:
        self._name = name
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return _run_in(_CREATE.get(self._name, []), lambda: self._loader.create_module(spec), None)

    def exec_module(self, module: Any) -> None:
        for handler in LIFECYCLE.get(f"before_first_request:{self._name}", []):
            BEFORE_FIRST_REQUEST.append(partial(handler, module))
        _run_in(_EXEC.get(self._name, []), lambda: self._loader.exec_module(module), module)


def _run_in(patches: list[Callable[[Any], Any]], body: Callable[[], Any], module: Any) -> Any:
    with ExitStack() as stack:  # a failing import reaches each patch's exit, as in workerd
        for patch in patches:
            stack.enter_context(patch(module))
        return body()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds patched modules with the other finders, then wraps their loader."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _EXEC and name not in _CREATE and not _lifecycle(name):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(name, spec.loader)
                return spec
        return None


def _lifecycle(name: str) -> bool:
    return any(f"{kind}:{name}" in LIFECYCLE for kind in ("after_snapshot", "before_first_request"))


sys.meta_path.insert(0, _Finder())
