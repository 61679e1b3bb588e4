#!/usr/bin/env bash
# ctest gpu_check_script (label cpu): scripts/gpu_check.sh and scripts/gpu_bundle.sh's size check,
# without a GPU. gpu_check.sh runs on a stub bundle (shell scripts in place of the test binary,
# the probes and normkit_bench) with stub nvidia-smi, compute-sanitizer, ncu and PyTorch script;
# the stubs print the synthetic files of bench/testdata (hand-made, not measurements). Checks:
#  - arguments: an unknown phase, option or limit is refused with status 2; --help, --list;
#  - the names --list gives are benchmark cases (ncu: of the check and channel-norm sets;
#    torch.compile shapes: of the check set);
#  - a full run: every phase ok, exactly the 8 files in $OUT, nothing left in TMPDIR, the summary
#    (benchmark tables joined with the torch ratios, ncu table, phase table) printed last;
#  - a phase past its limit is killed with what it started and reported "timed out after N s",
#    and a cut-short bench.json is still summarized;
#  - the budget: a phase is cut to what is left, and the next one is not started;
#  - absent tools skip their phases; a failing GPU test fails the run; a TERM still summarizes;
#  - a sanitizer error fails the phase, the summary names the first error of each shard with its
#    function and test, and a shard's log past NORMKIT_GPU_CHECK_LOG_CAP is cut to that size;
#  - gpu_bundle.sh --check-size passes a small folder and refuses one over 64 MiB.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
check=$root/scripts/gpu_check.sh
tmp=$(mktemp -d)
# GPU_CHECK_TEST_KEEP=1 keeps the runs' folders for a look.
trap '[ -n "${GPU_CHECK_TEST_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"' EXIT

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }

# expect_in FILE PATTERN WHAT: FILE holds a line matching the extended regex PATTERN.
expect_in() {
  if grep -qE -- "$2" "$1"; then pass "$3"; else fail "$3: no /$2/ in $1:"; sed 's/^/    /' "$1"; fi
}

# ---- the stubs -----------------------------------------------------------------------------
mkdir -p "$tmp/bundle" "$tmp/tools" "$tmp/state" "$tmp/tmpdir"
stub() {  # stub PATH: the script on stdin, made executable
  { echo '#!/usr/bin/env bash'; cat; } > "$1"
  chmod +x "$1"
}
stub "$tmp/bundle/normkit_tests" <<'EOF'
i=${GTEST_SHARD_INDEX:-0}
echo "$*" >> "$STUB_STATE/tests_args"
[ -n "${STUB_TESTS_SLEEP:-}" ] && sleep "$STUB_TESTS_SLEEP"
for t in A B; do
  echo "[ RUN      ] GpuStub.$t$i"
  echo "[       OK ] GpuStub.$t$i (1 ms)"
done
if [ "${STUB_FAIL_SHARD:-}" = "$i" ]; then  # as GoogleTest reports a parameterized failure
  echo "[ RUN      ] GpuStub/P.Fails/0"
  echo "[  FAILED  ] GpuStub/P.Fails/0, where GetParam() = (1, 2) (1 ms)"
  echo "[  FAILED  ] 1 test, listed below:"
  echo "[  FAILED  ] GpuStub/P.Fails/0, where GetParam() = (1, 2)"
  exit 1
fi
echo "[  PASSED  ] 2 tests."
EOF
stub "$tmp/bundle/normkit_simulator_probes" <<'EOF'
echo "probe shuffles (stub): ok"
echo "probe clusters (stub): skipped (none on the device or in the code it runs)"
if [ -n "${STUB_PROBE_FAIL:-}" ]; then
  echo "probe conversions (stub): FAIL"
  echo "    int64 -> float: got 1, expected 2"
  echo "probes: 1 of 2 failed"
  exit 1
fi
echo "probe conversions (stub): ok"
echo "probes: 0 of 2 failed"
EOF
stub "$tmp/bundle/normkit_demo" <<< 'echo "demo (stub)"'
stub "$tmp/bundle/normkit_sync_batch_norm_nccl" <<< 'echo "NCCL example (stub)"'
stub "$tmp/bundle/normkit_rough_bandwidth" <<< 'echo "copy: 1.0 GB/s (STUB, not a measurement)"'
stub "$tmp/bundle/normkit_bench" <<'EOF'
if [ "${NORMKIT_BENCH_PROFILE:-}" = 1 ]; then echo "stub profiled $*"; exit 0; fi
if [ -n "${STUB_BENCH_HANG:-}" ]; then
  head -c 3500 "$FIXTURES/synthetic_check_results.json"
  sleep 300 &
  echo $! > "$STUB_STATE/bench_child.pid"
  wait
