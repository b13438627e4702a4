#!/usr/bin/env bash
# Benchmarks notifyhub beside the reference peer nchan (nginx + libnginx-mod-nchan), one
# after the other on this machine, as README.md (Performance) describes: the server pinned to
# CPU 1 with one worker, the load generator pinned to CPU 0, both under `chrt -r 10`
# when allowed. Prints our figures beside nchan's and writes JSON to test-output/bench/.
# Knobs: CLIENTS (1000), IDLE_CLIENTS (10000), MESSAGES (20000), BROADCASTS (50),
#        RATE (1000/s), DURATION (10 s), TARGETS ("nchan notifyhub"; add notifyhub-pg for the
#        hub on a private PostgreSQL, pinned beside it, with the database's CPU reported too,
#        and notifyhub-2pg for two hubs on that PostgreSQL, user-targeted messages only),
#        SCENARIOS ("idle user broadcast rate ingest"), REPEAT (1: runs of each scenario but
#        idle; the table shows each figure's median over the runs, the machine being noisy),
#        HUB_BIN (the hub binary to run, default the release build: to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1000}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
MESSAGES=${MESSAGES:-20000}
BROADCASTS=${BROADCASTS:-50}
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
TARGETS=${TARGETS:-nchan notifyhub}
SCENARIOS=${SCENARIOS:-idle user broadcast rate ingest}
REPEAT=${REPEAT:-1}
STARTED=$(date +%s)
OUT=test-output/bench
mkdir -p "$OUT"

scripts/install-deps.sh
if ! [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  echo "==> installing nginx + nchan (the reference peer)"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan >/dev/null
fi
cargo build --release --locked --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
HUB_BIN=${HUB_BIN:-$BIN/notifyhub}
ulimit -n 65536 || true
RT=()
if chrt -r 10 true 2>/dev/null; then RT=(chrt -r 10); fi
SERVER=(taskset -c 1 "${RT[@]}")
LOADGEN=(taskset -c 0 "${RT[@]}" "$BIN/notifyhub-loadgen")

wait_port() {
  scripts/wait-port.sh "$1" 10
}

scenarios() { # label loadgen-target url pid [more loadgen arguments]
  local t=$1 target=$2 url=$3 pid=$4 s r
  shift 4
  local common=(--target "$target" --url "$url" --server-pid "$pid" "$@")
  for s in $SCENARIOS; do
    rm -f "$OUT/$t-$s".*.json
    # Idle runs once: a second run reuses the memory the first one's sockets freed,
    # which the process keeps, and would read as ~0 KiB per socket.
    local runs=$REPEAT
    [ "$s" = idle ] && runs=1
    for r in $(seq 1 "$runs"); do
      local json=(--json "$OUT/$t-$s.$r.json")
      case $s in
        idle) "${LOADGEN[@]}" "${common[@]}" --scenario idle --clients "$IDLE_CLIENTS" "${json[@]}" ;;
        user) "${LOADGEN[@]}" "${common[@]}" --scenario user --clients "$CLIENTS" --messages "$MESSAGES" "${json[@]}" ;;
        broadcast) "${LOADGEN[@]}" "${common[@]}" --scenario broadcast --clients "$CLIENTS" --messages "$BROADCASTS" "${json[@]}" ;;
        rate) "${LOADGEN[@]}" "${common[@]}" --scenario rate --clients "$CLIENTS" --rate "$RATE" --seconds "$DURATION" "${json[@]}" ;;
        ingest) "${LOADGEN[@]}" "${common[@]}" --scenario ingest --clients 100 --messages "$MESSAGES" "${json[@]}" ;;
        *) echo "unknown scenario $s (idle user broadcast rate ingest)" >&2; return 2 ;;
      esac
    done
    # $t-$s.json: each figure's median over the runs.
    python3 - "$OUT" "$t" "$s" <<'PY'
import glob, json, os, statistics, sys
out, t, s = sys.argv[1:]
runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, f"{t}-{s}.*.json")))]
def median(values):
    if all(isinstance(v, dict) for v in values):
        return {k: median([v[k] for v in values if k in v]) for k in values[0]}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return statistics.median(values)
    return values[0]
if runs:
    doc = {k: median([r[k] for r in runs if k in r]) for k in runs[0]}
    doc["runs"] = len(runs)
    json.dump(doc, open(os.path.join(out, f"{t}-{s}.json"), "w"), indent=2)
PY
  done
}

if [[ " $TARGETS " == *" nchan "* ]]; then
echo "==> nchan"
NCHAN_DIR=$(mktemp -d)
mkdir -p "$NCHAN_DIR/tmp"
"${SERVER[@]}" nginx -p "$NCHAN_DIR" -c "$PWD/bench/nchan.conf" -g 'daemon off;' &
NCHAN_PID=$!
wait_port 8101
WORKER=$(pgrep -P "$NCHAN_PID" nginx | head -1 || echo "$NCHAN_PID")
scenarios nchan nchan http://127.0.0.1:8101 "$WORKER" || true
kill "$NCHAN_PID"; wait "$NCHAN_PID" 2>/dev/null || true
fi

