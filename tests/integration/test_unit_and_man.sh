#!/usr/bin/env bash
# The man pages are mandoc-lint clean (warnings and above) and the systemd unit keeps its
# sandboxing: `systemd-analyze security --offline=true` exposure at most 2.0.
set -u
src=${P1_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fail=0
if command -v mandoc >/dev/null; then
  for page in "$src"/man/*.[0-9]; do
    if ! out=$(mandoc -Tlint -Wwarning "$page" 2>&1); then
      echo "FAIL: mandoc lint $page:"; echo "$out"; fail=1
    else
      echo "ok: mandoc lint $(basename "$page")"
    fi
  done
else
  echo "skip: mandoc not installed"
fi
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze security --offline=true "$src/systemd/p1d.service" 2>&1)
  score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for p1d.service: \([0-9.]*\).*/\1/p')
  if [ -z "$score" ]; then
    echo "FAIL: no exposure score from systemd-analyze:"; printf '%s\n' "$out" | tail -5; fail=1
  elif awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    echo "ok: unit exposure $score (budget 2.0)"
  else
    echo "FAIL: unit exposure $score is above 2.0"; fail=1
  fi
else
  echo "skip: systemd-analyze not available"
fi
exit $fail