fi
if [ -n "${STUB_BENCH_ERRORS:-}" ]; then cat "$FIXTURES/synthetic_check_results.json"; exit 0; fi
# The synthetic file without its case in error, as a clean run writes it.
"$REAL_PYTHON" -c '
import json, sys
data = json.load(open(sys.argv[1]))
data["benchmarks"] = [b for b in data["benchmarks"] if not b.get("error_occurred")]
json.dump(data, sys.stdout, indent=2)' "$FIXTURES/synthetic_check_results.json"
EOF
: > "$tmp/bundle/libnormkit.so.0"
echo stub0000 > "$tmp/bundle/COMMIT"
stub "$tmp/tools/nvidia-smi" <<'EOF'
case "$*" in
  *--query-gpu*) echo "STUB GPU (not a measurement), 0.0" ;;
  *) echo "NVIDIA-SMI (stub)" ;;
esac
EOF
stub "$tmp/tools/compute-sanitizer" <<'EOF'
echo "$*" >> "$STUB_STATE/sanitizer_args"
while [ $# -gt 0 ]; do
  case $1 in
    --version) echo "compute-sanitizer (stub) Version 0"; exit 0 ;;
    --tool|--leak-check|--print-limit|--destroy-on-device-error) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
if [ -n "${STUB_SAN_ERROR:-}" ]; then  # as memcheck reports an invalid access inside a test
  i=${GTEST_SHARD_INDEX:-0}
  echo "[ RUN      ] GpuStub.A$i"
  echo "========= Invalid __global__ read of size 16 bytes"
  echo "=========     at void stub_kernel<float>(const float *)+0x40"
  echo "=========     by thread (0,0,0) in block (0,0,0)"
  for ((k = 0; k < 2000; k++)); do echo "========= Program hit cudaErrorLaunchFailure (stub line $k)"; done
  echo "[  FAILED  ] GpuStub.A$i (1 ms)"
  echo "========= ERROR SUMMARY: 2001 errors"
  exit 1
fi
"$@"
rc=$?
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
EOF
stub "$tmp/tools/ncu" <<'EOF'
log=/dev/stdout
while [ $# -gt 0 ]; do
  case $1 in
    --version) echo "ncu (stub) Version 0"; exit 0 ;;
    --log-file) log=$2; shift 2 ;;
    --metrics|--clock-control|--profile-from-start|--print-units) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
"$@"
rc=$?
cp "$FIXTURES/synthetic_ncu.csv" "$log"
exit $rc
EOF
stub "$tmp/tools/python-stub" <<'EOF'
if [ "${1:-}" = bench/torch_compare.py ]; then
  echo "$*" > "$STUB_STATE/torch_args"
  out=""
  prev=""
  for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
  echo "torch_compare (stub)"
  cp "$FIXTURES/synthetic_check_torch.json" "$out"
  exit 0
fi
if [ "${1:-}" = -m ] && [ "${2:-}" = pytest ]; then echo "2 passed in 0.01s (stub)"; exit 0; fi
exec "$REAL_PYTHON" "$@"
EOF

REAL_PYTHON=$(command -v python3)
export REAL_PYTHON FIXTURES="$root/bench/testdata" STUB_STATE="$tmp/state" TMPDIR="$tmp/tmpdir"
export PATH="$tmp/tools:$PATH" BUNDLE="$tmp/bundle" PYTHON="$tmp/tools/python-stub"
export NORMKIT_GPU_CHECK_SANITIZER="$tmp/tools/compute-sanitizer" NORMKIT_GPU_CHECK_NCU="$tmp/tools/ncu"
export NORMKIT_GPU_CHECK_SHARDS=3 NORMKIT_GPU_CHECK_SANITIZER_SHARDS=2

# run NAME [args]: gpu_check.sh with OUT=$tmp/NAME; stdout, stderr, status and seconds in $tmp/NAME.*
run() {
  local name=$1 start
  shift
  start=$(date +%s)
  OUT="$tmp/$name" "$check" "$@" > "$tmp/$name.stdout" 2> "$tmp/$name.stderr"
  echo $? > "$tmp/$name.rc"
  echo $(($(date +%s) - start)) > "$tmp/$name.seconds"
}
rc_of() { cat "$tmp/$1.rc"; }

