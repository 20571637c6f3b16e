#!/usr/bin/env bash
# Test matrix Y4: static analysis finds nothing new in src/ (src/*.c, src/p1/*.c, src/tools/*.c)
# and the p1d binary carries the hardening. gcc's -Wall -Wextra -Werror is the build itself
# (P1_WERROR); this runs
#  - cppcheck (warning and portability checks);
#  - gcc -fanalyzer on each file, compiled as the build compiles it (compile_commands.json in
#    the directory of $P1D): a finding must be one that fanalyzer-baseline.txt accepts (file,
#    function, warning; each with its reason), and each accepted one must still be found;
#  - clang-tidy with the repository's .clang-tidy (bugprone-*, cert-*, clang-analyzer-*);
#  - flawfinder --minlevel=4 (a line it may skip says why in its Flawfinder: ignore comment);
#  - readelf/nm on the binary: position independent, RELRO with immediate binding, no
#    executable stack, and (in optimised builds) fortified libc calls.
# gcc -fanalyzer and clang-tidy take about a minute of both cores, and what they find does not
# depend on the build: they run in the optimised build and the sanitizer build skips them.
# A tool that is not installed is skipped with a "skip:" line.
set -u
export LC_ALL=C # plain quotes in gcc's messages, one sort order
src=${P1_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
p1d=${P1D:-}
build=${p1d:+$(dirname "$p1d")}
jobs=$(nproc 2>/dev/null || echo 2)
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
syms=$( [ -n "$p1d" ] && nm -D "$p1d" 2>/dev/null)
sanitized=false
printf '%s\n' "$syms" | grep -q '__asan_init\|__ubsan' && sanitized=true
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

# The compile commands of src/ from the build's database, one per line ("directory<TAB>shell
# command"), with -fanalyzer instead of -Werror and the object file; the files they compile;
# the compiler.
db=${build:+$build/compile_commands.json}
have_db=false
if $sanitized; then
  echo "skip: gcc -fanalyzer and clang-tidy (sanitizer build; the optimised build runs them)"
elif [ -z "$db" ] || [ ! -f "$db" ]; then
  echo "skip: gcc -fanalyzer and clang-tidy: no compile_commands.json beside P1D"
elif python3 - "$db" "$src" "$tmp" <<'EOF'; then
import json, os, shlex, sys
db, src, tmp = sys.argv[1:]
src = os.path.normpath(src) + "/src/"
seen, commands = [], []
for e in json.load(open(db)):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    if not f.startswith(src) or f in seen:
        continue
    seen.append(f)
    a = e["arguments"] if "arguments" in e else shlex.split(e["command"])
    i = a.index("-o")
    a = [x for x in a[:i] + a[i + 2:] if x != "-Werror"] + ["-fanalyzer", "-o", "/dev/null"]
    commands.append(e["directory"] + "\t" + shlex.join(a))
for name, lines in ("commands", commands), ("files", seen), ("compiler", [a[0]]):
    with open(os.path.join(tmp, name), "w") as out:
        out.write("".join(line + "\n" for line in lines))
EOF
  have_db=true
else
  echo "FAIL: cannot read $db"; fail=1
fi

# gcc -fanalyzer: each file's diagnostics in a file of its own, then one line per finding,
# "file function warning line: message" (the function without gcc's .part.N suffixes), which
# is new unless fanalyzer-baseline.txt lists its first three words.
baseline=$src/tests/integration/fanalyzer-baseline.txt
if $have_db && ! "$(cat "$tmp/compiler")" -v 2>&1 | grep -q '^gcc version'; then
  echo "skip: gcc -fanalyzer (the build's compiler is not gcc)"
elif $have_db; then
  t0=$SECONDS
  awk '{print NR "\t" $0}' "$tmp/commands" | xargs -d '\n' -P "$jobs" -n 1 sh -c '
    n=${1%%	*}; line=${1#*	}; dir=${line%%	*}; cmd=${line#*	}
    cd "$dir" && eval "$cmd" >"$0/fa.$n" 2>&1 || echo "gcc: error: exit status $?" >>"$0/fa.$n"
  ' "$tmp"
  for f in "$tmp"/fa.*; do
    awk -v src="$src/" '
      /(^|: )In function / {
        fn = $0; sub(/^[^'\'']*'\''/, "", fn); sub(/'\''.*/, "", fn)
        sub(/\.(part|isra|constprop|cold)\.[0-9]+$/, "", fn)
      }
      /: At top level:/ { fn = "" }
      / (warning|error): / {
        kind = "-"; if (match($0, /\[-W[^]]*\]$/)) kind = substr($0, RSTART + 1, RLENGTH - 2)
        split($0, at, ":"); file = at[1]; sub("^" src, "", file)
        msg = $0; sub(/^[^ ]* (warning|error): /, "", msg)
        print file, (fn == "" ? "-" : fn), kind, at[2] ": " msg
      }' "$f"
  done | sort -u >"$tmp/fa.found"
  grep -v '^#' "$baseline" | awk 'NF >= 3 {print $1, $2, $3}' | sort -u >"$tmp/fa.accepted"
  new=$(awk 'FILENAME == ARGV[1] {ok[$0] = 1; next} !(($1 " " $2 " " $3) in ok)' \
          "$tmp/fa.accepted" "$tmp/fa.found")
  stale=$(awk '{print $1, $2, $3}' "$tmp/fa.found" | sort -u | comm -13 - "$tmp/fa.accepted")
  if [ -z "$new" ] && [ -z "$stale" ]; then
    echo "ok: gcc $(gcc -dumpfullversion) -fanalyzer: $(wc -l <"$tmp/commands") files," \
         "$(wc -l <"$tmp/fa.found") findings, all in $(basename "$baseline")" \
         "($((SECONDS - t0)) s)"
  else
    [ -z "$new" ] || { echo "FAIL: gcc -fanalyzer, not in $(basename "$baseline"):"; echo "$new"; }
    [ -z "$stale" ] || { echo "FAIL: $(basename "$baseline"), matching no finding (remove):"
                         echo "$stale"; }
    fail=1
  fi
fi

# clang-tidy with .clang-tidy, the project's headers included (a finding in a header is
# reported by each file that includes it: shown once)
tidy=$(command -v clang-tidy || command -v clang-tidy-14)
if $have_db && [ -n "$tidy" ]; then
  t0=$SECONDS
  xargs -d '\n' -P "$jobs" -n 1 "$tidy" -p "$build" --quiet <"$tmp/files" >"$tmp/tidy.out" \
    2>"$tmp/tidy.err"
  rc=$?
  if [ $rc -eq 0 ] && ! grep -qE ': (warning|error):' "$tmp/tidy.out"; then
    echo "ok: clang-tidy $("$tidy" --version | grep -o '[0-9]*\.[0-9.]*' | head -1):" \
         "no finding in src/ ($(wc -l <"$tmp/files") files, $((SECONDS - t0)) s)"
  else
    echo "FAIL: clang-tidy (exit status $rc):"
    grep -E ': (warning|error):' "$tmp/tidy.out" | sort -u
    grep -qE ': (warning|error):' "$tmp/tidy.out" || cat "$tmp/tidy.out" "$tmp/tidy.err"
    fail=1
  fi
elif $have_db; then
  echo "skip: clang-tidy not installed"
fi

# flawfinder: fast and independent of the build, so run in every build like cppcheck
if command -v flawfinder >/dev/null; then
  if out=$(cd "$src" && flawfinder --minlevel=4 --error-level=4 --quiet --dataonly --singleline \
             src/*.c src/p1/*.c src/tools/*.c 2>&1); then
    echo "ok: flawfinder $(flawfinder --version) --minlevel=4: no hit in src/"
  else
    echo "FAIL: flawfinder:"; echo "$out"; fail=1
  fi
else
  echo "skip: flawfinder not installed"
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
  if $sanitized; then
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
