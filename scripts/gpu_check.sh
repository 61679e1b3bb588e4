#!/usr/bin/env bash
# The GPU check: one call on the GPU machine, from the repository root, with .gpu-bundle/ (made
# here by scripts/gpu_bundle.sh) carried along. The device tool's call:
#   run  command "scripts/gpu_check.sh"  timeout_s 540  carry [".gpu-bundle"]
#
#   scripts/gpu_check.sh [--budget SECONDS] [--limit PHASE=SECONDS]... [--bench-filter REGEX]
#                        [--torch-filter REGEX] [--sanitizer-filter FILTER] [--list] [PHASE...]
#
# Phases, in priority order (default: all of them; named phases run in this order too). Each runs
# under its own time limit (coreutils `timeout`, its whole process group killed at the limit), so
# a slow phase cannot eat the later ones; none starts past the budget's deadline, and each limit is
# cut to what is left of the budget. A phase that hits its limit is reported "timed out after N s"
# with what it finished; the summary is always written and printed, last.
#
#   phase             limit  what                                                  writes
#   env                 10 s GPU, driver, tools, Python packages, library folders  env.txt
#   tests              170 s every GPU test in 14 gtest shards at once, beside the tests.log
#                            device probes, the demo, the NCCL example and the
#                            PyTorch parity tests
#   sanitizers         120 s compute-sanitizer memcheck and racecheck at once, 6   sanitizers.log
#                            shards each, on the reduced set (NORMKIT_GPU_TESTS=reduced)
#   bandwidth           10 s the rough bandwidth probe                              perf.log
#   bench               75 s normkit_bench on the `check` set (40 cases, every op    bench.json,
#                            class) and the sets bn_resnet50, bn_in_place,          perf.log
#                            bn_features, bn_mobilenet_v2, instance_norm and
#                            group_norm (768); normkit, cuDNN, the copy reference
#   torch               70 s torch_compare.py, eager on the check set and the bf16   torch.json,
#                            cases of bn_resnet50 at N = 256, bn_features,          perf.log
#                            bn_mobilenet_v2, instance_norm and group_norm (274),
#                            then torch.compile on at most 5 shapes
#   ncu                 30 s Nsight Compute: DRAM throughput and issue-slot use of   ncu.txt
#                            normkit's kernels in one call each of 14 cases
#   sanitizers_extra    60 s initcheck and synccheck like `sanitizers`; only when    sanitizers.log
#                            at least 45 s of the budget are left
#   (always)                 the summary: benchmark tables, probe, ncu table and    summary.md
#                            the phase table, printed last
# The limits add up to 485 s; the default budget is 500 s (12 s of it kept for the summary), so
# the call ends well inside its 540 s. They follow what an H200 took on 2026-12-04
# (bench/results/2026-12-04-gpu-h200): tests 156 s, bench 30 s for the 624 cases of three sets
# (bn_in_place's 48 and the 96 of bn_features and bn_mobilenet_v2 came later) and about 25 s for
# the check set, torch eager about 0.2 s a case, ncu 8 s, the probe 1 s.
# Phases that end early leave their time to the optional one. At most these 8 files are written
# to $OUT (the device tool's folder; ./gpu-check-out elsewhere); everything else lives in a
# temporary folder removed at the end.
#
# Options:
#   --budget SECONDS        the whole run's budget (default 500)
#   --limit PHASE=SECONDS   another limit for one phase (repeatable), e.g. for a retry
#   --bench-filter REGEX    the cases of bench (a case name regex; default
#                           ^(check|bn_resnet50|bn_in_place|bn_features|bn_mobilenet_v2|
#                           instance_norm|group_norm)/)
#   --torch-filter REGEX    the cases of torch (default ^check/ and the bf16 cases of
#                           bn_resnet50 at N = 256, bn_features, bn_mobilenet_v2, instance_norm
#                           and group_norm)
#   --sanitizer-filter F    the GoogleTest filter of the sanitizer phases (default every GPU test
#                           but NCCL's: *Gpu*:*CudaBackend*:-*Nccl*), e.g. one family to find an
#                           error a run reported
#   --list                  print the phases, their limits, the ncu cases and the torch.compile
#                           shapes, and exit
# Exit status: 0 when every phase run passed or was skipped for want of a tool, 1 when one failed
# or timed out, 2 for a usage error.
#
# Environment: OUT, BUNDLE (default .gpu-bundle), PYTHON (default python3: the one with PyTorch);
# NORMKIT_GPU_CHECK_SANITIZER, NORMKIT_GPU_CHECK_NCU (the tools' paths, or "none"; default: the
# PATH, then the CUDA toolkit's and Nsight Compute's folders); NORMKIT_GPU_CHECK_SHARDS (14),
# NORMKIT_GPU_CHECK_SANITIZER_SHARDS (6), NORMKIT_BENCH_SAMPLES (30 here),
# NORMKIT_GPU_CHECK_LOG_CAP (524288: the bytes of one shard's log kept in tests.log or
# sanitizers.log, the first three quarters and the last quarter, so that each file stays under the
# 16 MiB the device tool returns). The tests of this script (tests/gpu_check_test.sh) run it on
# stub binaries and tools through these.
#
# Libraries: the bundle holds the binaries, libnormkit and every library they link that the GPU
# machine lacks (Google Benchmark from Debian; libstdc++ and libgcc_s in compat/, used only when
# the machine's own are older). cuDNN, NVRTC, cuBLAS and NCCL come from PyTorch's nvidia-* wheels
# there, found under Python's site-packages. Python processes keep the machine's own libraries.
set -uo pipefail

