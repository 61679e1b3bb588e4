#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with .gpu-bundle/ (scripts/gpu_bundle.sh)
# carried along:   scripts/gpu_check.sh [all|tests|sanitizers|bandwidth]   (default all)
#               or scripts/gpu_check.sh bench [normkit_bench arguments]
#               or scripts/gpu_check.sh torch [bench/torch_compare.py arguments]
#  - tests:      every GPU test, sharded over 8 processes (the CPU reference is the slow part),
#                then the demo and the PyTorch parity tests on CUDA tensors
#  - sanitizers: compute-sanitizer memcheck, racecheck, initcheck and synccheck, concurrently, on
#                the GPU tests with the reduced shape set (NORMKIT_GPU_TESTS=reduced)
#  - bandwidth:  the rough bandwidth probe
#  - bench:      the benchmark suite against cuDNN (not part of `all`: it runs for minutes and has
#                its own files): bench.json (Google Benchmark JSON), bench.log, and its markdown
#                summary appended to summary.md. Extra arguments go to normkit_bench, e.g.
#                --benchmark_filter=bn_resnet50. cuDNN comes from the nvidia-cudnn-cu13 wheel.
#  - torch:      bench/torch_compare.py (normkit vs torch eager and torch.compile on the same
#                tensors; not part of `all`): torch.json and torch.log; when bench.json from an
#                earlier bench phase is in the same folder, summary.md joins the two. Extra
#                arguments go to the script, e.g. --sets bn_resnet50 --filter /N32/.
# NCCL (for the synchronized batch norm tests and example) comes from the nvidia-nccl-cu13 wheel.
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

# The folder of the first file named $1 under Python's site-packages (the NVIDIA wheels).
site_lib_dir() {
  local site found
  for site in $(python3 -c 'import site; print(*site.getsitepackages(), site.getusersitepackages())' \
                2>/dev/null); do
    found=$(find "$site" -name "$1" 2>/dev/null | head -1)
    if [ -n "$found" ]; then dirname "$found"; return; fi
  done
}

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

# libnccl.so.2 for the NCCL path (normkit opens it at run time) and the NCCL example.
nccl_lib=$(site_lib_dir 'libnccl.so.2')
[ -n "$nccl_lib" ] && export LD_LIBRARY_PATH="$nccl_lib:$LD_LIBRARY_PATH"
echo "NCCL from: ${nccl_lib:-not found}" >> "$out/env.txt"

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
  echo "==== synchronized batch norm over NCCL (example) ====" >> "$out/gpu_tests.log"
  "$bundle/normkit_sync_batch_norm_nccl" >> "$out/gpu_tests.log" 2>&1
  summary+=("| NCCL example | rc=$? (gpu_tests.log) |")
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

if [ "$phase" = bench ]; then
  # cuDNN's lib folder from the package itself, else a search; NVRTC too (cuDNN compiles some
  # of its norm engines at run time).
  cudnn_lib=$(python3 - 2>/dev/null <<'PY'
import os
import nvidia.cudnn as m  # a namespace package in some wheels: no __file__, a __path__
root = os.path.dirname(m.__file__) if getattr(m, "__file__", None) else list(m.__path__)[0]
print(os.path.join(root, "lib"))
PY
)
  [ -f "$cudnn_lib/libcudnn.so.9" ] || cudnn_lib=$(site_lib_dir 'libcudnn.so.9')
  nvrtc_lib=$(site_lib_dir 'libnvrtc.so.*')
  echo "cuDNN from: ${cudnn_lib:-not found}; NVRTC from: ${nvrtc_lib:-not found}" > "$out/bench.log"
  LD_LIBRARY_PATH="${cudnn_lib:+$cudnn_lib:}${nvrtc_lib:+$nvrtc_lib:}$LD_LIBRARY_PATH" \
    "$bundle/normkit_bench" --benchmark_out="$out/bench.json" --benchmark_out_format=json \
    "${@:2}" >> "$out/bench.log" 2>&1
  summary+=("| benchmark suite | rc=$? (bench.json, bench.log) |")
fi

if [ "$phase" = torch ]; then
  NORMKIT_LIB="$PWD/$bundle/libnormkit.so.0" PYTHONUNBUFFERED=1 \
    python3 bench/torch_compare.py --out "$out/torch.json" "${@:2}" > "$out/torch.log" 2>&1
  summary+=("| torch comparison | rc=$? (torch.json, torch.log) |")
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
  if { [ "$phase" = bench ] || [ "$phase" = torch ]; } && [ -s "$out/bench.json" ]; then
    echo
    if [ -s "$out/torch.json" ]; then
      python3 bench/summarize.py "$out/bench.json" --torch "$out/torch.json" 2>&1
    else
      python3 bench/summarize.py "$out/bench.json" 2>&1
    fi
  fi
} > "$out/summary.md"
cat "$out/summary.md"
