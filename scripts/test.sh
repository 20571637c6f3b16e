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

# Y6: line and branch coverage over the unit tests, fuzz replays and the faster integration
# tests (about a minute); `scripts/coverage.sh --html` runs the whole suite (about 6 minutes).
echo "== coverage"
rc=0
scripts/coverage.sh --ci || rc=$?
if [ $rc -eq 77 ]; then
  echo "coverage skipped (gcovr missing)"
elif [ $rc -ne 0 ]; then
  exit $rc
fi

if [ -x scripts/fuzz.sh ] && command -v clang >/dev/null; then
  echo "== short fuzz run"
  scripts/fuzz.sh "${P1_FUZZ_SECONDS:-30}"
fi

# Once, not as a ctest test: it builds its own copy of the tree, so under ctest it would run
# for each build directory and compete with the timing-sensitive tests for the cores.
echo "== Debian package: build, lintian, contents, unit, install/upgrade/remove/purge in a chroot"
rc=0
scripts/package-test.sh || rc=$?
if [ $rc -eq 77 ]; then
  echo "package test skipped"
elif [ $rc -ne 0 ]; then
  exit $rc
fi
echo "== all tests passed"
