#!/usr/bin/env bash
# The simulated-GPU lane: every GPU test of normkit executed on this machine's CPU by GPGPU-Sim in
# functional mode, so that kernels are checked on every change without a GPU. It proves results
# (every kernel x dtype x layout x phase against the CPU backend), not speed, races or CUDA graphs.
#
#   scripts/sim_check.sh [--jobs N] [--batch N] [--timeout S] [--filter PATTERN] [--shard I/N]
#                        [--set reduced|full] [--arch 90|80] [--out DIR]
#
#   --jobs     processes at once (default: the number of cores)
#   --batch    tests per process (default 20): the simulator parses the library's PTX once per
#              process (seconds) and slows down as a process runs many tests
#   --timeout  seconds for one process before it is killed and its unfinished tests are reported
#              (default 1200)
#   --filter   GoogleTest filter of the tests to run (default: every GPU test)
#   --shard    I/N: only every N-th test of the filter's list, starting with the I-th (1 <= I <= N),
#              so that a set too long for one sitting runs as N lanes of about equal length
#   --set      the tests' shape set (NORMKIT_GPU_TESTS; default reduced): full runs every shape and
#              path a test has, for a narrow filter (a whole lane in the full set takes hours)
#   --arch     the PTX the library is built as (default 90: compute_90, run as a compute
#              capability 9.0 device, so thread block clusters and the dependent launches' waits
#              execute; 80: compute_80 on a capability 8.6 device, the forms without clusters)
#   --out      folder for log.txt, summary.md and kernels.md (default bench/results/<date>-sim)
# NORMKIT_SIM_KEEP=1 keeps the raw output of every process (its folder is printed).
#
# It first runs tests/sim/simulator_probes.cu under the simulator and stops (status 4) if a probe
# fails. Exit status: 0 all tests passed or skipped with a reason; 1 a test failed or did not
# finish; 2 bad arguments; 3 the simulator or a tool is missing; 4 the simulator fails its probes.
#
# It needs a GPGPU-Sim that the caller has built for CUDA 13 binaries (it never fetches or builds
# one; README "Simulated-GPU lane" says what the simulator must support):
#   GPGPUSIM_ROOT      the simulator's tree: its libcudart.so under lib/ (or set GPGPUSIM_LIB to
#                      the folder of that libcudart.so)
#   GPGPUSIM_CONFIG    a gpgpusim.config (default: the SM86_RTX3070 config of GPGPUSIM_ROOT); its
#                      folder's *.icnt files are copied beside it. Functional mode is forced.
#   CUDA_INSTALL_PATH  a CUDA tree whose bin/ has cuobjdump, which the simulator runs to extract
#                      PTX (the CUDA 13 toolkit here has none: PyPI's nvidia-cuda-cuobjdump does)
# normkit is built in build-sim/ (build-sim-80/ for --arch 80) with the CUDA runtime shared (the
# simulator is that runtime) and PTX only (NORMKIT_CUDA_RUNTIME=Shared,
# CMAKE_CUDA_ARCHITECTURES=90-virtual or 80-virtual), and the tests run with
# NORMKIT_GPU_TESTS=reduced (or full, --set).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
batch=20
batch_timeout=1200
filter='*Gpu*:*CudaBackend*'
shard=1/1
test_set=reduced
arch=90
out="bench/results/$(date -u +%Y-%m-%d)-sim"
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --timeout) batch_timeout=$2; shift 2 ;;
    --filter) filter=$2; shift 2 ;;
    --shard) shard=$2; shift 2 ;;
    --set) test_set=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "sim_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$test_set" in
  reduced|full) ;;
  *) echo "sim_check.sh: --set takes reduced or full, not '$test_set'" >&2; exit 2 ;;
esac
case "$arch" in
  90) build_dir=build-sim ;;
  80) build_dir=build-sim-80 ;;
  *) echo "sim_check.sh: --arch takes 90 or 80, not '$arch'" >&2; exit 2 ;;
esac
for v in "$jobs" "$batch" "$batch_timeout"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "sim_check.sh: '$v' is not a positive integer" >&2; exit 2; }
done
if [[ ! "$shard" =~ ^([1-9][0-9]*)/([1-9][0-9]*)$ ]] ||
   [ "${BASH_REMATCH[1]}" -gt "${BASH_REMATCH[2]}" ]; then
  echo "sim_check.sh: --shard wants I/N with 1 <= I <= N, not '$shard'" >&2
  exit 2
fi
shard_index=${BASH_REMATCH[1]} shard_count=${BASH_REMATCH[2]}

