#!/usr/bin/env bash
# Waits until something listens on 127.0.0.1:PORT (up to SECONDS, 10 by default).
# Usage: scripts/wait-port.sh PORT [SECONDS]
set -uo pipefail
port=$1
tries=$(( ${2:-10} * 10 ))
for _ in $(seq 1 "$tries"); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "nothing listens on port $port" >&2
exit 1
