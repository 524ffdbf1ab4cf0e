#!/usr/bin/env bash
# Import every module the Worker uploads under CPython 3.13 (the closest this machine has to
# the runtime's 3.14; tests/pyodide runs real Pyodide 314) with only
# the base dependencies installed: a stray import of a local-mode package fails here.
# With --bench, also time `import edge.app` (the Worker's import cost) and print it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY313=${PY313:-$(PYENV_VERSION=3.13.0 pyenv which python3.13 2>/dev/null || command -v python3.13)}
VENV=.venv313
if [ ! -x "$VENV/bin/python" ]; then
    "$PY313" -m venv "$VENV"
fi
# Base dependencies only: exactly what pywrangler would vendor for the Worker.
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
"$VENV/bin/python" scripts/import_worker_modules.py "$@"
