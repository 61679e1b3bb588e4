#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with .gpu-bundle/ (scripts/gpu_bundle.sh)
# carried along. Prints the GPU, driver and versions; runs every GPU test; runs compute-sanitizer
# memcheck, racecheck, initcheck and synccheck on the GPU tests (reduced shapes); runs the rough
# bandwidth probe. Logs go to $OUT (the device tool's folder) or ./gpu-check-out; a summary table
# is printed last and written to summary.md.
set -uo pipefail
bundle=${BUNDLE:-.gpu-bundle}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/$bundle:${LD_LIBRARY_PATH:-}"
tests="$bundle/normkit_tests"
gpu_filter='*Gpu*:*CudaBackend*'

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(cat "$bundle/COMMIT" | tr '\n' ' ')"
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem --format=csv
  nvcc --version 2>/dev/null | tail -2
  compute-sanitizer --version 2>/dev/null | head -2
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

"$tests" --gtest_filter="$gpu_filter" > "$out/gpu_tests.log" 2>&1
tests_rc=$?
tests_line=$(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_tests.log" | tr '\n' ' ')
tests_ran=$(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran' "$out/gpu_tests.log" | tail -1)
tests_skipped=$(grep -Eo '^\[  SKIPPED \] [0-9]+' "$out/gpu_tests.log" | grep -Eo '[0-9]+$' | head -1)

declare -A sanitizer
for tool in memcheck racecheck initcheck synccheck; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  NORMKIT_GPU_TESTS=reduced compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 99 \
    "$tests" --gtest_filter="$gpu_filter" > "$out/sanitizer_$tool.log" 2>&1
  rc=$?
  errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$out/sanitizer_$tool.log" | grep -Eo '[0-9]+' | tail -1)
  sanitizer[$tool]="rc=$rc errors=${errors:-?}"
done

"$bundle/normkit_row_norm_bandwidth" > "$out/bandwidth.txt" 2>&1
bandwidth_rc=$?

{
  echo "# GPU check"
  echo
  echo "| what | result |"
  echo "|---|---|"
  echo "| GPU | $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null) |"
  echo "| commit | $(head -1 "$bundle/COMMIT") |"
  echo "| GPU tests | rc=$tests_rc; $tests_ran; skipped ${tests_skipped:-0}; $tests_line |"
  for tool in memcheck racecheck initcheck synccheck; do
    echo "| compute-sanitizer $tool | ${sanitizer[$tool]} |"
  done
  echo "| bandwidth probe | rc=$bandwidth_rc (bandwidth.txt) |"
  echo
  echo '```'
  cat "$out/bandwidth.txt"
  echo '```'
} > "$out/summary.md"
cat "$out/summary.md"
