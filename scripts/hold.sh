#!/usr/bin/env bash
# Holds SOCKETS WebSocket clients (50,000) across NODES hubs (3) on one PostgreSQL, then
# sends one event to every user and checks that every socket is still open and got it.
# One process here may open at most `ulimit -Hn` files (20,000 on the development
# machine, which cannot raise it), so the sockets are spread over several nodes, each
# with a load generator of its own. Writes JSON to test-output/hold/ and prints a table.
# Knobs: SOCKETS, NODES, HOLD (seconds to wait for the toasts, 120).
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKETS=${SOCKETS:-50000}
NODES=${NODES:-3}
HOLD=${HOLD:-120}
OUT=test-output/hold
rm -rf "$OUT"
mkdir -p "$OUT"

scripts/install-deps.sh --with-postgres
cargo build --release --locked --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
ulimit -n "$(ulimit -Hn)"
PER=$(((SOCKETS + NODES - 1) / NODES))
if ((PER + 1000 > $(ulimit -n))); then
  echo "each node would hold $PER sockets, past this machine's open-file limit ($(ulimit -n)): raise NODES" >&2
  exit 2
fi

PG_URL=$(scripts/pg-test-server.sh start | tail -n 1)
HUBS=()
cleanup() {
  for pid in "${HUBS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${HUBS[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/pg-test-server.sh stop
}
trap cleanup EXIT
PGOPTIONS='--client-min-messages=warning' psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS hold" -c "CREATE DATABASE hold" >/dev/null
export DATABASE_URL="${PG_URL%/*}/hold"
export NOTIFYHUB_JWT_SECRET=hold-secret-0123456789abcdef NOTIFYHUB_SERVICE_TOKEN=hold-service-token-0123456789

wait_port() { # port node
  scripts/wait-port.sh "$1" 30 || { echo "node $2 did not start (see $OUT/node-$2.stderr)" >&2; return 1; }
}

for i in $(seq 1 "$NODES"); do
  port=$((8120 + i))
  NOTIFYHUB_DATA_DIR="$(mktemp -d)" NOTIFYHUB_BIND="127.0.0.1:$port" \
    NOTIFYHUB_SERVICE_TOKENS=$NOTIFYHUB_SERVICE_TOKEN RUST_LOG=warn \
    "$BIN/notifyhub" serve >/dev/null 2>"$OUT/node-$i.stderr" &
  HUBS+=($!)
  wait_port "$port" "$i"
done

echo "==> $NODES nodes, $PER sockets each"
LOADGENS=()
for i in $(seq 1 "$NODES"); do
  "$BIN/notifyhub-loadgen" --scenario idle --clients "$PER" --url "http://127.0.0.1:$((8120 + i))" \
    --server-pid "${HUBS[$((i - 1))]}" --hold-seconds "$HOLD" --ready-file "$OUT/ready-$i" \
    --json "$OUT/node-$i.json" >/dev/null 2>"$OUT/loadgen-$i.stderr" &
  LOADGENS+=($!)
done

# Every load generator connected (or gave up): then one event to every user.
for _ in $(seq 1 1800); do
  done_count=0
  for i in $(seq 1 "$NODES"); do
    if [ -f "$OUT/ready-$i" ] || ! kill -0 "${LOADGENS[$((i - 1))]}" 2>/dev/null; then done_count=$((done_count + 1)); fi
  done
  [ "$done_count" -eq "$NODES" ] && break
  sleep 0.2
done
connected=$(cat "$OUT"/ready-* 2>/dev/null | awk '{s += $1} END {printf "%d", s}')
echo "==> $connected sockets connected; one event to every user"
sent_at=$(($(date +%s%N) / 1000))
curl -sS -o "$OUT/event.json" -w '%{http_code}\n' -X POST "http://127.0.0.1:8121/api/v1/events" \
  -H "Authorization: Bearer $NOTIFYHUB_SERVICE_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"type\":\"notification\",\"audience\":\"all\",\"notification_type\":\"system_error\",\"priority\":\"info\",\"title\":\"hold\",\"message\":\"every socket\",\"metadata\":{\"sent_at_us\":$sent_at}}" \
  >"$OUT/event.status"
echo "==> event answered $(cat "$OUT/event.status"): $(cat "$OUT/event.json")"
status=0
for pid in "${LOADGENS[@]}"; do wait "$pid" || status=1; done

python3 - "$OUT" "$NODES" "$SOCKETS" "$status" <<'PY'
import json, os, sys
out, nodes, sockets, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
runs = []
for i in range(1, nodes + 1):
    try:
        runs.append(json.load(open(os.path.join(out, f"node-{i}.json"))))
    except OSError:
        runs.append({})
total = {k: sum(r.get(k, 0) for r in runs) for k in ("clients", "held", "delivered")}
rss = [r.get("rss_kib_per_socket") for r in runs if r.get("rss_kib_per_socket") is not None]
p99 = max((r.get("latency_ms", {}).get("p99", 0) for r in runs), default=0)
print(f"\n| {'node':<6} | {'connected':>9} | {'held':>6} | {'toasts':>6} | {'KiB/socket':>10} | {'toast p99 ms':>12} |")
print(f"|{'-'*8}|{'-'*11}|{'-'*8}|{'-'*8}|{'-'*12}|{'-'*14}|")
for i, r in enumerate(runs, 1):
    print(f"| {i:<6} | {r.get('clients', 0):>9} | {r.get('held', 0):>6} | {r.get('delivered', 0):>6} | "
          f"{r.get('rss_kib_per_socket', '—'):>10} | {r.get('latency_ms', {}).get('p99', '—'):>12} |")
print(f"| {'all':<6} | {total['clients']:>9} | {total['held']:>6} | {total['delivered']:>6} | "
      f"{round(sum(rss) / len(rss), 2) if rss else '—':>10} | {p99:>12} |")
json.dump({"nodes": nodes, **total, "rss_kib_per_socket": rss, "toast_p99_ms": p99}, open(os.path.join(out, "hold.json"), "w"), indent=2)
ok = status == 0 and total["clients"] >= sockets and total["held"] >= sockets and total["delivered"] >= sockets
print("all held, every socket got its toast" if ok else f"NOT all held: {total} of {sockets}")
sys.exit(0 if ok else 1)
PY
