#!/usr/bin/env bash
# HTTP load benchmark: wrk on /api/v1/meters/main/now and /metrics while p1d reads a simulated
# meter over TCP (10 telegrams/s), then checks that no telegram was dropped: every telegram the
# simulator wrote was counted by p1d and none was rejected.
# Usage: bench/http_load.sh [P1D] [SECONDS] [CONNECTIONS]
#   P1D defaults to $P1D or build/p1d; SECONDS per endpoint (default 10); CONNECTIONS (default 8,
#   the per-address limit of p1d's HTTP server: wrk connects from one address).
set -euo pipefail
p1d=${1:-${P1D:-build/p1d}}
secs=${2:-10}
conns=${3:-8}
command -v wrk >/dev/null || { echo "http_load: wrk not installed (Debian package wrk)"; exit 77; }
command -v curl >/dev/null || { echo "http_load: curl not installed"; exit 77; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port); http_port=$(free_port)
cat > "$dir/p1d.conf" <<CONF
[meter main]
tcp = 127.0.0.1:$sim_port
[store]
enabled = false
[http]
listen = 127.0.0.1:$http_port
CONF
"$p1d" simulate --listen "127.0.0.1:$sim_port" --interval 0.1 2> "$dir/sim.err" &
sim=$!; pids+=("$sim")
sleep 0.3
"$p1d" -c "$dir/p1d.conf" 2> "$dir/p1d.err" &
pids+=("$!")
base=http://127.0.0.1:$http_port
for _ in $(seq 100); do
  curl -sf "$base/api/v1/now" >/dev/null && break
  sleep 0.1
done
curl -sf "$base/api/v1/now" >/dev/null || { echo "http_load: p1d did not serve a telegram"; cat "$dir/p1d.err"; exit 1; }
for path in /api/v1/meters/main/now /metrics; do
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$base$path")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  echo "http_load: $path: $rps requests/s, p99 $p99, ${conns} connections${errs:+, $errs}"
done
kill -INT "$sim"; wait "$sim" || true
sleep 0.5
summary=$(grep "generated=" "$dir/sim.err")
written=$(sed -E 's/.*written=([0-9]+).*/\1/' <<<"$summary")
json=$(curl -sf "$base/api/v1/meters")
counted=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1])["meters"][0]; print(m["telegrams"], m["rejected"])' "$json")
read -r telegrams rejected <<<"$counted"
echo "http_load: simulator: $summary"
echo "http_load: p1d counted $telegrams telegrams, $rejected rejected; simulator wrote $written"
if [ "$telegrams" != "$written" ] || [ "$rejected" != 0 ]; then
  echo "http_load: FAIL: telegrams were dropped or rejected under load"
  exit 1
fi
echo "http_load: ok, no telegram dropped"
