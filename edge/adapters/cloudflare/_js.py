"""The JS boundary: the one module of the Cloudflare adapters that imports `js`/`pyodide`.

Bindings come wrapped by the Workers runtime SDK (dict options go in as JS objects, results
come back as dicts), but we still convert both ways here: a raw binding (no vendored SDK)
needs JS arguments and hands back JsProxy objects, and Pyodide >= 0.28 turns JS null into
`jsnull`, not None. tests/pyodide runs the adapters in real Pyodide both ways. Under CPython
the imports fail and the Python doubles take and return plain values.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JsException", "JsProxy", "fetch", "has_fetch", "to_js", "to_py"]

try:
    from pyodide.ffi import JsException, JsProxy
except ImportError:  # CPython: no JS here, tests use plain-Python binding doubles.

    class JsException(Exception):  # type: ignore[no-redef]
        """Stands in for pyodide's JsException so doubles can raise what the runtime would."""

    class JsProxy:  # type: ignore[no-redef]
        pass


try:
    from pyodide.ffi import jsnull as _JSNULL
except ImportError:  # CPython, or Pyodide < 0.28 where JS null already arrives as None
    _JSNULL = None

try:
    from js import Object as _JSObject
    from pyodide.ffi import to_js as _to_js
except ImportError:  # CPython: the doubles take plain Python values
    _JSObject = _to_js = None


def to_py(value: Any) -> Any:
    """Plain Python from whatever a binding returned: JsProxy, jsnull, SDK JsDict, ..."""
    if value is None or value is _JSNULL:
        return None
    if isinstance(value, JsProxy) and hasattr(value, "to_py"):
        value = value.to_py()
    if isinstance(value, dict):
        return {str(k): to_py(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_py(v) for v in value]
    return value


def to_js(value: Any) -> Any:
    """A binding argument as JS: dicts as plain objects, lists as arrays, None as null.

    The runtime SDK's binding wrapper converts arguments too, and passes JS values through
    unchanged; converting here keeps the adapters right on a raw binding as well, which
    would otherwise receive a PyProxy it cannot read.
    """
    if _to_js is None or not isinstance(value, dict | list | tuple):
        return value
    return _to_js(_null_for_none(value), dict_converter=_JSObject.fromEntries)


def _null_for_none(value: Any) -> Any:
    # to_js turns None into undefined, which drops object keys; KV and Vectorize want null.
    if value is None:
        return _JSNULL
    if isinstance(value, dict):
        return {k: _null_for_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_null_for_none(v) for v in value]
    return value


try:
    from js import AbortSignal as _AbortSignal
    from js import fetch as _js_fetch
except ImportError:  # CPython: there is no runtime fetch(); tests pass their own
    _AbortSignal = _js_fetch = None


def has_fetch() -> bool:
    """True inside the Workers runtime (Pyodide), where HTTP must go through fetch()."""
    return _js_fetch is not None


async def fetch(
    url: str,
    *,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    timeout_seconds: float | None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """The Workers runtime's `fetch()`: (status, headers, body). Redirects are not
    followed (the caller decides), and a timeout aborts the request."""
    if _js_fetch is None:
        raise RuntimeError("fetch() exists only inside the Workers runtime")
    init: dict[str, Any] = {"method": method, "headers": [list(h) for h in headers]}
    init["redirect"] = "manual"
    if body:
        init["body"] = body
    if timeout_seconds:
        init["signal"] = _AbortSignal.timeout(int(timeout_seconds * 1000))
    response = await _js_fetch(url, to_js(init))
    pairs = [(str(k), str(v)) for k, v in (entry.to_py() for entry in response.headers.entries())]
    content = (await response.arrayBuffer()).to_bytes()
    return int(response.status), pairs, bytes(content)