readonly PHASES=(env tests sanitizers bandwidth bench torch ncu sanitizers_extra)
declare -A LIMIT=([env]=10 [tests]=170 [sanitizers]=120 [bandwidth]=10 [bench]=75 [torch]=70
                  [ncu]=30 [sanitizers_extra]=60)
# A phase starts only with at least this many seconds of the budget left (after the reserve).
declare -A MIN_START=([env]=3 [tests]=10 [sanitizers]=10 [bandwidth]=5 [bench]=10 [torch]=10
                      [ncu]=10 [sanitizers_extra]=45)
readonly RESERVE=12     # seconds of the budget kept for the summary
readonly KILL_AFTER=3   # seconds between a phase's TERM and KILL
readonly GPU_FILTER='*Gpu*:*CudaBackend*'
# NCCL's own kernels and proxy threads are not normkit's code and can stall under the tools; the
# simulated-rank tests cover normkit's kernels of synchronized batch norm.
readonly DEFAULT_SANITIZER_FILTER='*Gpu*:*CudaBackend*:-*Nccl*'
# ncu: one representative case each of the six kernels that dominate a training step's
# normalization time: layer norm forward and backward, RMS norm forward (transformers), batch
# norm training forward and backward in NHWC (convolutional nets under channels-last), group
# norm forward (diffusion U-Nets); then four of the channel norms' slowest shapes on the H200
# (bench/results/2026-12-04-gpu-h200): batch norm training forward at 7 x 7 NHWC (0.28 of cuDNN's
# speed) and 14 x 14 NCHW (0.58), instance norm NHWC (0.12 of copy) and group norm NHWC at 16 x 16
# (0.02); and group norm NCHW where a (n, g) row is too long for a block (N8 C1280 64 x 64: 320 KiB,
# 0.26 of copy, the split passes) and where there are fewer rows than SMs (N2 C320 64 x 64);
# last, batch norm of N x C features (S = 1) and of 16 channels in NHWC (fewer than a warp's
# lanes), never measured before.
# normkit's first call of each is profiled (NORMKIT_BENCH_PROFILE).
readonly NCU_CASES=(
  check/layer_norm/D1024/M131072/bf16/w_fp32/fwd
  check/layer_norm/D1024/M131072/bf16/w_fp32/bwd
  check/rms_norm/D4096/M32768/bf16/w_bf16/fwd
  check/batch_norm/N256/C64/HW56/NHWC/bf16/train_fwd
  check/batch_norm/N256/C64/HW56/NHWC/bf16/bwd
  check/group_norm/N8/C640/HW64/G32/NHWC/bf16/fwd
  bn_resnet50/N256/C512/HW7/NHWC/bf16/train_fwd
  bn_resnet50/N256/C256/HW14/NCHW/bf16/train_fwd
  instance_norm/N8/C128/HW128/NHWC/bf16/train_fwd
  group_norm/N8/C320/HW16/G32/NHWC/bf16/fwd
  group_norm/N8/C1280/HW64/G32/NCHW/bf16/fwd
  group_norm/N2/C320/HW64/G32/NCHW/bf16/fwd
  bn_features/N65536/C512/HW1/NHWC/bf16/train_fwd
  bn_mobilenet_v2/N128/C16/HW112/NHWC/bf16/train_fwd
)
readonly NCU_METRICS=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_issued.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active
readonly NCU_METRICS_CORE=dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_issued.avg.pct_of_peak_sustained_active
# torch.compile: at most 5 shapes (each compiles for seconds): one per op class.
readonly COMPILE_FILTER='^check/(layer_norm/D1024/|rms_norm/D4096/|batch_norm/N256/C64/HW56/NHWC/|instance_norm/N8/C128/HW128/NHWC/|group_norm/N8/C640/)'
readonly COMPILE_LIMIT=5
readonly TORCH_SETS=bn_resnet50,bn_features,bn_mobilenet_v2,rows,fused_rows,fused_channels,instance_norm,group_norm,small,check

usage() {
  sed -n '2,/^set -uo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die_usage() {
  echo "gpu_check.sh: $*" >&2
  echo "usage: scripts/gpu_check.sh [--budget SECONDS] [--limit PHASE=SECONDS]... [--bench-filter REGEX] [--torch-filter REGEX] [--sanitizer-filter FILTER] [--list] [PHASE...]; phases: ${PHASES[*]} (or all); --help for more" >&2
  exit 2
}

is_phase() {
  local p
  for p in "${PHASES[@]}"; do [ "$p" = "$1" ] && return 0; done
  return 1
}

is_seconds() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }

elapsed() { echo $(($(date +%s) - T0)); }

say() { echo "[gpu_check +$(elapsed)s] $*"; }

# ------------------------------------------------------------------------------------------------
# Phase bodies. Each runs in its own process (this script again, --phase-body NAME) under
# `timeout`, so that a limit kills it with everything it started. They read the exported state
# and write their logs into $NK_WORK; the parent reports on them afterwards, finished or not.
# ------------------------------------------------------------------------------------------------

body_env() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(tr '\n' ' ' < "$NK_BUNDLE/COMMIT" 2>/dev/null)"
    echo "host: $(uname -n), kernel $(uname -r), $(nproc) cores, $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB memory" }')"
    echo "glibc: $(ldd --version 2>/dev/null | head -1)"
    echo "budget: $NK_BUDGET s; phases: $NK_SELECTED"
    echo
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem \
      --format=csv
    echo
    echo "nvcc: $(nvcc --version 2>/dev/null | tail -2 | tr '\n' ' ')"
    echo "compute-sanitizer: ${NK_SANITIZER:-not found} $([ -n "$NK_SANITIZER" ] && "$NK_SANITIZER" --version 2>&1 | grep -i version | head -1)"
    echo "ncu: ${NK_NCU:-not found} $([ -n "$NK_NCU" ] && "$NK_NCU" --version 2>&1 | tail -1)"
    echo "python: $("$NK_PYTHON" --version 2>&1)"
    "$NK_PYTHON" - <<'PY' 2>&1
