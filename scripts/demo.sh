#!/usr/bin/env bash
# Run p1d on a simulated meter: the simulator writes DSMR 5 telegrams to a pseudo-terminal,
# and p1d reads it like a serial port, logging one line per telegram. Ctrl-C stops both.
# Usage: scripts/demo.sh [BUILD_DIR] [extra p1d options...]
set -euo pipefail
build=${1:-build}
shift || true
p1d="$build/p1d"
[ -x "$p1d" ] || { echo "demo: $p1d not found; build first (cmake -B build && cmake --build build)" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill $sim 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
"$p1d" simulate --pty "$dir/meter" --interval 1 &
sim=$!
for _ in $(seq 50); do [ -e "$dir/meter" ] && break; sleep 0.1; done
http=${P1D_DEMO_HTTP:-127.0.0.1:8080}
# the dashboard's files from this source tree (an installed p1d finds its own)
printf '[http]\nwww_dir = %s/web\n' "$(cd "$(dirname "$0")/.." && pwd)" >"$dir/p1d.conf"
echo "demo: simulated meter on $dir/meter; p1d reading it (Ctrl-C to stop)" >&2
echo "demo: dashboard at  http://$http/" >&2
echo "demo: try  curl http://$http/api/v1/now  or  curl -N http://$http/api/v1/events" >&2
"$p1d" -c "$dir/p1d.conf" --serial "$dir/meter" --preset 115200-8N1 --db "$dir/p1d.db" \
  --http "$http" -v -v "$@"
