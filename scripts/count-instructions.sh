#!/usr/bin/env bash
# Counts the hub's instructions per user-targeted message and per broadcast delivery with
# valgrind's callgrind: figures that do not move with this shared machine's load, where
# scripts/bench.sh's CPU times do (README.md, Performance; docs/performance.md).
#
# For each scenario the hub runs under callgrind with one worker; the load generator warms
# it up, then sends a small and a large round, with callgrind's counters zeroed before and
# dumped after each. Per message: (large − small) / (large count − small count), so
# start-up and the clients' connects cancel out. Split by thread: the request thread
# (HTTP, JSON, rules, sockets), the SQLite writer, the checkpoint thread, the rest. One
# build's runs differ by a few thousand instructions per user-targeted message (valgrind's
# scheduling makes the batches), a few hundred per broadcast delivery.
#
# Knobs: HUB_BIN (another build of the hub, to compare two builds), SCENARIOS ("user
# broadcast"), CLIENTS (200), IN_FLIGHT (16), KEEP (a directory: keep each scenario's
# callgrind dumps there, to read function by function with `callgrind_annotate
# --inclusive=yes KEEP/SCENARIO/cg.out.2-NN`; the busiest file is the request thread). valgrind runs the threads one at a time, so
# batches are smaller than in the benchmark: compare these figures with each other only.
# Output: a table, and JSON in test-output/instructions/.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-user broadcast}
CLIENTS=${CLIENTS:-200}
IN_FLIGHT=${IN_FLIGHT:-16}
OUT=test-output/instructions
PORT=8190
mkdir -p "$OUT"

if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  echo "==> installing valgrind"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
scripts/install-deps.sh
cargo build --release --locked --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
HUB_BIN=${HUB_BIN:-$BIN/notifyhub}
export NOTIFYHUB_JWT_SECRET=count-secret-0123456789abcdef NOTIFYHUB_SERVICE_TOKEN=count-service-token-0123456789

# Sizes of the warm-up, small and large rounds, per scenario.
rounds() {
  case $1 in
    user) echo "1000 1000 3000" ;;
    broadcast) echo "20 20 60" ;;
    *) echo "unknown scenario $1 (user broadcast)" >&2; return 2 ;;
  esac
}

for s in $SCENARIOS; do
  read -r warm small large < <(rounds "$s")
  dir=$(mktemp -d)
  echo "==> $s: callgrind on $HUB_BIN ($CLIENTS clients; rounds of $small and $large)"
  NOTIFYHUB_DATA_DIR="$dir/data" NOTIFYHUB_BIND="127.0.0.1:$PORT" NOTIFYHUB_WORKERS=1 \
    NOTIFYHUB_SERVICE_TOKENS=$NOTIFYHUB_SERVICE_TOKEN RUST_LOG=warn \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg.out" \
    "$HUB_BIN" serve >/dev/null 2>"$dir/valgrind.log" &
  hub=$!
  # Under valgrind the hub takes its time to start.
  scripts/wait-port.sh "$PORT" 120
  load=("$BIN/notifyhub-loadgen" --target notifyhub --url "http://127.0.0.1:$PORT" --scenario "$s"
    --clients "$CLIENTS" --in-flight "$IN_FLIGHT")
  "${load[@]}" --messages "$warm" >/dev/null
  callgrind_control -z "$hub" >/dev/null 2>&1
  "${load[@]}" --messages "$small" >/dev/null
  callgrind_control -d small "$hub" >/dev/null 2>&1
  callgrind_control -z "$hub" >/dev/null 2>&1
  "${load[@]}" --messages "$large" >/dev/null
  callgrind_control -d large "$hub" >/dev/null 2>&1
  kill -TERM "$hub"; wait "$hub" 2>/dev/null || true
  # Deliveries per round: messages for user, messages × clients for broadcast.
  per=1; [ "$s" = broadcast ] && per=$CLIENTS
  python3 - "$dir" "$s" "$(( (large - small) * per ))" "$OUT/$s.json" <<'PY'
import glob, json, re, sys
d, scenario, units, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# A thread is named by what runs on it (callgrind's files carry no thread names).
# First match wins: the writer may complete a checkpoint itself. The rest ("other") is
# mostly the clients' connects on tokio's blocking threads, which each round repeats:
# its total cancels out, but not thread by thread, as the pool's threads come and go.
KINDS = [("sqlite_writer", "sqlite_writer::Writer::write_batch"),
         ("checkpoints", "walCheckpoint"),
         ("request_thread", "actix_http::h1::dispatcher")]
def read(part):
    totals = {}
    for f in glob.glob(f"{d}/cg.out.{part}-*"):
        text = open(f, errors="replace").read()
        m = re.search(r"^summary: (\d+)", text, re.M)
        if not m:
            continue
        kind = next((k for k, marker in KINDS if marker in text), "other")
        totals[kind] = totals.get(kind, 0) + int(m.group(1))
    return totals
small, large = read(1), read(2)
if not small or not large:
    sys.exit(f"no callgrind dumps in {d}")
split = {k: round((large.get(k, 0) - small.get(k, 0)) / units) for k in set(small) | set(large)}
doc = {"scenario": scenario, "unit": "delivery" if scenario == "broadcast" else "message",
       "instructions": sum(split.values()), "by_thread": split}
json.dump(doc, open(out, "w"), indent=2)
parts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(split.items(), key=lambda kv: -kv[1]))
print(f"{scenario}: {doc['instructions']:,} instructions per {doc['unit']} ({parts})")
PY
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP/$s"
    cp "$dir"/cg.out* "$KEEP/$s/"
    echo "    callgrind dumps kept in $KEEP/$s (cg.out.1-*: small round, cg.out.2-*: large round)"
  fi
  rm -rf "$dir"
done
