#!/usr/bin/env bash
# Test matrix Y4: cppcheck (warning and portability checks) finds nothing in src/, and the p1d
# binary carries the hardening: position independent, RELRO with immediate binding, no
# executable stack, and (in optimised builds) fortified libc calls. gcc's -Wall -Wextra
# -Werror is the build itself (P1_WERROR).
set -u
src=${P1_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
p1d=${P1D:-}
fail=0
if command -v cppcheck >/dev/null; then
  if out=$(cppcheck --enable=warning,portability --error-exitcode=1 --inline-suppr -q \
             -I "$src/include" -I "$src/src" --std=c11 "$src/src" 2>&1); then
    echo "ok: cppcheck $(cppcheck --version | awk '{print $2}'): no finding in src/"
  else
    echo "FAIL: cppcheck:"; echo "$out"; fail=1
  fi
else
  echo "skip: cppcheck not installed"
fi
if [ -n "$p1d" ] && [ -x "$p1d" ] && command -v readelf >/dev/null; then
  readelf -h "$p1d" | grep -q 'Type:.*DYN' && echo "ok: PIE" || { echo "FAIL: not PIE"; fail=1; }
  readelf -l "$p1d" | grep -q GNU_RELRO && echo "ok: RELRO" || { echo "FAIL: no RELRO"; fail=1; }
  readelf -d "$p1d" | grep -qE 'BIND_NOW|Flags:.*NOW' && echo "ok: immediate binding (BIND_NOW)" ||
    { echo "FAIL: no BIND_NOW (-Wl,-z,now)"; fail=1; }
  if readelf -lW "$p1d" | grep GNU_STACK | grep -q 'RWE'; then
    echo "FAIL: executable stack"; fail=1
  else
    echo "ok: stack not executable"
  fi
  syms=$(nm -D "$p1d" 2>/dev/null)
  if printf '%s\n' "$syms" | grep -q '__asan_init\|__ubsan'; then
    echo "skip: fortify check (sanitizer build, not optimised)"
  elif printf '%s\n' "$syms" | grep -qE ' U __[a-z_]*_chk'; then
    echo "ok: fortified libc calls ($(printf '%s\n' "$syms" | grep -cE ' U __[a-z_]*_chk') *_chk)"
  else
    echo "FAIL: no fortified libc call (-D_FORTIFY_SOURCE=2 with optimisation)"; fail=1
  fi
else
  echo "skip: P1D or readelf missing"
fi
exit $fail
