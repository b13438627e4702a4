#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when missing:
# pkg-config and libssl-dev (web-push's ece links OpenSSL), make (the build compiles
# jemalloc, the hub's allocator), PostgreSQL (tests run on it).
# With --with-postgres (the test script), also PostgreSQL and aiosmtpd (a real SMTP server).
# Usage: scripts/install-deps.sh [--with-postgres]
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v make >/dev/null 2>&1 || need+=(make)
if [[ " $* " == *" --with-postgres "* ]]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  # The UI's end-to-end tests drive Debian's Chromium (browser downloads are impossible here).
  [ -x /usr/bin/chromium ] || need+=(chromium)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The email tests talk to a real SMTP server (aiosmtpd): from PyPI into the python3 on PATH
# when pip may install there, else Debian's python3-aiosmtpd (Debian's own Python is
# "externally managed" and may have no pip); the tests use whichever Python has it.
if [[ " $* " == *" --with-postgres "* ]] && ! python3 -c "import aiosmtpd" >/dev/null 2>&1 \
  && ! /usr/bin/python3 -c "import aiosmtpd" >/dev/null 2>&1; then
  echo "==> installing aiosmtpd (the tests' SMTP server)"
  if ! python3 -m pip install --quiet --disable-pip-version-check aiosmtpd 2>/dev/null; then
    echo "    pip cannot install here; using Debian's python3-aiosmtpd"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-aiosmtpd >/dev/null
  fi
fi
