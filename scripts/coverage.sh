#!/usr/bin/env bash
# Line and branch coverage of src/ (test matrix Y6), measured with gcov and reported by gcovr.
#
# Builds a --coverage tree (-O0, no sanitizers) in its own directory, runs ctest there, then
# prints a table per file (lines and branches) with the totals, and fails when
#   - the overall line coverage is below 85 %, or
#   - framer, CRC, parser or decoder (src/p1/{framer,crc16,parse,decoder}.c) is below 95 % of
#     lines or 90 % of branches.
# The integration tests run the instrumented p1d, so what they reach counts too: gcov writes
# its counts when a process exits (p1d exits 0 on SIGTERM); a process killed with SIGKILL adds
# nothing (test_store's kill -9 loop, on purpose, and test_mqtt's daemons, stopped so).
# Counts belong to the sources as built: rebuild (the default) after editing them.
#
# Usage: scripts/coverage.sh [--ci] [--html] [--no-build] [--report] [--dir DIR] [-- CTEST_ARGS...]
#   --ci        the part scripts/test.sh runs: unit tests, fuzz replays and the short
#               integration tests (CI_TESTS below). The same thresholds: what a subset covers
#               is a lower bound of what the whole suite covers.
#   --html      also write an HTML report, DIR/coverage/index.html (a page per file)
#   --no-build  use DIR as it is (its counters are still reset before the tests run)
#   --report    no build, no tests: report the counts DIR holds (e.g. after running one test
#               by hand)
#   --dir DIR   build directory (default build-cov)
#   CTEST_ARGS  passed to ctest after the script's own, e.g. -- -R unit/ to measure a subset
#               (a -E there replaces COV_EXCLUDE below)
# Exit status: 0 thresholds met, 1 not met or a test failed, 77 gcovr missing.
#
# What counts: src/ (the daemon, libp1 and the tools: p1d decode, simulate, history, import,
# which ship in the same binary and which the integration tests run). Not counted: tests/,
# bench/ and the generated headers in the build directory (version.h).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

LINE_MIN=85                 # overall, lines
CORE_LINE_MIN=95            # each core file, lines
CORE_BRANCH_MIN=90          # each core file, branches
CORE_FILES=(src/p1/framer.c src/p1/crc16.c src/p1/parse.c src/p1/decoder.c)
# --ci: every unit test and fuzz replay, and the integration tests that run p1d for a short
# while (about a minute in all on 2 cores). Left to the full run: the MQTT, fault, daemon,
# store and serial tests (about 4 of the 5 to 6 minutes the whole suite takes here).
CI_TESTS='^(unit|fuzz)/|^integration/test_(http|http_edges|simulate|version|dashboard|mdns)$|^bench/e2e_quick$'
# Never under coverage (they run in the release and sanitizer builds): the out-of-memory sweep
# (D6), which fails every allocation in turn and at -O0 with gcov runs past its ctest timeout
# (over 20 minutes); and the checks that run none of our code (static analysis, which also
# compiles src/ in the build directory, man pages and unit file, MHD symbols).
COV_EXCLUDE='^unit/test_oom$|^integration/test_(static_analysis|unit_and_man|mhd_build)$'

dir=build-cov ci=0 html=0 build=1 run=1 ctest_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--ci) ci=1 ;;
	--html) html=1 ;;
	--no-build) build=0 ;;
	--report) build=0 run=0 ;;
	--dir) dir=$2; shift ;;
	--) shift; ctest_args=("$@"); break ;;
	*) echo "usage: $0 [--ci] [--html] [--no-build] [--report] [--dir DIR] [-- CTEST_ARGS...]" >&2
	   exit 2 ;;
	esac
	shift
done

if ! command -v gcovr >/dev/null; then
	echo "coverage: gcovr not installed (scripts/deps.sh installs it)" >&2
	exit 77
fi

t0=$SECONDS
if [ $build -eq 1 ]; then
	# Debug is -g without -O: -O0, so lines and branches are the source's own
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DP1_WERROR=ON -DP1_SANITIZE=OFF \
		-DP1_FUZZ=OFF -DCMAKE_C_FLAGS="--coverage -O0" >/dev/null
	cmake --build "$dir" -j"$jobs"