# ---- arguments ------------------------------------------------------------------------------
run bad_phase tests bogus
[ "$(rc_of bad_phase)" = 2 ] && pass "unknown phase: status 2" || fail "unknown phase: status $(rc_of bad_phase)"
expect_in "$tmp/bad_phase.stderr" "unknown phase 'bogus'; phases: env tests sanitizers" "unknown phase: the message names it and the phases"
[ ! -e "$tmp/bad_phase" ] && pass "unknown phase: nothing written" || fail "unknown phase: $tmp/bad_phase was created"
for args in "--budget abc" "--budget" "--budget 0" "--limit bench" "--limit nosuch=5" "--limit bench=x" \
            "--limit=bench=-1" "--frobnicate"; do
  # shellcheck disable=SC2086  # the words are the arguments
  run bad_args $args
  if [ "$(rc_of bad_args)" = 2 ] && grep -q 'gpu_check.sh: ' "$tmp/bad_args.stderr"; then
    pass "'$args': status 2 with a message"
  else
    fail "'$args': status $(rc_of bad_args), stderr: $(cat "$tmp/bad_args.stderr")"
  fi
done
run help --help
[ "$(rc_of help)" = 0 ] && pass "--help: status 0" || fail "--help: status $(rc_of help)"
expect_in "$tmp/help.stdout" "sanitizers_extra" "--help describes the phases"
run list --limit bench=7 --list
[ "$(rc_of list)" = 0 ] && pass "--list: status 0" || fail "--list: status $(rc_of list)"
expect_in "$tmp/list.stdout" "^bench +7 s" "--limit changes a phase's limit"
expect_in "$tmp/list.stdout" "^tests +170 s" "--list gives the default limits"
BUNDLE="$tmp/no-bundle" run no_bundle env
[ "$(rc_of no_bundle)" = 2 ] && pass "missing bundle: status 2" || fail "missing bundle: status $(rc_of no_bundle)"
expect_in "$tmp/no_bundle.stderr" "no bundle at" "missing bundle: the message says so"

# The names in the plan are cases of the check set, and torch.compile gets 5 shapes.
"$REAL_PYTHON" "$root/bench/torch_compare.py" --sets check --list > "$tmp/check_names.txt"
[ "$(wc -l < "$tmp/check_names.txt")" = 40 ] && pass "torch_compare.py: 40 check cases" \
  || fail "torch_compare.py lists $(wc -l < "$tmp/check_names.txt") check cases, expected 40"
ncu_cases=$(sed -n 's/^ncu case: //p' "$tmp/list.stdout")
[ "$(echo "$ncu_cases" | wc -l)" = 14 ] && pass "14 ncu cases" || fail "ncu cases: $ncu_cases"
"$REAL_PYTHON" "$root/bench/torch_compare.py" \
  --sets check,bn_resnet50,bn_features,bn_mobilenet_v2,instance_norm,group_norm \
  --list > "$tmp/bench_names.txt"
for c in $ncu_cases; do
  grep -qxF "$c" "$tmp/bench_names.txt" && pass "ncu case $c is a benchmark case" \
    || fail "ncu case $c is not a case of the check or channel-norm sets"
done
compile_filter=$(sed -n 's/^torch.compile: at most 5 shapes of //p' "$tmp/list.stdout")
"$REAL_PYTHON" "$root/bench/torch_compare.py" --sets check --list --compile-limit 5 \
  --compile-filter "$compile_filter" | sed -n 's/  \[compile\]$//p' > "$tmp/compiled.txt"
shapes=$(sed 's|/[^/]*$||' "$tmp/compiled.txt" | sort -u | wc -l)
ops=$(cut -d/ -f2 "$tmp/compiled.txt" | sort -u | tr '\n' ' ')
[ "$shapes" = 5 ] && [ "$ops" = "batch_norm group_norm instance_norm layer_norm rms_norm " ] \
  && pass "torch.compile: 5 shapes, one per op ($(wc -l < "$tmp/compiled.txt") cases)" \
  || fail "torch.compile plan: $shapes shapes, ops $ops"