import importlib.metadata as md
for name in ("torch", "triton", "numpy", "pytest", "nvidia-cudnn-cu13", "nvidia-nccl-cu13",
             "nvidia-cuda-nvrtc", "nvidia-cublas"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
PY
    echo
    cat "$NK_WORK/libraries.txt"
  } > "$NK_OUT/env.txt" 2>&1
}

# GTest shards of the GPU tests, all at once, beside one chain of the device probes
# (tests/sim/simulator_probes.cu: shuffles, conversions, clusters, dependent launch and the
# compiled architecture against known answers; absent from bundles made before 2026-12-07), the
# demo, the NCCL example and the PyTorch parity tests (each with its own rc file: the report counts
# what finished).
body_tests() {
  local i
  for ((i = 0; i < NK_SHARDS; i++)); do
    (
      LD_LIBRARY_PATH="$NK_BIN_LD" GTEST_TOTAL_SHARDS=$NK_SHARDS GTEST_SHARD_INDEX=$i \
        "$NK_BUNDLE/normkit_tests" --gtest_filter="$GPU_FILTER" > "$NK_WORK/shard$i.log" 2>&1
      echo $? > "$NK_WORK/shard$i.rc"
    ) &
  done
  (
    if [ -x "$NK_BUNDLE/normkit_simulator_probes" ]; then
      LD_LIBRARY_PATH="$NK_BIN_LD" "$NK_BUNDLE/normkit_simulator_probes" > "$NK_WORK/probes.log" 2>&1
      echo $? > "$NK_WORK/probes.rc"
    fi
    LD_LIBRARY_PATH="$NK_BIN_LD" "$NK_BUNDLE/normkit_demo" > "$NK_WORK/demo.log" 2>&1
    echo $? > "$NK_WORK/demo.rc"
    LD_LIBRARY_PATH="$NK_BIN_LD" "$NK_BUNDLE/normkit_sync_batch_norm_nccl" > "$NK_WORK/nccl.log" 2>&1
    echo $? > "$NK_WORK/nccl.rc"
    LD_LIBRARY_PATH="$NK_PY_LD" NORMKIT_LIB="$NK_BUNDLE/libnormkit.so.0" NORMKIT_PARITY_DEVICE=cuda \
      "$NK_PYTHON" -m pytest -q -p no:warnings -p no:cacheprovider tests/parity \
      > "$NK_WORK/parity.log" 2>&1
    echo $? > "$NK_WORK/parity.rc"
  ) &
  wait
}

# compute-sanitizer, the given tools at once, each over NK_SAN_SHARDS shards of the reduced set.
body_sanitize() {
  local tool i extra
  for tool in "$@"; do
    extra=()
    # memcheck ends only the faulting kernel (not the context, its default): the later tests of
    # the shard still run, so each test with an invalid access is reported as itself.
    [ "$tool" = memcheck ] && extra=(--leak-check full --destroy-on-device-error kernel)
    for ((i = 0; i < NK_SAN_SHARDS; i++)); do
      (
        LD_LIBRARY_PATH="$NK_BIN_LD" NORMKIT_GPU_TESTS=reduced GTEST_TOTAL_SHARDS=$NK_SAN_SHARDS \
          GTEST_SHARD_INDEX=$i "$NK_SANITIZER" --tool "$tool" "${extra[@]}" --print-limit 50 \
          "$NK_BUNDLE/normkit_tests" --gtest_filter="$NK_SANITIZER_FILTER" \
          > "$NK_WORK/san_${tool}_$i.log" 2>&1
        echo $? > "$NK_WORK/san_${tool}_$i.rc"
      ) &
    done
  done
  wait
}

body_bandwidth() {
  LD_LIBRARY_PATH="$NK_BIN_LD" "$NK_BUNDLE/normkit_rough_bandwidth" > "$NK_WORK/bandwidth.txt" 2>&1
}

# Google Benchmark's JSON on stdout, line-buffered (stdbuf), so that a run cut short keeps every
# finished case (summarize.py reads a truncated file).
body_bench() {
  local line_buffered=()
  command -v stdbuf > /dev/null && line_buffered=(stdbuf -oL)
  LD_LIBRARY_PATH="$NK_BIN_LD" NORMKIT_BENCH_SAMPLES="$NK_BENCH_SAMPLES" \
    "${line_buffered[@]}" "$NK_BUNDLE/normkit_bench" --benchmark_filter="$NK_BENCH_FILTER" \
    --benchmark_format=json > "$NK_WORK/bench.json" 2> "$NK_WORK/bench.err"
}

# torch_compare.py rewrites its JSON after every case: eager over all cases first, then the
# torch.compile pass, so a cut keeps every eager ratio.
body_torch() {
  LD_LIBRARY_PATH="$NK_PY_LD" NORMKIT_LIB="$NK_BUNDLE/libnormkit.so.0" PYTHONUNBUFFERED=1 \
    "$NK_PYTHON" bench/torch_compare.py --sets "$TORCH_SETS" --filter "$NK_TORCH_FILTER" \
    --iters 30 --warmup 5 --compile-limit "$COMPILE_LIMIT" --compile-filter "$COMPILE_FILTER" \
    --out "$NK_WORK/torch.json" > "$NK_WORK/torch.log" 2>&1
}

