"""Import each module the Worker uploads; fail on any import error or heavy dependency.

Only edge/entry.py is skipped (it imports `workers`, which exists only inside workerd); the
Cloudflare adapter guards its pyodide imports, so it is imported too. Run by
scripts/check_pyodide_imports.sh under Python 3.13.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"edge.entry"}  # imports `workers`, which exists only inside workerd
FORBIDDEN = {"numpy", "torch", "sentence_transformers", "uvicorn", "typer", "ctranslate2"}


def worker_modules() -> list[str]:
    names = []
    for package in ("edge", "shared"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "local" in parts:
                continue
            name = ".".join(p for p in parts if p != "__init__")
            if name not in SKIP:
                names.append(name)
    return names


def main() -> int:
    modules = worker_modules()
    for name in modules:
        importlib.import_module(name)
    heavy = sorted(FORBIDDEN & {m.split(".")[0] for m in sys.modules})
    if heavy:
        print(f"worker modules pulled in local-only packages: {heavy}")
        return 1
    print(f"imported {len(modules)} worker modules on Python {sys.version.split()[0]}: ok")
    if "--bench" in sys.argv:
        bench_import_time()
    return 0


def bench_import_time(runs: int = 15) -> None:
    """Cold `import edge.app` in fresh interpreters; the baseline is a bare interpreter."""
    code = "import time; t = time.perf_counter(); import {m}; print(time.perf_counter() - t)"
    for module in ("edge.app", "fastapi"):
        samples = sorted(
            float(subprocess.check_output([sys.executable, "-c", code.format(m=module)]))  # noqa: S603
            for _ in range(runs)
        )
        p50 = samples[len(samples) // 2] * 1000
        print(f"import {module}: p50 {p50:.0f} ms over {runs} fresh interpreters")


if __name__ == "__main__":
    raise SystemExit(main())
