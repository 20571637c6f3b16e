#!/usr/bin/env bash
# Build p1d and run every test: a release build (warnings are errors), then the whole suite
# again under AddressSanitizer + UndefinedBehaviorSanitizer, then a short libFuzzer run.
# Usage: scripts/test.sh [--quick]    (--quick: release build only)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

build_and_test() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DP1_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs"
}

echo "== release build and tests"
build_and_test build -DCMAKE_BUILD_TYPE=RelWithDebInfo
[ "${1:-}" = "--quick" ] && exit 0

echo "== ASan + UBSan build and tests"
build_and_test build-asan -DCMAKE_BUILD_TYPE=Debug -DP1_SANITIZE=ON

if [ -x scripts/fuzz.sh ] && command -v clang >/dev/null; then
  echo "== short fuzz run"
  scripts/fuzz.sh "${P1_FUZZ_SECONDS:-30}"
fi
echo "== all tests passed"