# One ncu process over normkit_bench restricted to the six cases, profiling only normkit's first
# call of each (cudaProfilerStart/Stop around it, --profile-from-start off); clocks left alone.
# If ncu refuses a metric name, once more with the two this check is for.
body_ncu() {
  local filter metrics=$NCU_METRICS rc
  filter="^($(IFS='|'; echo "${NCU_CASES[*]}"))/"
  for attempt in full core; do
    echo "ncu --metrics $metrics, cases: ${NCU_CASES[*]}" > "$NK_WORK/ncu_cmd.txt"
    LD_LIBRARY_PATH="$NK_BIN_LD" NORMKIT_BENCH_PROFILE=1 NORMKIT_BENCH_SAMPLES=5 \
      "$NK_NCU" --profile-from-start off --clock-control none --metrics "$metrics" --csv \
      --print-units base --log-file "$NK_WORK/ncu.csv" \
      "$NK_BUNDLE/normkit_bench" --benchmark_filter="$filter" > "$NK_WORK/ncu_app.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] || [ $attempt = core ] || ! grep -qiE \
         '(find|unknown|invalid|unsupported) metric|metric[^,]*(not found|not supported|unavailable)' \
         "$NK_WORK/ncu.csv" "$NK_WORK/ncu_app.log" 2>/dev/null; then
      return $rc
    fi
    cat "$NK_WORK/ncu.csv" >> "$NK_WORK/ncu_first_attempt.txt" 2>/dev/null
    metrics=$NCU_METRICS_CORE
  done
}

run_body() {
  case $1 in
    env) body_env ;;
    tests) body_tests ;;
    sanitizers) body_sanitize memcheck racecheck ;;
    sanitizers_extra) body_sanitize initcheck synccheck ;;
    bandwidth) body_bandwidth ;;
    bench) body_bench ;;
    torch) body_torch ;;
    ncu) body_ncu ;;
  esac
}

if [ "${1:-}" = --phase-body ]; then
  cd "$NK_ROOT" || exit 1
  run_body "$2"
  exit $?
fi

# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------

budget=500
bench_filter='^(check|bn_resnet50|bn_in_place|bn_features|bn_mobilenet_v2|instance_norm|group_norm)/'
torch_filter='^check/|^(bn_resnet50/N256|bn_features|bn_mobilenet_v2|instance_norm|group_norm)/.*/bf16/'
sanitizer_filter=$DEFAULT_SANITIZER_FILTER
list_only=0
selected=()
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --budget)
      [ $# -ge 2 ] || die_usage "--budget needs a number of seconds"
      is_seconds "$2" || die_usage "--budget '$2' is not a positive number of seconds"
      budget=$2; shift 2 ;;
    --budget=*)
      is_seconds "${1#*=}" || die_usage "--budget '${1#*=}' is not a positive number of seconds"
      budget=${1#*=}; shift ;;
    --limit)
      [ $# -ge 2 ] || die_usage "--limit needs PHASE=SECONDS"
      set -- "--limit=$2" "${@:3}" ;;
    --limit=*)
      spec=${1#*=}
      [[ $spec == *=* ]] || die_usage "--limit '$spec' is not PHASE=SECONDS"
      is_phase "${spec%%=*}" || die_usage "--limit: unknown phase '${spec%%=*}'; phases: ${PHASES[*]}"
      is_seconds "${spec#*=}" || die_usage "--limit '$spec': '${spec#*=}' is not a positive number of seconds"
      LIMIT[${spec%%=*}]=${spec#*=}; shift ;;
    --bench-filter)
      [ $# -ge 2 ] || die_usage "--bench-filter needs a regular expression"
      bench_filter=$2; shift 2 ;;
    --bench-filter=*) bench_filter=${1#*=}; shift ;;
    --torch-filter)
      [ $# -ge 2 ] || die_usage "--torch-filter needs a regular expression"
      torch_filter=$2; shift 2 ;;
    --torch-filter=*) torch_filter=${1#*=}; shift ;;
    --sanitizer-filter)
      [ $# -ge 2 ] || die_usage "--sanitizer-filter needs a GoogleTest filter"
      sanitizer_filter=$2; shift 2 ;;
    --sanitizer-filter=*) sanitizer_filter=${1#*=}; shift ;;
    --list) list_only=1; shift ;;
    all) selected+=("${PHASES[@]}"); shift ;;
    -*) die_usage "unknown option '$1'" ;;
    *)
      is_phase "$1" || die_usage "unknown phase '$1'; phases: ${PHASES[*]} (or all)"
      selected+=("$1"); shift ;;
  esac