# ---- what the lane needs, said plainly when it is missing ---------------------------------------
missing() { echo "sim_check.sh: $*" >&2; exit 3; }
sim_lib=${GPGPUSIM_LIB:-}
if [ -z "$sim_lib" ]; then
  [ -n "${GPGPUSIM_ROOT:-}" ] || missing "set GPGPUSIM_ROOT to a GPGPU-Sim tree built for CUDA 13 binaries (or GPGPUSIM_LIB to the folder of its libcudart.so); this script never fetches or builds the simulator"
  sim_so=$(find "$GPGPUSIM_ROOT/lib" -path '*release*' -name libcudart.so 2>/dev/null | head -1)
  [ -n "$sim_so" ] || missing "no libcudart.so under $GPGPUSIM_ROOT/lib/*/*/release: build the simulator first"
  sim_lib=$(dirname "$sim_so")
fi
[ -f "$sim_lib/libcudart.so" ] || missing "$sim_lib has no libcudart.so"
[ -e "$sim_lib/libcudart.so.13" ] || missing "$sim_lib/libcudart.so.13 is missing: the simulator must answer to the soname of CUDA 13's runtime"
config=${GPGPUSIM_CONFIG:-${GPGPUSIM_ROOT:-}/configs/tested-cfgs/SM86_RTX3070/gpgpusim.config}
[ -f "$config" ] || missing "no simulator configuration at '$config': set GPGPUSIM_CONFIG"
if [ -z "${CUDA_INSTALL_PATH:-}" ]; then
  CUDA_INSTALL_PATH=$(dirname "$(dirname "$(command -v nvcc)")")
fi
[ -x "$CUDA_INSTALL_PATH/bin/cuobjdump" ] || missing "no cuobjdump in CUDA_INSTALL_PATH/bin ($CUDA_INSTALL_PATH/bin): point CUDA_INSTALL_PATH at a CUDA tree that has one (PyPI's nvidia-cuda-cuobjdump provides it)"
command -v python3 >/dev/null || missing "python3 is needed for the report"

# ---- build ---------------------------------------------------------------------------------------
# The commit is taken before the build: the summary names what was built, even if the tree moves
# during a long run.
commit="$(git rev-parse HEAD)$(git status --porcelain | grep -q . && echo ' (with uncommitted changes)' || true)"
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
build_log=$build_dir/build.log
mkdir -p "$build_dir"
# The build's output goes to a file; when it fails, its end is shown instead of exiting silently.
build_failed() {
  tail -n 40 "$build_log" >&2
  echo "sim_check.sh: the build failed (whole output: $build_log)" >&2
  exit 1
}
{
  cmake -S . -B "$build_dir" -G "$generator" -DCMAKE_BUILD_TYPE=Release -DNORMKIT_ENABLE_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch-virtual" -DNORMKIT_CUDA_RUNTIME=Shared -DNORMKIT_SANITIZE=OFF \
    -DNORMKIT_BUILD_TESTS=ON -DNORMKIT_BUILD_EXAMPLES=OFF -DNORMKIT_BUILD_BENCHMARKS=OFF &&
    cmake --build "$build_dir" -j "$(nproc)" --target normkit_tests normkit_simulator_probes
} >"$build_log" 2>&1 || build_failed

# ---- batches of tests, each in a fresh simulator process ----------------------------------------
# The binaries are copied, so that a rebuild during the run changes nothing.
work=$(mktemp -d "${TMPDIR:-/tmp}/normkit-sim.XXXXXX")
trap '[ -n "${NORMKIT_SIM_KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir "$work/bin"
cp "$build_dir/tests/normkit_tests" "$build_dir/tests/normkit_simulator_probes" "$work/bin/"
cp "$(readlink -f "$build_dir/libnormkit.so")" "$work/bin/libnormkit.so.0"
tests_bin=$work/bin/normkit_tests
library=$work/bin/libnormkit.so.0
"$tests_bin" --gtest_list_tests --gtest_filter="$filter" |
  awk '/^[^ ]/ { suite = $1 } /^  / { print suite $1 }' |
  awk -v i="$shard_index" -v n="$shard_count" 'NR >= i && (NR - i) % n == 0' > "$work/tests.txt"
total=$(wc -l < "$work/tests.txt")
[ "$total" -gt 0 ] || { echo "sim_check.sh: no test matches '$filter'" >&2; exit 2; }
split -l "$batch" -d -a 4 "$work/tests.txt" "$work/batch."

