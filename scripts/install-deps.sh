#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when missing:
# pkg-config and libssl-dev (web-push's ece links OpenSSL), PostgreSQL (tests run on it).
# Usage: scripts/install-deps.sh [--with-postgres]
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
if [[ " $* " == *" --with-postgres "* ]]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "==> installing Debian packages: ${need[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