done
[ ${#selected[@]} -eq 0 ] && selected=("${PHASES[@]}")
# The canonical order, each phase once.
order=()
for p in "${PHASES[@]}"; do
  for s in "${selected[@]}"; do
    if [ "$p" = "$s" ]; then order+=("$p"); break; fi
  done
done

if [ $list_only -eq 1 ]; then
  echo "budget: $budget s ($RESERVE s of it kept for the summary)"
  for p in "${order[@]}"; do
    printf '%-17s %4s s  (starts with >= %s s left)\n' "$p" "${LIMIT[$p]}" "${MIN_START[$p]}"
  done
  echo "bench filter: $bench_filter"
  echo "torch filter: $torch_filter"
  echo "sanitizer filter: $sanitizer_filter"
  printf 'ncu case: %s\n' "${NCU_CASES[@]}"
  echo "ncu metrics: $NCU_METRICS"
  echo "torch.compile: at most $COMPILE_LIMIT shapes of $COMPILE_FILTER"
  exit 0
fi

# ------------------------------------------------------------------------------------------------
# Set-up: folders, tools, libraries (all inside the budget)
# ------------------------------------------------------------------------------------------------

T0=$(date +%s)
deadline=$((T0 + budget))
root=$(cd "$(dirname "$0")/.." && pwd)
self="$root/scripts/$(basename "$0")"
out=$(realpath -m "${OUT:-$root/gpu-check-out}")
bundle=$(realpath -m "${BUNDLE:-$root/.gpu-bundle}")
python=${PYTHON:-python3}
cd "$root" || exit 2
if [ ! -f "$bundle/normkit_tests" ]; then
  echo "gpu_check.sh: no bundle at $bundle (make it here with scripts/gpu_bundle.sh and carry .gpu-bundle)" >&2
  exit 2
fi
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
current_group=""
cleanup() {
  [ -n "$current_group" ] && kill -KILL -- "-$current_group" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A tool from its variable ("none": absent), else the PATH, else the usual folders.
find_tool() {
  local var=$1 name=$2 candidate
  shift 2
  if [ -n "${!var+x}" ]; then
    [ "${!var}" = none ] || [ -z "${!var}" ] || echo "${!var}"
    return
  fi
  command -v "$name" 2>/dev/null && return
  for candidate in "$@"; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
}
sanitizer=$(find_tool NORMKIT_GPU_CHECK_SANITIZER compute-sanitizer \
  /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
  /opt/nvidia/compute-sanitizer/compute-sanitizer)
# shellcheck disable=SC2046  # the folders found, one word each (no spaces in these paths)
ncu=$(find_tool NORMKIT_GPU_CHECK_NCU ncu /usr/local/cuda/bin/ncu \
  $(ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/nsight-compute*/ncu 2>/dev/null | sort -r))

# The folders of PyTorch's nvidia-* wheels that hold cuDNN, NVRTC (cuDNN compiles some engines at
# run time), cuBLAS and NCCL.
timeout 20 "$python" - > "$work/wheel_libs.txt" 2> /dev/null <<'PY'
import glob, os, site
roots = [r for r in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(r)]
for key, pattern in (("cudnn", "libcudnn.so.9"), ("nvrtc", "libnvrtc.so.*"),
                     ("cublas", "libcublasLt.so.*"), ("nccl", "libnccl.so.2")):
    hits = sorted(h for r in roots for h in glob.glob(os.path.join(r, "nvidia", "**", pattern),
                                                      recursive=True))
    print(f"{key}={os.path.dirname(hits[0]) if hits else ''}")
PY
declare -A wheel=([cudnn]="" [nvrtc]="" [cublas]="" [nccl]="")
while IFS='=' read -r key dir; do
  [ -n "$key" ] && wheel[$key]=$dir
done < "$work/wheel_libs.txt"
wheel_ld=""
for key in cudnn nvrtc cublas nccl; do
  [ -n "${wheel[$key]}" ] && wheel_ld="$wheel_ld:${wheel[$key]}"
done
bin_ld="$bundle$wheel_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The bundle's libstdc++/libgcc_s only where the machine's own lack a version the binaries need.
missing=$(LD_LIBRARY_PATH="$bin_ld" ldd "$bundle"/normkit_* "$bundle/libnormkit.so.0" 2>&1 | grep 'not found' | sort -u)
compat=no
if [ -n "$missing" ] && [ -d "$bundle/compat" ]; then
  bin_ld="$bundle:$bundle/compat$wheel_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  compat=yes
  missing=$(LD_LIBRARY_PATH="$bin_ld" ldd "$bundle"/normkit_* "$bundle/libnormkit.so.0" 2>&1 | grep 'not found' | sort -u)
fi
py_ld="${LD_LIBRARY_PATH:-}${wheel[nccl]:+${LD_LIBRARY_PATH:+:}${wheel[nccl]}}"
{
  echo "library folders (PyTorch's nvidia-* wheels):"
  for key in cudnn nvrtc cublas nccl; do echo "  $key: ${wheel[$key]:-not found}"; done
  echo "bundle's compat/ libstdc++ and libgcc_s in use: $compat"
  echo "libraries still missing for the bundle's binaries: ${missing:-none}"
} > "$work/libraries.txt"
gpu_name=$(timeout 10 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)

export NK_ROOT="$root" NK_WORK="$work" NK_OUT="$out" NK_BUNDLE="$bundle" NK_PYTHON="$python" \
  NK_SANITIZER="$sanitizer" NK_NCU="$ncu" NK_BIN_LD="$bin_ld" NK_PY_LD="$py_ld" \
  NK_BUDGET="$budget" NK_SELECTED="${order[*]}" NK_BENCH_FILTER="$bench_filter" \
  NK_TORCH_FILTER="$torch_filter" NK_SANITIZER_FILTER="$sanitizer_filter" \
  NK_SHARDS="${NORMKIT_GPU_CHECK_SHARDS:-14}" NK_SAN_SHARDS="${NORMKIT_GPU_CHECK_SANITIZER_SHARDS:-6}" \
  NK_BENCH_SAMPLES="${NORMKIT_BENCH_SAMPLES:-30}" NK_LOG_CAP="${NORMKIT_GPU_CHECK_LOG_CAP:-524288}"

say "GPU: ${gpu_name:-none found}; bundle $(head -1 "$bundle/COMMIT" 2>/dev/null); budget ${budget} s; phases: ${order[*]}"
say "compute-sanitizer: ${sanitizer:-not found}; ncu: ${ncu:-not found}; cuDNN: ${wheel[cudnn]:-not found}; NCCL: ${wheel[nccl]:-not found}; compat libstdc++: $compat"

# The files of $OUT that the selected phases write afresh (8 files at most in all: env.txt,
# tests.log, sanitizers.log, perf.log, bench.json, torch.json, ncu.txt, summary.md).
for p in "${order[@]}"; do
  case $p in
    env) rm -f "$out/env.txt" ;;
    tests) rm -f "$out/tests.log" ;;
    sanitizers|sanitizers_extra) rm -f "$out/sanitizers.log" ;;
    bandwidth) rm -f "$out/perf.log" ;;
    bench) rm -f "$out/perf.log" "$out/bench.json" ;;
    torch) rm -f "$out/perf.log" "$out/torch.json" ;;
    ncu) rm -f "$out/ncu.txt" ;;
  esac