export NOTIFYHUB_JWT_SECRET=bench-secret-0123456789abcdef NOTIFYHUB_SERVICE_TOKEN=bench-service-token-0123456789

# Starts the hub pinned like any server here, with a data dir of its own, on `port`;
# stderr goes to $OUT/<name>.stderr. Sets HUB_PID.
start_hub() { # name port
  NOTIFYHUB_DATA_DIR="$(mktemp -d)" NOTIFYHUB_BIND="127.0.0.1:$2" NOTIFYHUB_WORKERS=1 \
    NOTIFYHUB_SERVICE_TOKENS=$NOTIFYHUB_SERVICE_TOKEN RUST_LOG=warn \
    "${SERVER[@]}" "$HUB_BIN" serve >/dev/null 2>"$OUT/$1.stderr" &
  HUB_PID=$!
  wait_port "$2"
}

stop_hub() {
  kill -TERM "$HUB_PID"; wait "$HUB_PID" 2>/dev/null || true
}

if [[ " $TARGETS " == *" notifyhub "* ]]; then
echo "==> notifyhub"
start_hub notifyhub 8102
scenarios notifyhub notifyhub http://127.0.0.1:8102 "$HUB_PID"
stop_hub
fi

if [[ " $TARGETS " == *" notifyhub-pg "* || " $TARGETS " == *" notifyhub-2pg "* ]]; then
scripts/install-deps.sh --with-postgres
# The server inherits the pinning, so the hub and its database share CPU 1 as the hub
# alone does above; the load generator adds the database's CPU to the table.
PG_URL=$("${SERVER[@]}" scripts/pg-test-server.sh start)
trap 'scripts/pg-test-server.sh stop' EXIT
PG_PID=$(head -n 1 "${NOTIFYHUB_TEST_PG_DIR:-/var/tmp/notifyhub-pg}/data/postmaster.pid")
# A fresh database of its own for each target.
fresh_database() { # name
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
  echo "${PG_URL%/*}/$1"
}
if [[ " $TARGETS " == *" notifyhub-pg "* ]]; then
  echo "==> notifyhub on PostgreSQL (a private server on CPU 1 with the hub)"
  DATABASE_URL=$(fresh_database bench_one_node) start_hub notifyhub-pg 8103
  scenarios notifyhub-pg notifyhub http://127.0.0.1:8103 "$HUB_PID" --database-pid "$PG_PID"
  stop_hub
fi
if [[ " $TARGETS " == *" notifyhub-2pg "* ]]; then
  # Two nodes, user-targeted messages only, with twice the requests in flight so that
  # each node sees the load one node sees above (with the same total, each would get
  # half, and its batches would shrink). Everything shares CPU 1, so the throughput
  # cannot grow here: the CPU each message costs tells what a second node adds.
  echo "==> two notifyhub nodes on one PostgreSQL (CPU 1 for all three)"
  TWO_NODES_URL=$(fresh_database bench_two_nodes)
  DATABASE_URL=$TWO_NODES_URL start_hub notifyhub-2pg-a 8104
  FIRST_PID=$HUB_PID
  DATABASE_URL=$TWO_NODES_URL start_hub notifyhub-2pg-b 8105
  SCENARIOS=user scenarios notifyhub-2pg notifyhub http://127.0.0.1:8104 "$FIRST_PID" \
    --url http://127.0.0.1:8105 --server-pid "$HUB_PID" --database-pid "$PG_PID" --in-flight 64
  stop_hub
  HUB_PID=$FIRST_PID stop_hub
fi
scripts/pg-test-server.sh stop
fi

python3 - "$OUT" "$STARTED" <<'PY'
import json, os, sys
out, started = sys.argv[1], float(sys.argv[2])
def load(t, s):
    # Only what this invocation measured: an older file would pass for a figure of this run.
    path = os.path.join(out, f"{t}-{s}.json")
    try:
        if os.path.getmtime(path) < started:
            return {}
        return json.load(open(path))
    except OSError:
        return {}
rows = [
    ("idle: RSS per socket (KiB)", "idle", "rss_kib_per_socket"),
    ("user: server CPU µs/message", "user", "server_cpu_us_per_message"),
    ("user: messages/s", "user", "sent_per_s"),
    ("user: p99 latency (ms)", "user", ("latency_ms", "p99")),
    ("broadcast: server CPU µs/delivery", "broadcast", "server_cpu_us_per_message"),
    ("broadcast: deliveries/s", "broadcast", "delivered_per_s"),
    ("rate: p50 / p99 / max (ms)", "rate", "latency_ms"),
    ("ingest: publishes/s", "ingest", "sent_per_s"),
    ("ingest: server CPU µs/publish", "ingest", "server_cpu_us_per_message"),
]
def get(d, k):
    if isinstance(k, tuple):
        v = d.get(k[0], {})
        return v.get(k[1], "—") if isinstance(v, dict) else "—"
    v = d.get(k, "—")
    if isinstance(v, dict):
        return f"{v.get('p50')} / {v.get('p99')} / {v.get('max')}"
    return v
