#!/usr/bin/env bash
# Offline check of the Worker bundle: install Node 22 + wrangler (pinned in .tools/) from
# the npm registry, then `wrangler deploy --dry-run` and assertions on what it would upload.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .tools/node_modules/node/bin/node ] || [ .tools/package-lock.json -nt .tools/node_modules/.package-lock.json ]; then
    npm ci --prefix .tools --no-audit --no-fund --loglevel=error
fi
python3 scripts/check_worker_bundle.py
