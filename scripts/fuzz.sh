#!/usr/bin/env bash
# Build the libFuzzer targets of tests/fuzz (fuzz_<name>.c) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and run each for SECONDS (default 60), as many at a time as there
# are cores. Each run starts from a copy of tests/fuzz/corpus/<name>, so the committed corpus is
# only changed on request (--merge). libp1 is compiled directly from src/p1 into every target,
# so fuzzing libp1 needs clang and libcrypto only. A target whose source says "fuzz.sh: daemon"
# (fuzz_config.c, fuzz_http.c) also gets the daemon's services: src/*.c but main.c and
# src/tools/*.c, compiled once per run into $P1_FUZZ_DIR/obj with the same instrumentation,
# and the libraries p1d links (pkg-config, as CMakeLists.txt).
#
# Each target runs with tests/fuzz/<name>.dict when there is one, else tests/fuzz/p1.dict.
#
# Usage: scripts/fuzz.sh [--merge] [SECONDS] [NAME...]
#   --merge   afterwards, add the inputs that reached new code to tests/fuzz/corpus/NAME
#             (libFuzzer -merge=1: existing files, seeds and regression inputs stay)
# Environment: P1_FUZZ_DIR (work directory, default build-fuzz), P1_FUZZ_JOBS (parallel runs).
#
# Limits are those of the test matrix (P1): inputs up to 16 KiB, 1 s per input, 256 MB RSS.
# ASan's quarantine of freed memory is capped at 64 MB so that the RSS limit measures libp1,
# not the sanitizer. Exit status 1 when any target found a crash, leak, timeout or
# out-of-memory; the input that did it is under $P1_FUZZ_DIR/artifacts/NAME/.
set -euo pipefail
cd "$(dirname "$0")/.."

merge=0
if [ "${1:-}" = "--merge" ]; then
  merge=1
  shift
