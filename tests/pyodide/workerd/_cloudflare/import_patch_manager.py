"""Stand-in for workerd's import patch manager: what the Workers SDK's patches register.

- `register_exec_patch(name)`: a context manager that wraps the first execution of module
  `name` (the SDK makes `anyio.to_thread.run_sync` run inline this way);
- `register_create_patch(name)`: the same, around the module's creation;
- `register_after_snapshot` / `register_before_first_request`: recorded, never called
  (there is no memory snapshot here);
- `block_calls(module, allowlist=...)`: a no-op (it guards numpy's random at snapshot).

Unlike workerd's, it stays installed after start and only takes its registrations as
decorators (all the SDK uses); patches of one module stack.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

_EXEC: dict[str, list[Callable[[Any], Any]]] = {}
_CREATE: dict[str, list[Callable[[Any], Any]]] = {}
LIFECYCLE: dict[str, list[Callable[..., Any]]] = {}


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
    return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, name: str, loader: Any) -> None:
        self._name = name
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return _run_in(_CREATE.get(self._name, []), lambda: self._loader.create_module(spec), None)

    def exec_module(self, module: Any) -> None:
        _run_in(_EXEC.get(self._name, []), lambda: self._loader.exec_module(module), module)


def _run_in(patches: list[Callable[[Any], Any]], body: Callable[[], Any], module: Any) -> Any:
    with ExitStack() as stack:  # a failing import reaches each patch's exit, as in workerd
        for patch in patches:
            stack.enter_context(patch(module))
        return body()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds patched modules with the other finders, then wraps their loader."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _EXEC and name not in _CREATE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(name, spec.loader)
                return spec
        return None


sys.meta_path.insert(0, _Finder())
