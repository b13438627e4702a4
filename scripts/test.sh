#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, and the integration tests on
# SQLite and on a private PostgreSQL server started here (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --with-postgres

echo "==> starting a private PostgreSQL on loopback"
NOTIFYHUB_TEST_PG_URL="$(scripts/pg-test-server.sh start)"
export NOTIFYHUB_TEST_PG_URL
# The PostgreSQL tests fail instead of skipping when the server is missing.
export NOTIFYHUB_TEST_REQUIRE_PG=1
trap 'scripts/pg-test-server.sh stop' EXIT
echo "    $NOTIFYHUB_TEST_PG_URL"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo doc (broken or private intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --locked

echo "==> cargo test (SQLite and PostgreSQL)"
# A hung test must fail the run, not eat CI's whole budget.
timeout --signal=KILL 1800 cargo test --all-targets --locked

echo "==> web UI: lint, type-check, unit and component tests, build"
scripts/build-ui.sh --force
(
  cd frontend
  npx eslint .
  npx vue-tsc --noEmit
  npx vitest run
)

echo "==> web UI end to end: Chromium against the real hub"
export NOTIFYHUB_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/notifyhub"
(cd frontend && timeout --signal=KILL 600 node --test --test-concurrency=1 e2e/)
