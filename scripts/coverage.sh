#!/usr/bin/env bash
# Line coverage of the Rust code by the Rust tests (unit, load generator, and the
# integration tests on SQLite and on a private PostgreSQL, the hub processes they start
# included), with cargo-llvm-cov; installs it and LLVM's tools when missing. Prints the
# summary and writes an HTML report to test-output/coverage/. The web UI's own tests
# (Vitest, Chromium) are not counted here.
# Usage: scripts/coverage.sh            (MIN=80 scripts/coverage.sh fails below 80 % of lines)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --with-postgres
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  echo "==> installing LLVM's tools (rustup component llvm-tools-preview)"
  rustup component add llvm-tools-preview
fi
if ! command -v cargo-llvm-cov >/dev/null 2>&1; then
  echo "==> installing cargo-llvm-cov"
  cargo install cargo-llvm-cov --locked
fi

echo "==> starting a private PostgreSQL on loopback"
NOTIFYHUB_TEST_PG_URL="$(scripts/pg-test-server.sh start)"
export NOTIFYHUB_TEST_PG_URL
export NOTIFYHUB_TEST_REQUIRE_PG=1
trap 'scripts/pg-test-server.sh stop' EXIT

# The UI's assets are served by the hub under test; build them as the tests expect.
scripts/build-ui.sh

echo "==> cargo llvm-cov (an instrumented build of its own, then every Rust test)"
# `vendor/` (the patched actix-http) is not ours to measure.
cargo llvm-cov --all-targets --locked --ignore-filename-regex '(^|/)vendor/' --html \
  --output-dir test-output/coverage
cargo llvm-cov report --ignore-filename-regex '(^|/)vendor/' --summary-only | tee test-output/coverage/summary.txt
if [ -n "${MIN:-}" ]; then
  cargo llvm-cov report --ignore-filename-regex '(^|/)vendor/' --fail-under-lines "$MIN" >/dev/null
fi
echo "HTML report: test-output/coverage/html/index.html"
