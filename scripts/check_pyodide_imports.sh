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
# The Worker's packages at worker.lock's versions (CPython builds of them: the lock's own
# files are Pyodide wheels), nothing else, then the project without its dependencies.
"$VENV/bin/python" -m pip install -q --upgrade pip
sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\) --hash=.*/\1/p' worker.lock > "$VENV/worker-pins.txt"
"$VENV/bin/python" -m pip install -q --no-deps -r "$VENV/worker-pins.txt"
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -m pip check
"$VENV/bin/python" scripts/import_worker_modules.py "$@"
