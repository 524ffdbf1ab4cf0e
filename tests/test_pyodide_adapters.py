"""edge/adapters/cloudflare/ inside real Pyodide (314, as Workers run it) against JS fake
bindings: see tests/pyodide/run_adapters.mjs. Catches what CPython doubles cannot (JS null as
`jsnull`, JsProxy results, PyProxy arguments, Uint8Array chunks). Needs the pinned Node 22 and
Pyodide and the runtime SDK wheel that `make tools` installs; no network at test time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / ".tools/node_modules/node/bin/node"
PYODIDE = ROOT / ".tools/node_modules/pyodide/pyodide.mjs"
SDK_WHEEL = ROOT / ".tools/wheels/workers_runtime_sdk-1.9.5-py3-none-any.whl"
SCRIPT = ROOT / "tests/pyodide/run_adapters.mjs"


def run_adapters(mode: str) -> str:
    """Output of the run; a setup problem fails the test, failed checks raise AssertionError."""
    missing = [str(p.relative_to(ROOT)) for p in (NODE, PYODIDE, SDK_WHEEL) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make tools`", pytrace=False)
    proc = subprocess.run(
        [str(NODE), str(SCRIPT), "--mode", mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1):
        pytest.fail(f"run_adapters.mjs could not run (exit {proc.returncode}):\n{output}")
    assert proc.returncode == 0, f"adapter checks failed in Pyodide ({mode}):\n{output}"
    assert "run_adapters: OK" in proc.stdout, output
    return output


def test_cloudflare_adapters_in_pyodide_through_the_runtime_sdk() -> None:
    """The production path: bindings wrapped by workers-runtime-sdk's _EnvWrapper."""
    run_adapters("sdk")


def test_cloudflare_adapters_in_pyodide_with_raw_bindings() -> None:
    """Bindings without the SDK wrapper (a Worker with no vendored workers-runtime-sdk)."""
    run_adapters("raw")