# ---- a full run -----------------------------------------------------------------------------
run full
[ "$(rc_of full)" = 0 ] && pass "full run: status 0" || fail "full run: status $(rc_of full); $(cat "$tmp/full.stderr")"
files=$(cd "$tmp/full" && find . -mindepth 1 | sed 's|^\./||' | sort | tr '\n' ' ')
[ "$files" = "bench.json env.txt ncu.txt perf.log sanitizers.log summary.md tests.log torch.json " ] \
  && pass "full run: the 8 files, no folder" || fail "full run wrote: $files"
[ -z "$(ls -A "$tmp/tmpdir")" ] && pass "full run: its temporary folder is gone" \
  || fail "full run left $(ls -A "$tmp/tmpdir") in TMPDIR"
summary_lines=$(wc -l < "$tmp/full/summary.md")
if tail -n "$summary_lines" "$tmp/full.stdout" | cmp -s - "$tmp/full/summary.md"; then
  pass "full run: the summary is printed last"
else
  fail "full run: stdout does not end with summary.md"
fi
for phase in env tests sanitizers bandwidth bench torch ncu sanitizers_extra; do
  expect_in "$tmp/full/summary.md" "^\| $phase \| [0-9]+ \| [0-9]+ \| ok \|" "full run: $phase ok"
done
expect_in "$tmp/full/summary.md" "gtest: 6 passed, 0 failed, 0 skipped; shards finished 3/3" "tests: counts of the 3 shards"
expect_in "$tmp/full/summary.md" "parity: 2 passed" "tests: parity result"
expect_in "$tmp/full/summary.md" "probes: 2 ok, 0 failed, 1 skipped \(rc 0\)" "tests: the device probes' counts"
expect_in "$tmp/full/tests.log" "==== probes \(rc 0\) ====" "tests.log holds the probes' output"
expect_in "$tmp/full/summary.md" "memcheck: 0 errors, shards finished 2/2.*racecheck: 0 errors" "sanitizers: memcheck and racecheck"
expect_in "$tmp/full/summary.md" "initcheck: 0 errors.*synccheck: 0 errors" "sanitizers_extra: initcheck and synccheck"
expect_in "$tmp/full/summary.md" '^\| D1024 M131072 \| bf16 \(w fp32\) \| - \| fwd \| 850 \| 0.850 \| 1.20 \| 2.50 \| 1.50 \|' "summary: bench table joined with the torch ratios"
expect_in "$tmp/full/summary.md" '^\| 0 \| `synthetic::forward_in_registers<__nv_bfloat16, float>` \| \(1056, 1, 1\) \| \(128, 1, 1\) \| 1.2 \| 91.2 \| 12.5 \|' "summary: ncu table"
expect_in "$tmp/full/summary.md" "STUB, not a measurement" "summary: bandwidth probe"
expect_in "$tmp/full/tests.log" "==== shard2 of 3 ====" "tests.log holds every shard"
expect_in "$tmp/full/sanitizers.log" "compute-sanitizer --tool synccheck, san_synccheck_1" "sanitizers.log holds every tool and shard"
expect_in "$tmp/state/sanitizer_args" "^--tool memcheck --leak-check full --destroy-on-device-error kernel --print-limit 50 " "memcheck: leak check, and a faulting kernel does not end the shard's context"
expect_in "$tmp/full/perf.log" "==== torch_compare.py ====" "perf.log holds the torch log"
expect_in "$tmp/full/env.txt" "cudnn: not found" "env.txt: the library folders"
expect_in "$tmp/state/torch_args" "--sets [a-z_0-9,]*check.*--filter \^check/.*--compile-limit 5 --compile-filter" "torch: the check cases, torch.compile on 5 shapes"

# ---- a phase past its limit -----------------------------------------------------------------
STUB_BENCH_HANG=1 run hang --limit bench=2 bench
[ "$(rc_of hang)" = 1 ] && pass "timed-out phase: status 1" || fail "timed-out phase: status $(rc_of hang)"
[ "$(cat "$tmp/hang.seconds")" -le 10 ] && pass "timed-out phase: killed at its limit ($(cat "$tmp/hang.seconds") s)" \
  || fail "timed-out phase took $(cat "$tmp/hang.seconds") s with a 2 s limit"