export LD_LIBRARY_PATH="$work/bin:$sim_lib:${LD_LIBRARY_PATH:-}"
export CUDA_INSTALL_PATH
export CUOBJDUMP_SIM_FILE=jj PTX_SIM_USE_PTX_FILE=1.ptx PTX_SIM_KERNELFILE=_1.ptx
export PYTORCH_BIN=$library  # the simulator reads its PTX from the library, not the test binary
export NORMKIT_GPU_TESTS=$test_set
export work config tests_bin batch_timeout arch

# A copy of the configuration in folder $1: functional simulation only (results, not timing); for
# compute_90 PTX, a capability 9.0 device (clusters; ptxas and the PTX sections of sm_90).
prepare_config() {
  local dir=$1 option
  cp "$config" "$dir/gpgpusim.config"
  cp "$(dirname "$config")"/*.icnt "$dir/" 2>/dev/null || true
  set_option() {
    sed -i "/^$1 /d" "$dir/gpgpusim.config"
    echo "$1 $2" >> "$dir/gpgpusim.config"
  }
  set_option -gpgpu_ptx_sim_mode 1
  if [ "$arch" = 90 ]; then
    for option in "-gpgpu_ptx_force_max_capability 90" "-gpgpu_occupancy_sm_number 90" \
                  "-gpgpu_compute_capability_major 9" "-gpgpu_compute_capability_minor 0"; do
      set_option $option
    done
  fi
}
export -f prepare_config

run_batch() {
  local list=$1 dir=$1.run
  mkdir -p "$dir"
  prepare_config "$dir"
  local rc=0
  (cd "$dir" && timeout --kill-after=30 "$batch_timeout" "$tests_bin" \
     --gtest_filter="$(paste -sd: "$list")" --gtest_output="json:$dir/result.json" \
     > "$dir/output.txt" 2>&1) || rc=$?
  echo "$rc" > "$dir/rc"
  echo "batch $(basename "$list"): $(wc -l < "$list") tests, rc=$rc"
}
export -f run_batch

# First the simulator's probes (tests/sim/simulator_probes.cu): a simulator that gets a shuffle or
# a conversion wrong would make every result below meaningless.
probe_dir="$work/probes"
mkdir -p "$probe_dir"
prepare_config "$probe_dir"
probe_rc=0
(cd "$probe_dir" && PYTORCH_BIN= timeout 600 "$work/bin/normkit_simulator_probes" \
   > "$probe_dir/output.txt" 2>&1) || probe_rc=$?
grep -a '^probe' "$probe_dir/output.txt" > "$work/probes.txt" || true
cat "$work/probes.txt"
if [ "$probe_rc" -ne 0 ] || ! grep -q '^probes: 0 of' "$work/probes.txt"; then
  grep -a -A5 ': FAIL' "$probe_dir/output.txt" | grep -av '^GPGPU-Sim' | head -40 >&2
  echo "sim_check.sh: the simulator fails its probes (status $probe_rc): no lane result can be trusted" >&2
  exit 4
fi

start=$(date +%s)
echo "simulated-GPU lane: $total tests in batches of $batch, $jobs at a time (log: $work)"
# The batches run in a process group of their own: stopping this script (TERM, INT) ends that
# group, so that no further batch starts, and the tests already running.
export jobs
setsid bash -c 'ls "$work"/batch.* | xargs -P "$jobs" -I{} bash -c '\''run_batch "$@"'\'' _ {}' &
runner=$!
trap 'kill -TERM -- "-$runner" 2>/dev/null; pkill -TERM -f -- "$work/bin/"; exit 143' TERM INT
wait "$runner"
trap - TERM INT
wall=$(( $(date +%s) - start ))

mkdir -p "$out"
sim_commit=unknown
if [ -n "${GPGPUSIM_ROOT:-}" ] && [ -d "$GPGPUSIM_ROOT/.git" ]; then
  sim_commit="$(git -C "$GPGPUSIM_ROOT" rev-parse --short HEAD) (locally modified: $(git -C "$GPGPUSIM_ROOT" status --porcelain | grep -c . || true) files)"
fi
python3 scripts/sim_report.py --work "$work" --out "$out" --wall "$wall" \
  --commit "$commit" \
  --simulator "GPGPU-Sim $sim_commit, config $(basename "$(dirname "$config")") (functional mode; compute_$arch PTX$([ "$arch" = 90 ] && echo ', run as compute capability 9.0'))" \
  --filter "$filter$([ "$shard" = 1/1 ] || echo " (shard $shard)")" --set "$test_set" \
  --probes "$work/probes.txt"
