#!/usr/bin/env bash
# Builds the web UI into frontend/dist when it is missing or older than its sources.
# Installs the npm packages first when needed (package-lock.json pins them).
set -euo pipefail
cd "$(dirname "$0")/../frontend"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing the UI's npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${1:-}" = "--force" ] || [ ! -f dist/index.html ] || [ -n "$(find src public index.html package-lock.json vite.config.ts -newer dist/index.html -print -quit)" ]; then
  echo "==> building the UI"
  npx vite build --logLevel warn
fi