fi
seconds=${1:-60}
shift || true
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [--merge] [SECONDS] [NAME...]" >&2; exit 2 ;;
esac
dir=${P1_FUZZ_DIR:-build-fuzz}
jobs=${P1_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
cc=${CC_FUZZ:-clang}

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for src in tests/fuzz/fuzz_*.c; do
    n=${src#tests/fuzz/fuzz_}
    names+=("${n%.c}")
  done
fi

mkdir -p "$dir/bin" "$dir/logs"
base=(-g -O1 -std=gnu11 -D_GNU_SOURCE -fno-omit-frame-pointer -fno-sanitize-recover=undefined
      -Iinclude)
flags=("${base[@]}" -fsanitize=fuzzer,address,undefined)
daemon_pkgs=(libserialport libsystemd inih libmicrohttpd jansson sqlite3 libmosquitto avahi-client)

needs_daemon() { # name
  grep -q 'fuzz\.sh: daemon' "tests/fuzz/fuzz_$1.c"
}

# The daemon's services as instrumented objects in $dir/obj (fuzzer-no-link: coverage without
# a second main), with version.h as CMake would write it; as many compilers at a time as jobs.
build_daemon() {
  local version src obj pids=()
  version=$(sed -n 's/^project(p1d VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
  rm -rf "$dir/obj"
  mkdir -p "$dir/obj" "$dir/generated"
  sed -e "s/@PROJECT_VERSION@/$version/" -e "s/@P1D_BUILD_UTC@/${SOURCE_DATE_EPOCH:-$(date +%s)}/" \
    src/version.h.in >"$dir/generated/version.h"
  for src in src/*.c src/tools/*.c; do
    [ "$src" = src/main.c ] && continue
    obj=${src#src/}
    obj=$dir/obj/${obj//\//_}
    "$cc" "${base[@]}" -fsanitize=fuzzer-no-link,address,undefined -Isrc -I"$dir/generated" \
      $(pkg-config --cflags "${daemon_pkgs[@]}") -c "$src" -o "${obj%.c}.o" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
      wait "${pids[0]}"
      pids=("${pids[@]:1}")
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

echo "== building ${#names[@]} fuzz targets with $cc"
daemon_built=0
for n in "${names[@]}"; do
  [ -f "tests/fuzz/fuzz_$n.c" ] || { echo "fuzz.sh: no tests/fuzz/fuzz_$n.c" >&2; exit 2; }
  if needs_daemon "$n"; then
    if [ $daemon_built = 0 ]; then
      echo "   (the daemon's services, once)"
      build_daemon
      daemon_built=1
    fi
    "$cc" "${flags[@]}" -Isrc -I"$dir/generated" $(pkg-config --cflags "${daemon_pkgs[@]}") \
      src/p1/*.c "tests/fuzz/fuzz_$n.c" "$dir"/obj/*.o \
      $(pkg-config --libs "${daemon_pkgs[@]}") -lcrypto -lm -o "$dir/bin/fuzz_$n"
  else
    "$cc" "${flags[@]}" src/p1/*.c "tests/fuzz/fuzz_$n.c" -lcrypto -o "$dir/bin/fuzz_$n"
  fi
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=64:malloc_context_size=20}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run() { # name
  local n=$1 work=$dir/corpus/$1 art=$dir/artifacts/$1 dict=tests/fuzz/$1.dict
  [ -f "$dict" ] || dict=tests/fuzz/p1.dict
  rm -rf "$work" "$art"
  mkdir -p "$work" "$art"
  [ -d "tests/fuzz/corpus/$n" ] && cp tests/fuzz/corpus/"$n"/* "$work"/ 2>/dev/null || true
  "$dir/bin/fuzz_$n" -max_len=16384 -timeout=1 -rss_limit_mb=256 -max_total_time="$seconds" \
    -print_final_stats=1 -dict="$dict" -artifact_prefix="$art/" "$work" \
    >"$dir/logs/$n.log" 2>&1
}

echo "== running each target for $seconds s, $jobs at a time (logs in $dir/logs)"
declare -A status
pending=("${names[@]}")
while [ ${#pending[@]} -gt 0 ]; do
  batch=("${pending[@]:0:$jobs}")
  pending=("${pending[@]:$jobs}")
  pids=()
  for n in "${batch[@]}"; do
    run "$n" &
    pids+=($!)
  done
  for i in "${!batch[@]}"; do
    if wait "${pids[$i]}"; then status[${batch[$i]}]=ok; else status[${batch[$i]}]=FAILED; fi
  done
done

stat_of() { # log key
  sed -n "s/^stat::$2: *//p" "$1" | tail -n 1
}

failed=0
printf '\n%-10s %12s %9s %9s %8s %8s  %s\n' target execs execs/s corpus new_units rss_mb result
for n in "${names[@]}"; do
  log=$dir/logs/$n.log
  printf '%-10s %12s %9s %9s %8s %8s  %s\n' "$n" "$(stat_of "$log" number_of_executed_units)" \
    "$(stat_of "$log" average_exec_per_sec)" "$(ls "$dir/corpus/$n" | wc -l)" \
    "$(stat_of "$log" new_units_added)" "$(stat_of "$log" peak_rss_mb)" "${status[$n]}"
  if [ "${status[$n]}" != ok ]; then
    failed=1
    what=$(grep -m1 -E 'ERROR: |runtime error|invariant|P2 violated|JSON' "$log" || echo 'see log')
    echo "-- $n: $what"
    ls "$dir/artifacts/$n"/* 2>/dev/null | sed 's/^/   input: /'
  fi
done

if [ $merge = 1 ] && [ $failed = 0 ]; then
  echo "== merging new coverage into tests/fuzz/corpus"
  for n in "${names[@]}"; do
    mkdir -p "tests/fuzz/corpus/$n"
    before=$(ls "tests/fuzz/corpus/$n" | wc -l)
    "$dir/bin/fuzz_$n" -merge=1 -max_len=16384 -timeout=1 -rss_limit_mb=256 \
      "tests/fuzz/corpus/$n" "$dir/corpus/$n" >"$dir/logs/$n.merge.log" 2>&1
    echo "$n: $before -> $(ls "tests/fuzz/corpus/$n" | wc -l) inputs"
  done
fi
exit $failed
