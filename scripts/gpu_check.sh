#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with .gpu-bundle/ (scripts/gpu_bundle.sh)
# carried along:   scripts/gpu_check.sh [all|tests|sanitizers|bandwidth]   (default all)
#  - tests:      every GPU test, sharded over 8 processes (the CPU reference is the slow part),
#                then the demo and the PyTorch parity tests on CUDA tensors
#  - sanitizers: compute-sanitizer memcheck, racecheck, initcheck and synccheck, concurrently, on
#                the GPU tests with the reduced shape set (NORMKIT_GPU_TESTS=reduced)
#  - bandwidth:  the rough bandwidth probe
# Prints the GPU, driver and versions first. Logs go to $OUT (the device tool's folder) or
# ./gpu-check-out, at most 8 files; the summary table is printed last and kept in summary.md.
set -uo pipefail
phase=${1:-all}
bundle=${BUNDLE:-.gpu-bundle}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/$bundle:${LD_LIBRARY_PATH:-}"
tests="$bundle/normkit_tests"
gpu_filter='*Gpu*:*CudaBackend*'
summary=()

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(tr '\n' ' ' < "$bundle/COMMIT")"
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem \
    --format=csv
  nvcc --version 2>/dev/null | tail -2
  compute-sanitizer --version 2>/dev/null | head -2
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

if [ "$phase" = all ] || [ "$phase" = tests ]; then
  shards=8
  for i in $(seq 0 $((shards - 1))); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i "$tests" --gtest_filter="$gpu_filter" \
      > "$out/shard$i.log" 2>&1 &
  done
  wait
  passed=0 failed=0 skipped=0
  for i in $(seq 0 $((shards - 1))); do
    f="$out/shard$i.log"
    passed=$((passed + $(grep -c '^\[       OK \]' "$f")))
    failed=$((failed + $(grep -c '^\[  FAILED  \] .*(' "$f")))
    skipped=$((skipped + $(grep -c '^\[  SKIPPED \] .*(' "$f")))
    cat "$f" >> "$out/gpu_tests.log"
    rm "$f"
  done
  summary+=("| GPU tests | $passed passed, $failed failed, $skipped skipped |")
  echo "==== demo ====" >> "$out/gpu_tests.log"
  "$bundle/normkit_demo" >> "$out/gpu_tests.log" 2>&1
  summary+=("| demo on the GPU | rc=$? (gpu_tests.log) |")
  echo "==== PyTorch parity on CUDA tensors ====" >> "$out/gpu_tests.log"
  NORMKIT_LIB="$PWD/$bundle/libnormkit.so.0" NORMKIT_PARITY_DEVICE=cuda \
    python3 -m pytest -q -p no:warnings tests/parity >> "$out/gpu_tests.log" 2>&1
  summary+=("| PyTorch parity (CUDA) | rc=$? $(tail -1 "$out/gpu_tests.log") |")
  grep '^\[  FAILED  \] .*(' "$out/gpu_tests.log" | head -20
fi

if [ "$phase" = all ] || [ "$phase" = sanitizers ]; then
  for tool in memcheck racecheck initcheck synccheck; do
    extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    NORMKIT_GPU_TESTS=reduced compute-sanitizer --tool "$tool" "${extra[@]}" \
      "$tests" --gtest_filter="$gpu_filter" > "$out/sanitizer_$tool.log" 2>&1 &
  done
  wait
  for tool in memcheck racecheck initcheck synccheck; do
    f="$out/sanitizer_$tool.log"
    errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$f" | grep -Eo '[0-9]+' | tail -1)
    result=$(grep -E '^\[  (PASSED|FAILED)  \]' "$f" | tr '\n' ' ')
    summary+=("| compute-sanitizer $tool | ${errors:-?} errors; tests: ${result:-none} |")
  done
fi

if [ "$phase" = all ] || [ "$phase" = bandwidth ]; then
  "$bundle/normkit_rough_bandwidth" > "$out/bandwidth.txt" 2>&1
  summary+=("| bandwidth probe | rc=$? (bandwidth.txt) |")
fi

{
  echo "# GPU check ($phase)"
  echo
  echo "| what | result |"
  echo "|---|---|"
  echo "| GPU | $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null) |"
  echo "| commit | $(head -1 "$bundle/COMMIT") |"
  printf '%s\n' "${summary[@]}"
  if [ -f "$out/bandwidth.txt" ]; then
    echo
    echo '```'
    cat "$out/bandwidth.txt"
    echo '```'
  fi
} > "$out/summary.md"
cat "$out/summary.md"