def ratio(ours, theirs):
    # Ours over nchan's, for single figures both runs measured.
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
        return f"{ours / theirs:.2f}×"
    return ""
if any(load(t, s) for t in ("notifyhub", "nchan") for _, s, _ in rows):
    print(f"\n| {'figure':<36} | {'notifyhub':>22} | {'nchan':>22} | {'ratio':>6} |")
    print(f"|{'-'*38}|{'-'*24}|{'-'*24}|{'-'*8}|")
    for label, s, k in rows:
        ours, theirs = get(load('notifyhub', s), k), get(load('nchan', s), k)
        print(f"| {label:<36} | {str(ours):>22} | {str(theirs):>22} | {ratio(ours, theirs):>6} |")
# Where the hub's CPU went, by thread: user + kernel µs per message (per delivery, per
# publish), from /proc/PID/task over the same window as the figures above.
split = {s: load('notifyhub', s).get("server_threads", {}) for s in ("user", "broadcast", "ingest")}
names = sorted({n for d in split.values() for n in d})
if names:
    print(f"\n| {'notifyhub thread: user + kernel µs':<36} | {'user (per message)':>22} | {'broadcast (per deliv.)':>22} | {'ingest (per publish)':>22} |")
    print(f"|{'-'*38}|{'-'*24}|{'-'*24}|{'-'*24}|")
    for n in names:
        cells = []
        for s in ("user", "broadcast", "ingest"):
            t = split[s].get(n)
            # Medians of halves can come out as 0.30000000000000004.
            cells.append(f"{round(t['user_us_per_message'], 2)} + {round(t['system_us_per_message'], 2)}" if t else "—")
        print(f"| {n:<36} | {cells[0]:>22} | {cells[1]:>22} | {cells[2]:>22} |")
# The hub on PostgreSQL beside the hub on SQLite, when this invocation ran both.
if any(load('notifyhub-pg', s) for s in ("user", "broadcast", "rate", "ingest")):
    pg_rows = [
        ("user: messages/s", "user", "sent_per_s"),
        ("user: hub CPU µs/message", "user", "server_cpu_us_per_message"),
        ("user: database CPU µs/message", "user", "database_cpu_us_per_message"),
        ("broadcast: hub CPU µs/delivery", "broadcast", "server_cpu_us_per_message"),
        ("broadcast: database CPU µs/delivery", "broadcast", "database_cpu_us_per_message"),
        ("rate: p50 / p99 / max (ms)", "rate", "latency_ms"),
        ("ingest: publishes/s", "ingest", "sent_per_s"),
        ("ingest: hub CPU µs/publish", "ingest", "server_cpu_us_per_message"),
        ("ingest: database CPU µs/publish", "ingest", "database_cpu_us_per_message"),
    ]
    print(f"\n| {'figure':<36} | {'SQLite':>22} | {'PostgreSQL':>22} | {'PG/SQLite':>9} |")
    print(f"|{'-'*38}|{'-'*24}|{'-'*24}|{'-'*11}|")
    for label, s, k in pg_rows:
        lite, pg = get(load('notifyhub', s), k), get(load('notifyhub-pg', s), k)
        print(f"| {label:<36} | {str(lite):>22} | {str(pg):>22} | {ratio(pg, lite):>9} |")
# Two nodes beside one, both on PostgreSQL, when this invocation ran both.
one, two = load('notifyhub-pg', 'user'), load('notifyhub-2pg', 'user')
if one and two:
    print(f"\n| {'user-targeted, on PostgreSQL':<36} | {'one node':>22} | {'two nodes':>22} | {'two/one':>9} |")
    print(f"|{'-'*38}|{'-'*24}|{'-'*24}|{'-'*11}|")
    for label, k in (("messages/s (all on CPU 1)", "sent_per_s"), ("hubs' CPU µs/message", "server_cpu_us_per_message"),
                     ("database CPU µs/message", "database_cpu_us_per_message"), ("p99 latency (ms)", ("latency_ms", "p99"))):
        a, b = get(one, k), get(two, k)
        print(f"| {label:<36} | {str(a):>22} | {str(b):>22} | {ratio(b, a):>9} |")
    hub_one, hub_two = one.get("server_cpu_us_per_message"), two.get("server_cpu_us_per_message")
    if hub_one and hub_two:
        print(f"Two nodes with a core each (and the database with cores to match) would carry "
              f"2 × {hub_one} / {hub_two} = {2 * hub_one / hub_two:.2f}× one node's messages.")
PY