expect_in "$tmp/hang/summary.md" "^\| bench \| 2 \| [0-9]+ \| timed out after 2 s \| 2 cases in bench.json \(cut short\), 0 in error" "timed-out phase: reported with what it finished"
expect_in "$tmp/hang/summary.md" "Partial run" "timed-out phase: the cut-short bench.json is summarized"
child=$(cat "$tmp/state/bench_child.pid" 2>/dev/null)
if [ -n "$child" ] && kill -0 "$child" 2>/dev/null && ! grep -q ') Z' "/proc/$child/stat" 2>/dev/null; then
  fail "timed-out phase: its child $child still runs"
  kill "$child"
else
  pass "timed-out phase: its children were killed too"
fi
[ "$(find "$tmp/hang" -type f | wc -l)" -le 8 ] && pass "timed-out phase: at most 8 files" || fail "timed-out run wrote $(ls "$tmp/hang")"

# ---- the budget -----------------------------------------------------------------------------
# 24 s with 12 kept for the summary: tests gets what is left (about 12 s) and bench nothing.
STUB_TESTS_SLEEP=60 run budget --budget 24 tests bench
[ "$(rc_of budget)" = 1 ] && pass "budget: status 1" || fail "budget: status $(rc_of budget)"
[ "$(cat "$tmp/budget.seconds")" -le 22 ] && pass "budget: ended in $(cat "$tmp/budget.seconds") s" \
  || fail "budget: took $(cat "$tmp/budget.seconds") s of a 24 s budget"
expect_in "$tmp/budget/summary.md" "^\| tests \| (9|1[0-2]) \| [0-9]+ \| timed out after (9|1[0-2]) s \| gtest: 0 passed.*shards finished 0/3" "budget: the limit is cut to what is left"
expect_in "$tmp/budget/summary.md" "^\| bench \| 75 \| 0 \| skipped: not started" "budget: no phase starts past the deadline"

