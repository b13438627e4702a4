#!/usr/bin/env bash
# Runs the hub on the embedded SQLite default (data in ./data), serving the web UI at /,
# and prints a ready login link for a demo user. Every NOTIFYHUB_* / DATABASE_URL /
# SMTP_* / TWILIO_* variable of the README is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build-ui.sh
export NOTIFYHUB_UI_DIR="${NOTIFYHUB_UI_DIR:-$PWD/frontend/dist}"

echo "==> building notifyhub (release; the first build takes several minutes)"
cargo build --release --locked --bin notifyhub
bin="${CARGO_TARGET_DIR:-target}/release/notifyhub"

bind="${NOTIFYHUB_BIND:-127.0.0.1:8080}"
demo_user="${NOTIFYHUB_DEMO_USER:-00000000-0000-4000-8000-000000000001}"
token="$("$bin" token --user "$demo_user" --role user --ttl 12h)"
service_token="$("$bin" token --role service --ttl 12h)"
host="${bind%:*}"
[ "$host" != "0.0.0.0" ] || host=127.0.0.1
cat <<MSG

  notifyhub is starting on http://${bind}/
  Log in as the demo trader (link valid 12 h):
    http://${host}:${bind##*:}/#token=${token}
  Post an event to the demo trader (service token valid 12 h):
    curl -X POST http://${host}:${bind##*:}/api/v1/events -H 'Content-Type: application/json' \
      -H "Authorization: Bearer ${service_token}" \
      -d '{"type":"emergency_exit","user_id":"${demo_user}","exit":{"campaign_id":"C-1","symbol":"AAPL","reason":"creek breached","positions_closed":2}}'

  Stop with Ctrl-C.

MSG
exec "$bin" serve