done

# ------------------------------------------------------------------------------------------------
# Running a phase, and the reports on what each left behind
# ------------------------------------------------------------------------------------------------

failures=0
# One row of the phase table: phase, limit, seconds taken, status, result.
record() {
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "${5//|//}" >> "$work/rows.md"
  [[ $4 == ok* || $4 == skipped* ]] || failures=$((failures + 1))
}

# Appends a file to an $OUT log under a header line. A shard's log (a tool's or a failing test's
# messages can run to many MB) is cut to NK_LOG_CAP bytes: its first three quarters, where the
# first errors are, and its last quarter, with the counts.
append_section() {
  local size head_bytes tail_bytes
  size=$(stat -c %s "$1" 2>/dev/null || echo 0)
  {
    echo "==== $2 ===="
    if [ "$size" -le "$NK_LOG_CAP" ]; then
      cat "$1" 2>/dev/null
    else
      head_bytes=$((NK_LOG_CAP * 3 / 4))
      tail_bytes=$((NK_LOG_CAP - head_bytes))
      head -c "$head_bytes" "$1"
      echo
      echo "[gpu_check: $((size - NK_LOG_CAP)) of this log's $size bytes left out here;" \
           "its first $head_bytes and last $tail_bytes bytes are kept]"
      tail -c "$tail_bytes" "$1"
    fi
    echo
  } >> "$3"
}

# The first error compute-sanitizer reports in a log, with the function it names and the test that
# was running: "MESSAGE at FUNCTION, in TEST" (empty without an error).
first_sanitizer_error() {
  awk '
    /^\[ RUN      \] / { test = $4 }
    !msg && /^========= [^ ]/ &&
        !/COMPUTE-SANITIZER|ERROR SUMMARY|LEAK SUMMARY|Target application/ {
      msg = substr($0, 11); where = test; want_at = 1; next
    }
    want_at && /^=========     at / { at = substr($0, 18); want_at = 0 }
    END {
      if (!msg) exit
      if (length(at) > 100) at = substr(at, 1, 100) "..."
      printf "%s%s, in %s\n", msg, (at != "" ? " at " at : ""), (where != "" ? where : "no test")
    }' "$1" 2>/dev/null
}

# Lines of the named files (missing ones are empty) that match a regular expression.
count() {
  local pattern=$1 n
  shift
  n=$(cat "$@" 2>/dev/null | grep -cE "$pattern")
  echo "${n:-0}"
}

# The first N failed tests of GoogleTest logs, their names only, on one line.
failed_tests() {
  local n=$1
  shift
  cat "$@" 2>/dev/null | grep -E '^\[  FAILED  \] .* \([0-9]+ ms\)$' \
    | sed -E 's/^\[  FAILED  \] //; s/(, where | \([0-9]+ ms\)$).*//' | head -"$n" | tr '\n' ' '
}

# rc files: "finished/started, N with rc != 0" into the globals finished and bad.
count_rc() {
  local f
  finished=0 bad=0
  for f in "$@"; do
    [ -f "$f" ] || continue
    finished=$((finished + 1))
    [ "$(cat "$f")" = 0 ] || bad=$((bad + 1))
  done
}

# The reports: each sets `result` (one line for the table) and `verdict` (non-empty when the
# phase's own logs show a failure, whatever its exit status), and moves its logs into $OUT.
report_env() {
  result="$(count . "$out/env.txt") lines (env.txt)"
}