# ---- absent tools, failures, a TERM ----------------------------------------------------------
STUB_BENCH_ERRORS=1 run bench_error bench
[ "$(rc_of bench_error)" = 1 ] && pass "a case in error: status 1" || fail "a case in error: status $(rc_of bench_error)"
expect_in "$tmp/bench_error/summary.md" "^\| bench \| [0-9]+ \| [0-9]+ \| failed \| 5 cases in bench.json, 1 in error" "a case in error: the bench phase fails"
NORMKIT_GPU_CHECK_NCU=none NORMKIT_GPU_CHECK_SANITIZER=none run no_tools ncu sanitizers
[ "$(rc_of no_tools)" = 0 ] && pass "absent tools: status 0" || fail "absent tools: status $(rc_of no_tools)"
expect_in "$tmp/no_tools/summary.md" "^\| ncu \| [0-9]+ \| 0 \| skipped: ncu not found" "absent ncu: skipped, said so"
expect_in "$tmp/no_tools/summary.md" "^\| sanitizers \| [0-9]+ \| 0 \| skipped: compute-sanitizer not found" "absent compute-sanitizer: skipped, said so"
STUB_FAIL_SHARD=1 run failing tests
[ "$(rc_of failing)" = 1 ] && pass "failing test: status 1" || fail "failing test: status $(rc_of failing)"
expect_in "$tmp/failing/summary.md" "^\| tests \| [0-9]+ \| [0-9]+ \| failed \| gtest: 6 passed, 1 failed.*; failed: GpuStub/P.Fails/0 ;" "failing test: counted once, named in the table"
STUB_PROBE_FAIL=1 run probe_fail tests
[ "$(rc_of probe_fail)" = 1 ] && pass "failing probe: status 1" || fail "failing probe: status $(rc_of probe_fail)"
expect_in "$tmp/probe_fail/summary.md" "^\| tests \| [0-9]+ \| [0-9]+ \| failed \| gtest: 6 passed, 0 failed.*; probes: 1 ok, 1 failed, 1 skipped \(rc 1\)" "failing probe: the tests phase fails, the count says why"
expect_in "$tmp/probe_fail/tests.log" "int64 -> float: got 1, expected 2" "failing probe: its mismatch is in tests.log"
mkdir -p "$tmp/old_bundle"
cp -p "$tmp/bundle"/* "$tmp/old_bundle/"
rm "$tmp/old_bundle/normkit_simulator_probes"
BUNDLE="$tmp/old_bundle" run old_bundle tests
[ "$(rc_of old_bundle)" = 0 ] && pass "bundle without probes: status 0" || fail "bundle without probes: status $(rc_of old_bundle)"
expect_in "$tmp/old_bundle/summary.md" "^\| tests \| [0-9]+ \| [0-9]+ \| ok \| .*; probes: not in the bundle" "bundle without probes: said so"
STUB_SAN_ERROR=1 NORMKIT_GPU_CHECK_LOG_CAP=20000 run san_error sanitizers
[ "$(rc_of san_error)" = 1 ] && pass "sanitizer error: status 1" || fail "sanitizer error: status $(rc_of san_error)"
expect_in "$tmp/san_error/summary.md" "^\| sanitizers \| [0-9]+ \| [0-9]+ \| failed \| memcheck: 4002 errors, shards finished 2/2 \(2 with rc != 0\), tests 0 passed, 2 failed \(first: GpuStub.A0 GpuStub.A1 \); first error: Invalid __global__ read of size 16 bytes at void stub_kernel<float>\(const float \*\)\+0x40, in GpuStub.A0" "sanitizer error: counted, the failing tests and the first error named in the table"
expect_in "$tmp/san_error/summary.md" "^- racecheck, san_racecheck_1: Invalid __global__ read of size 16 bytes at void stub_kernel<float>\(const float \*\)\+0x40, in GpuStub.A1$" "sanitizer error: each shard's first error in the summary"
size=$(stat -c %s "$tmp/san_error/sanitizers.log")
[ "$size" -le $((4 * 20000 + 4000)) ] && pass "sanitizer error: each shard's log cut to the cap ($size bytes for 4)" \
  || fail "sanitizer error: sanitizers.log is $size bytes for 4 shards of a 20000-byte cap"
expect_in "$tmp/san_error/sanitizers.log" "^\[gpu_check: [0-9]+ of this log's [0-9]+ bytes left out here; its first 15000 and last 5000 bytes are kept\]$" "sanitizer error: the cut is marked"
expect_in "$tmp/san_error/sanitizers.log" "ERROR SUMMARY: 2001 errors" "sanitizer error: the log's end (the counts) is kept"
: > "$tmp/state/tests_args"
run san_filter --sanitizer-filter 'GpuStub.A*' sanitizers
[ "$(rc_of san_filter)" = 0 ] && pass "--sanitizer-filter: status 0" || fail "--sanitizer-filter: status $(rc_of san_filter)"
[ "$(grep -c -- '--gtest_filter=GpuStub.A\*$' "$tmp/state/tests_args")" = 4 ] \
  && pass "--sanitizer-filter: every sanitizer shard runs that filter" \
  || { fail "--sanitizer-filter: the test binary got"; sed 's/^/    /' "$tmp/state/tests_args"; }
STUB_BENCH_HANG=1 OUT="$tmp/term" "$check" bench > "$tmp/term.stdout" 2>&1 &
pid=$!
sleep 3
kill -TERM "$pid"
wait "$pid"
[ $? = 1 ] && pass "TERM: status 1" || fail "TERM: another status"
expect_in "$tmp/term/summary.md" "interrupted by a signal" "TERM: the summary is still written"
tail -3 "$tmp/term.stdout" | grep -q "Files in" && pass "TERM: the summary is printed" || fail "TERM: no summary printed"

# ---- the bundle's size check ----------------------------------------------------------------
mkdir -p "$tmp/small_bundle" "$tmp/big_bundle"
head -c 1048576 /dev/zero > "$tmp/small_bundle/a"
truncate -s 64M "$tmp/big_bundle/a"  # sparse: its apparent size is what travels
"$root/scripts/gpu_bundle.sh" --check-size "$tmp/small_bundle" > "$tmp/size_small.txt" 2>&1
[ $? = 0 ] && pass "size check: a 1 MiB bundle passes" || { fail "size check refused 1 MiB"; cat "$tmp/size_small.txt"; }
expect_in "$tmp/size_small.txt" "bundle 1.0 MiB" "size check: prints the bundle's size"
"$root/scripts/gpu_bundle.sh" --check-size "$tmp/big_bundle" > "$tmp/size_big.txt" 2>&1
[ $? = 1 ] && pass "size check: a 64 MiB bundle with the tree is refused" || { fail "size check let 64 MiB through"; cat "$tmp/size_big.txt"; }
expect_in "$tmp/size_big.txt" "over the 64 MiB" "size check: says why"

echo
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "every check passed"
