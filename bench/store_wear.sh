#!/bin/bash
# store_wear.sh - what the history store writes, measured on the real daemon and on the store
# alone. Usage: bench/store_wear.sh BUILD_DIR [DAYS_FOR_SIZE]
#
# 1. daemon: a simulated day of 86400 one-second DSMR 5 telegrams piped into `p1d --file -`
#    with the default [store] settings (HTTP off); write_bytes of /proc/<pid>/io once the day
#    is ingested (before the shutdown commit). At full speed the daemon commits every
#    STORE_BATCH_MAX readings instead of every 60 s, so this is a lower bound for a live meter.
# 2. bench_store: the same day at the live commit pattern (a commit every 60 readings = every
#    60 s at 1 telegram/s), for DAYS_FOR_SIZE days (default 365): bytes per day, database size,
#    time of a year of hourly history; then `p1d history` answering that year.
set -euo pipefail
build=${1:?usage: store_wear.sh BUILD_DIR [DAYS]}
days=${2:-365}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
p1d=$build/p1d

"$p1d" simulate --dialect dsmr5 --start 2026-06-01T00:00:00Z --step 1 --count 86400 \
	--interval 0 >"$tmp/day.txt" 2>/dev/null
printf '[http]\nlisten =\n[store]\ndatabase = %s/daemon.db\n' "$tmp" >"$tmp/p1d.conf"
mkfifo "$tmp/fifo"
"$p1d" -c "$tmp/p1d.conf" --file - --pace fast <"$tmp/fifo" 2>"$tmp/daemon.log" &
pid=$!
exec 3>"$tmp/fifo"
start=$(date +%s.%N)
cat "$tmp/day.txt" >&3
# wait until the daemon has read everything and stopped writing
last=-1
while :; do
	sleep 1
	now=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
	rchar=$(awk '/^rchar/ {print $2}' "/proc/$pid/io")
	if [ "$now" = "$last" ] && [ "$rchar" -ge "$(stat -c %s "$tmp/day.txt")" ]; then
		break
	fi
	last=$now
done
end=$(date +%s.%N)
exec 3>&-
wait $pid || true
echo "daemon: 86400 telegrams ingested in $(echo "$end - $start - 1" | bc) s," \
	"write_bytes $last ($(echo "scale=2; $last / 1000000" | bc) MB) before the shutdown commit;" \
	"database $(stat -c %s "$tmp/daemon.db") bytes"

"$build/bench_store" --days "$days" "$tmp/year.db" | tail -5
start=$(date +%s.%N)
rows=$("$p1d" history --db "$tmp/year.db" --resolution hour --from 2025-01-01 --to 2026-01-01 | wc -l)
end=$(date +%s.%N)
echo "p1d history --resolution hour for a year: $((rows - 1)) rows in" \
	"$(echo "($end - $start) * 1000" | bc | cut -d. -f1) ms (whole process)"