report_tests() {
  local ok failed skipped names f parity probes
  count_rc "$work"/shard*.rc
  ok=$(count '^\[       OK \]' "$work"/shard*.log)
  failed=$(count '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$work"/shard*.log)
  skipped=$(count '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$work"/shard*.log)
  names=$(failed_tests 5 "$work"/shard*.log)
  for f in "$work"/shard*.log; do
    [ -f "$f" ] && append_section "$f" "$(basename "$f" .log) of $NK_SHARDS" "$out/tests.log"
  done
  for f in probes demo nccl parity; do
    [ -f "$work/$f.log" ] && append_section "$work/$f.log" \
      "$f (rc $(cat "$work/$f.rc" 2>/dev/null || echo 'none: cut short'))" "$out/tests.log"
  done
  [ -s "$work/tests.out" ] && append_section "$work/tests.out" "the phase's own output" "$out/tests.log"
  parity=$(grep -E '(passed|failed|error)' "$work/parity.log" 2>/dev/null | tail -1)
  [ -n "$parity" ] || parity=$(tail -1 "$work/parity.log" 2>/dev/null | cut -c1-160)
  if [ -f "$work/probes.log" ]; then
    probes="$(count '^probe .*: ok$' "$work/probes.log") ok, $(count '^probe .*: FAIL$' "$work/probes.log") failed, $(count '^probe .*: skipped' "$work/probes.log") skipped (rc $(cat "$work/probes.rc" 2>/dev/null || echo -))"
  elif [ -x "$NK_BUNDLE/normkit_simulator_probes" ]; then
    probes="no result"
  else
    probes="not in the bundle"
  fi
  result="gtest: $ok passed, $failed failed, $skipped skipped; shards finished $finished/$NK_SHARDS ($bad with rc != 0)${names:+; failed: $names}"
  result+="; probes: $probes"
  result+="; demo rc $(cat "$work/demo.rc" 2>/dev/null || echo -); NCCL example rc $(cat "$work/nccl.rc" 2>/dev/null || echo -)"
  result+="; parity: ${parity:-no result} (rc $(cat "$work/parity.rc" 2>/dev/null || echo -))"
  verdict=""
  [ "$failed" -eq 0 ] && [ "$bad" -eq 0 ] || verdict="failed"
  [ "$ok" -gt 0 ] || verdict="failed"  # every GPU test skipped: no GPU was used
  for f in probes demo nccl parity; do
    [ -f "$work/$f.rc" ] && [ "$(cat "$work/$f.rc")" != 0 ] && verdict="failed"
  done
}

report_sanitize() {
  local tool f n errors passed failed says first names parts=()
  verdict=""
  for tool in "$@"; do
    errors=0 first=""
    for f in "$work"/san_"${tool}"_*.log; do
      [ -f "$f" ] || continue
      # Each shard's first error goes to the summary before its log is cut to size.
      n=$(first_sanitizer_error "$f")
      if [ -n "$n" ]; then
        echo "- $tool, $(basename "$f" .log): ${n//|//}" >> "$work/san_first.md"
        [ -n "$first" ] || first=$n
      fi
      append_section "$f" "compute-sanitizer --tool $tool, $(basename "$f" .log)" "$out/sanitizers.log"
      n=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$f" | grep -Eo '[0-9]+' | tail -1)
      errors=$((errors + ${n:-0}))
    done
    count_rc "$work"/san_"${tool}"_*.rc
    passed=$(count '^\[       OK \]' "$work"/san_"${tool}"_*.log)
    failed=$(count '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$work"/san_"${tool}"_*.log)
    says=$(cat "$work"/san_"${tool}"_*.log 2>/dev/null \
           | grep -m1 -iE 'device not supported|not supported on|error 999|unable to' | cut -c1-120)
    names=$(failed_tests 3 "$work"/san_"${tool}"_*.log)
    parts+=("$tool: $errors errors, shards finished $finished/$NK_SAN_SHARDS ($bad with rc != 0), tests $passed passed, $failed failed${names:+ (first: $names)}${first:+; first error: $first}${says:+; it says: $says}")
    [ "$errors" -eq 0 ] && [ "$bad" -eq 0 ] && [ "$failed" -eq 0 ] || verdict="failed"
  done
  result=$(printf '%s; ' "${parts[@]}")
  result=${result%; }
}

report_bandwidth() {
  append_section "$work/bandwidth.txt" "rough bandwidth probe" "$out/perf.log"
  result="$(count . "$work/bandwidth.txt") lines (perf.log, summary)"
}

report_bench() {
  local cases errors cut
  [ -s "$work/bench.json" ] && cp "$work/bench.json" "$out/bench.json"
  append_section "$work/bench.err" "normkit_bench's stderr (its results: bench.json)" "$out/perf.log"
  # Cases measured and cases in error, read as summarize.py reads a file cut short.
  read -r cases errors cut < <(timeout 20 "$NK_PYTHON" - "$work/bench.json" 2>/dev/null <<'PY'
import sys
sys.path.insert(0, "bench")
import summarize
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        data, cut = summarize.load_results(f.read())
except (OSError, ValueError):
    print(0, 0, "unreadable")
    sys.exit()
cases = [b for b in data.get("benchmarks", []) if not b.get("name", "").startswith("copy/")]
print(len(cases), sum(1 for b in cases if b.get("error_occurred")), "cut" if cut else "whole")
PY
)
  result="${cases:-0} cases in bench.json$([ "${cut:-}" = cut ] && echo ' (cut short)'), ${errors:-0} in error (filter $NK_BENCH_FILTER)"
  [ "${errors:-0}" -eq 0 ] || verdict="failed"
  if [ "${cases:-0}" -eq 0 ]; then
    verdict="failed"
    result+="; it says: $(head -1 "$work/bench.err" 2>/dev/null | cut -c1-160)"
  fi
}

report_torch() {
  [ -s "$work/torch.json" ] && cp "$work/torch.json" "$out/torch.json"
  append_section "$work/torch.log" "torch_compare.py" "$out/perf.log"
  local cases
  cases=$(count '"normkit_ms"' "$work/torch.json")
  result="$cases cases in torch.json, $(count '"compile_ms": [0-9]' "$work/torch.json") through torch.compile; checks not ok: $(count '"check": "MISMATCH' "$work/torch.json")"
  [ "$(count '"check": "MISMATCH' "$work/torch.json")" -eq 0 ] || verdict="failed"
  if [ "$cases" -eq 0 ]; then
    verdict="failed"
    result+="; it says: $(grep -v '^ *$' "$work/torch.log" 2>/dev/null | tail -1 | cut -c1-160)"
  fi
}

report_ncu() {
  {
    echo "# Nsight Compute on normkit's first call of each case (normkit_bench, NORMKIT_BENCH_PROFILE=1)"
    echo "# ncu: $NK_NCU; clocks left alone (--clock-control none); kernel IDs follow the benchmarks' run order (bn_resnet50, bn_in_place, bn_features, bn_mobilenet_v2, instance_norm, group_norm, then check; normkit_bench's lines below name them)"
    cat "$work/ncu_cmd.txt" 2>/dev/null
    if [ -f "$work/ncu_first_attempt.txt" ]; then
      echo "==== first attempt (a metric was refused) ===="
      cat "$work/ncu_first_attempt.txt"
    fi
    echo "==== ncu output (CSV) ===="
    cat "$work/ncu.csv" 2>/dev/null
    echo "==== normkit_bench under ncu ===="
    cat "$work/ncu_app.log" 2>/dev/null
    cat "$work/ncu.out" 2>/dev/null
  } > "$out/ncu.txt"
  # The CSV is in ncu's log file (or, should this ncu print it, among the application's output).
  timeout 20 "$NK_PYTHON" bench/ncu_table.py "$work/ncu.csv" "$work/ncu_app.log" \
    > "$work/ncu_table.md" 2>> "$out/ncu.txt"
  result="$(count '^\| [0-9]' "$work/ncu_table.md") kernels profiled (ncu.txt, summary)"
}

# Phase NAME: not started past the deadline; else run under its limit (cut to what is left),
# then report on whatever it left behind, finished or not.
run_phase() {
  local name=$1 limit left start took rc status tpid
  left=$((deadline - $(date +%s) - RESERVE))
  limit=${LIMIT[$name]}
  if [ "$left" -lt "${MIN_START[$name]}" ]; then
    record "$name" "$limit" 0 "skipped: not started, ${left} s of the budget left" "-"
    say "$name: not started (${left} s of the budget left, needs ${MIN_START[$name]})"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  case $name in
    sanitizers|sanitizers_extra)
      if [ -z "$sanitizer" ]; then
        record "$name" "$limit" 0 "skipped: compute-sanitizer not found" "-"
        say "$name: skipped, compute-sanitizer not found"; return
      fi ;;
    ncu)
      if [ -z "$ncu" ]; then
        record "$name" "$limit" 0 "skipped: ncu not found" "-"
        say "$name: skipped, ncu (Nsight Compute) not found"; return
      fi ;;
  esac
  say "$name: started, limit ${limit} s"
  start=$(date +%s)
  # timeout makes its own process group: at the limit TERM goes to all of it, KILL after
  # KILL_AFTER s; whatever is left of that group afterwards is killed too.
  timeout --kill-after="$KILL_AFTER" "$limit" bash "$self" --phase-body "$name" > "$work/$name.out" 2>&1 &
  tpid=$!
  current_group=$tpid
  wait "$tpid"
  rc=$?
  kill -KILL -- "-$tpid" 2>/dev/null
  current_group=""
  took=$(($(date +%s) - start))
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after ${limit} s" ;;
    *) status="failed (rc $rc)" ;;
  esac
  result="" verdict=""
  case $name in
    env) report_env ;;
    tests) report_tests ;;
    sanitizers) report_sanitize memcheck racecheck ;;
    sanitizers_extra) report_sanitize initcheck synccheck ;;
    bandwidth) report_bandwidth ;;
    bench) report_bench ;;
    torch) report_torch ;;
    ncu) report_ncu ;;
  esac
  # A phase whose own logs show a failure is not ok, whatever its exit status.
  [ "$status" = ok ] && [ -n "$verdict" ] && status=$verdict
  record "$name" "$limit" "$took" "$status" "$result"
  say "$name: $status in ${took} s: $result"
}

