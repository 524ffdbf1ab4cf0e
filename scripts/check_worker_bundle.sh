#!/usr/bin/env bash
# Offline check of what `pywrangler deploy` would upload: install Node 22 + wrangler (pinned
# in .tools/) from the npm registry, lay out python_modules/ from the locked wheels as
# pywrangler's sync does, then `wrangler deploy --dry-run` and assertions on the upload.
# Needs `make tools` first (the locked wheels and pywrangler itself, from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .tools/node_modules/node/bin/node ] || [ .tools/package-lock.json -nt .tools/node_modules/.package-lock.json ]; then
    npm ci --prefix .tools --no-audit --no-fund --loglevel=error
fi
python3 scripts/check_worker_bundle.py
