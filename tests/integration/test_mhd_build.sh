#!/usr/bin/env bash
# Test matrix H6, the libmicrohttpd build check: p1d drives MHD from its own epoll loop with a
# connection timeout and a per-address limit, and uses none of MHD's request-body parsers or
# authentication helpers (its endpoints take no bodies; tokens are compared by p1d itself), so
# that their bugs cannot reach it. Checked on the binary's imported symbols (`nm -u`) and on the
# options src/http.c passes.
set -u
src=${P1_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
p1d=${P1D:-}
if [ -z "$p1d" ] || [ ! -x "$p1d" ] || ! command -v nm >/dev/null; then
  echo "skip: P1D or nm missing"; exit 77
fi
fail=0
imports=$(nm -u --with-symbol-versions "$p1d" 2>/dev/null || nm -u "$p1d")
mhd=$(printf '%s\n' "$imports" | awk '{print $2}' | sed 's/@.*//' | grep '^MHD_' | sort -u)
[ -n "$mhd" ] || { echo "FAIL: p1d imports no MHD_ symbol (not linked to libmicrohttpd?)"; exit 1; }
for f in MHD_run MHD_get_timeout MHD_get_daemon_info; do  # the external loop's calls
  printf '%s\n' "$mhd" | grep -qx "$f" && echo "ok: uses $f" ||
    { echo "FAIL: p1d does not call $f: MHD is not run from p1d's loop"; fail=1; }
done
bad=$(printf '%s\n' "$mhd" | grep -E 'post_process|PostProcessor|digest_auth|basic_auth|_auth_' || true)
if [ -n "$bad" ]; then
  echo "FAIL: p1d uses MHD parsers or authentication it should not:"; echo "$bad"; fail=1
else
  echo "ok: no post processor, digest or basic authentication symbol ($(printf '%s\n' "$mhd" | wc -l) MHD functions used)"
fi
http="$src/src/http.c"
flags=$(grep -E 'unsigned flags = MHD_USE' "$http")
if printf '%s\n' "$flags" | grep -q 'MHD_USE_EPOLL' &&
   ! printf '%s\n' "$flags" | grep -qE 'INTERNAL|THREAD|SELECT_INTERNALLY|AUTO'; then
  echo "ok: external epoll mode: ${flags#"${flags%%[![:space:]]*}"}"
else
  echo "FAIL: MHD flags are not external epoll without threads: $flags"; fail=1
fi
grep -qE 'MHD_OPTION_CONNECTION_TIMEOUT, timeout_s \? timeout_s : 1' "$http" &&
  echo "ok: connection timeout is at least 1 s" ||
  { echo "FAIL: MHD_OPTION_CONNECTION_TIMEOUT may be 0 (no timeout)"; fail=1; }
per_ip=$(sed -n 's/^#define HTTP_PER_IP_MAX \([0-9]*\).*/\1/p' "$src/src/http.h")
if grep -q 'MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_IP_MAX' "$http" && [ "${per_ip:-0}" -gt 0 ]; then
  echo "ok: per-address connection limit $per_ip"
else
  echo "FAIL: no per-address connection limit (HTTP_PER_IP_MAX '${per_ip:-}')"; fail=1
fi
exit $fail