summary() {
  local s="$out/summary.md"
  {
    echo "# GPU check: ${gpu_name:-no GPU name}, normkit $(head -1 "$bundle/COMMIT" 2>/dev/null)"
    echo
    if [ -s "$out/bench.json" ]; then
      local torch_args=()
      [ -s "$out/torch.json" ] && torch_args=(--torch "$out/torch.json")
      timeout 30 "$python" bench/summarize.py "$out/bench.json" "${torch_args[@]}" 2>&1 | sed 's/^#/##/'
      echo
    elif [ -s "$out/torch.json" ]; then
      echo "## PyTorch comparison (torch_compare.py's summary; no bench.json)"
      echo '```'
      sed -n '/^summary:/,$p' "$work/torch.log" 2>/dev/null
      echo '```'
      echo
    fi
    if [ -s "$work/bandwidth.txt" ]; then
      echo "## Rough bandwidth probe"
      echo
      echo '```'
      cat "$work/bandwidth.txt"
      echo '```'
      echo
    fi
    if [ -s "$work/san_first.md" ]; then
      echo "## compute-sanitizer: the first error of each shard (sanitizers.log has the reports)"
      echo
      cat "$work/san_first.md"
      echo
    fi
    if [ -s "$work/ncu_table.md" ]; then
      echo "## Nsight Compute: normkit's first call of each profiled case"
      echo
      cat "$work/ncu_table.md"
      echo
    fi
    echo "## Phases (budget ${budget} s, $(elapsed) s used)"
    echo
    echo "| phase | limit s | took s | status | result |"
    echo "|---|---|---|---|---|"
    cat "$work/rows.md" 2>/dev/null
    echo
    echo "Files in ${out}: $(cd "$out" && ls | tr '\n' ' ')"
  } > "$s"
  echo
  cat "$s"
}

on_signal() {
  trap - TERM INT
  [ -n "$current_group" ] && kill -KILL -- "-$current_group" 2>/dev/null
  current_group=""
  record "(interrupted)" - "$(elapsed)" "interrupted by a signal" "the run was stopped from outside"
  summary
  exit 1
}
trap on_signal TERM INT

for phase in "${order[@]}"; do
  run_phase "$phase"
done
summary
[ "$failures" -eq 0 ]