fi
t_build=$((SECONDS - t0))

t1=$SECONDS
tests_ok=1
if [ $run -eq 1 ]; then
	# counts from an earlier run would add up with this one
	find "$dir" -name '*.gcda' -delete
	[ $ci -eq 1 ] && ctest_args=(-R "$CI_TESTS" "${ctest_args[@]}")
	ctest --test-dir "$dir" --output-on-failure -j"$jobs" -E "$COV_EXCLUDE" "${ctest_args[@]}" ||
		tests_ok=0
fi
t_test=$((SECONDS - t1))

# gcov once, into gcovr's JSON; every report below is made from that file. Only the targets'
# object directories are searched: a tool run in the build directory may leave other .gcno
# files there, from another version of a source file.
t2=$SECONDS
json=$dir/coverage.json summary=$dir/coverage-summary.json
gcovr -r "$root" "$dir/CMakeFiles" "$dir/tests/CMakeFiles" -j"$jobs" --filter 'src/' \
	--exclude-unreachable-branches --json "$json"
reports=(--json-summary "$summary")
if [ $html -eq 1 ]; then
	mkdir -p "$dir/coverage"
	reports+=(--html-details "$dir/coverage/index.html" --html-title "p1d coverage")
fi
gcovr -r "$root" -a "$json" "${reports[@]}"
t_report=$((SECONDS - t2))

status=0
python3 - "$summary" "$ci" "$LINE_MIN" "$CORE_LINE_MIN" "$CORE_BRANCH_MIN" \
	"${CORE_FILES[@]}" <<'EOF' || status=1
import json, sys

summary, ci = sys.argv[1], sys.argv[2] == "1"
line_min, core_line_min, core_branch_min = map(float, sys.argv[3:6])
core = sys.argv[6:]
s = json.load(open(summary))

def pct(covered, total):
    return 100.0 * covered / total if total else 100.0

def row(name, f, mark=""):
    lp = pct(f["line_covered"], f["line_total"])
    bp = pct(f["branch_covered"], f["branch_total"])
    print(f"{name:<34} {f['line_covered']:>6}/{f['line_total']:<6} {lp:6.1f} %"
          f"   {f['branch_covered']:>6}/{f['branch_total']:<6} {bp:6.1f} %  {mark}")
    return lp, bp

print(f"{'file':<34} {'lines':>13} {'':>8}   {'branches':>13}")
files = {f["filename"]: f for f in s["files"]}
failed = []
for name in sorted(files):
    mark = "*" if name in core else ""
    lp, bp = row(name, files[name], mark)
    if name in core and (lp < core_line_min or bp < core_branch_min):
        failed.append(f"{name}: {lp:.1f} % lines, {bp:.1f} % branches "
                      f"(needs {core_line_min:g} % / {core_branch_min:g} %)")
for name in core:
    if name not in files:
        failed.append(f"{name}: no coverage data")
print("-" * 86)
lp, _ = row("TOTAL", s)
print(f"* core files: at least {core_line_min:g} % of lines and {core_branch_min:g} % of branches each")
if ci:
    print("(--ci: a subset of the tests; the whole suite covers at least as much)")
if lp < line_min:
    failed.append(f"overall: {lp:.1f} % of lines (needs {line_min:g} %)")
for f in failed:
    print("coverage: below threshold:", f)
sys.exit(1 if failed else 0)
EOF
if [ $status -ne 0 ]; then
	# where the core files miss: line numbers of the lines and branches not taken
	core_filters=()
	for f in "${CORE_FILES[@]}"; do core_filters+=(--filter "$f"); done
	gcovr -r "$root" -a "$json" "${core_filters[@]}" --txt || true
	gcovr -r "$root" -a "$json" "${core_filters[@]}" --txt --branches || true
fi

echo "coverage: build ${t_build} s, tests ${t_test} s, report ${t_report} s"
[ $html -eq 1 ] && echo "coverage: HTML report in $dir/coverage/index.html"
if [ $tests_ok -eq 0 ]; then
	echo "coverage: some tests failed" >&2
	exit 1
fi
exit $status
