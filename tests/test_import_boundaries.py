"""Habit 1: only the Worker entry and the Cloudflare adapter may touch js/pyodide/workers,
and nothing the Worker uploads may import local mode or heavy packages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_MODULES = {"js", "pyodide", "workers", "asgi"}
RUNTIME_ALLOWED = {"edge/entry.py", "edge/adapters/cloudflare/_js.py"}
LOCAL_ONLY = {"edge.local", "numpy", "torch", "sentence_transformers", "uvicorn", "typer", "rich"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def uploaded_files() -> list[Path]:
    edge = [p for p in sorted((ROOT / "edge").rglob("*.py")) if "local" not in p.parts]
    return [*edge, *sorted((ROOT / "shared").rglob("*.py"))]


def test_only_the_entry_and_cloudflare_adapter_touch_the_runtime() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(mods)
        for path in [*ROOT.glob("edge/**/*.py"), *ROOT.glob("shared/**/*.py")]
        if (mods := {m for m in imported_modules(path) if m.split(".")[0] in RUNTIME_MODULES})
        and str(path.relative_to(ROOT)) not in RUNTIME_ALLOWED
    }
    assert offenders == {}


def test_uploaded_modules_never_import_local_mode() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in uploaded_files()
        if (
            bad := {
                m
                for m in imported_modules(path)
                if any(m == x or m.startswith(x + ".") for x in LOCAL_ONLY)
            }
        )
    }
    assert offenders == {}


def test_shared_imports_only_the_standard_library_and_itself() -> None:
    for path in (ROOT / "shared").rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top in {
                "shared",
                "__future__",
                "dataclasses",
                "typing",
                "collections",
                "enum",
                "json",
                "secrets",
                "hmac",
                "hashlib",
                "base64",
                "re",
                "datetime",
                "time",
            }, f"{path.name} imports {module}"
