#!/usr/bin/env bash
# Run here (no GPU needed): builds the library, the test binary, the device probes
# (tests/sim/simulator_probes.cu), the bandwidth probe, the examples and the benchmark suite for
# sm_90 into build-gpu/, and copies them with the commit and the shared
# libraries they need into .gpu-bundle/, the folder to carry to the GPU machine:
#   device run: command "scripts/gpu_check.sh", timeout_s 540, carry [".gpu-bundle"]
#
#   scripts/gpu_bundle.sh                     build, assemble, check the size
#   scripts/gpu_bundle.sh --check-size [DIR]  only the size check, of DIR (default .gpu-bundle)
#
# Libraries: every one the binaries link (ldd) that is not the C library's own (libc, libm, libdl,
# libpthread, librt, the loader), the driver's (libcuda) or one the GPU machine takes from
# PyTorch's nvidia-* wheels (cuDNN, NCCL, cuBLAS, NVRTC), carried as the file under its SONAME:
# here Debian's Google Benchmark. libstdc++ and libgcc_s go to .gpu-bundle/compat/, which
# gpu_check.sh puts on the library path only when the machine's own are older than these.
#
# The size check: what travels to the GPU machine is the bundle and the working tree (tracked and
# untracked-not-ignored files), 64 MiB at most in all (NORMKIT_BUNDLE_LIMIT_MIB); it prints both
# sizes and fails over the limit.
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=${NORMKIT_BUNDLE_LIMIT_MIB:-64}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

check_size() {
  local dir=$1 bundle_bytes tree_bytes total
  bundle_bytes=$(du -sb "$dir" | cut -f1)  # apparent sizes: what is copied, sparse or not
  tree_bytes=$(git ls-files -z --cached --others --exclude-standard \
               | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
  total=$((bundle_bytes + tree_bytes))
  echo "size: bundle $(mib "$bundle_bytes") MiB ($dir), working tree $(mib "$tree_bytes") MiB;" \
       "together $(mib "$total") MiB of the ${limit_mib} MiB that may travel"
  if [ "$total" -gt $((limit_mib * 1048576)) ]; then
    echo "gpu_bundle.sh: the bundle and the working tree are over the ${limit_mib} MiB a device call" \
         "carries; leave something out" >&2
    return 1
  fi
}

if [ "${1:-}" = --check-size ]; then
  check_size "${2:-.gpu-bundle}"
  exit $?
fi
if [ $# -gt 0 ]; then
  echo "usage: scripts/gpu_bundle.sh [--check-size [DIR]]" >&2
  exit 2
fi

generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
# sm_90 machine code only (H100 and H200 run it as is; no PTX for newer GPUs), the fatbinary
# compressed for size (unpacked by the driver at module load; CUDA 13 needs driver 580+): with an
# sm_90 + compute_90 build the library alone was 38.7 MB (31.1 MB of fatbinary) and the bundle and
# the working tree together 73.4 MiB on 2026-12-07; this way 16.5 MB and 52.2 MiB, the same SASS.
cmake -S . -B build-gpu -G "$generator" -DCMAKE_BUILD_TYPE=Release -DNORMKIT_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90-real -DCMAKE_CUDA_FLAGS=--compress-mode=size \
  -DNORMKIT_SANITIZE=OFF -DNORMKIT_BUILD_TESTS=ON -DNORMKIT_BUILD_BENCHMARKS=ON \
  -DNORMKIT_BUILD_EXAMPLES=ON >/dev/null
cmake --build build-gpu -j "$(nproc)" --target normkit_tests normkit_rough_bandwidth normkit_demo \
  normkit_bench normkit_sync_batch_norm_nccl normkit_simulator_probes
rm -rf .gpu-bundle && mkdir -p .gpu-bundle/compat
binaries=(build-gpu/tests/normkit_tests build-gpu/bench/normkit_rough_bandwidth
          build-gpu/examples/normkit_demo build-gpu/bench/normkit_bench
          build-gpu/examples/normkit_sync_batch_norm_nccl build-gpu/tests/normkit_simulator_probes)
cp "${binaries[@]}" .gpu-bundle/
cp -L build-gpu/libnormkit.so.0 .gpu-bundle/  # the real file under its SONAME: no links to carry

# The libraries to carry: "soname path" of every resolved dependency, minus those named above.
ldd "${binaries[@]}" build-gpu/libnormkit.so.0 \
  | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u \
  | while read -r soname path; do
      case $soname in
        libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|libutil.so.*) ;;
        ld-linux*|linux-vdso*|libcuda.so.*|libnvidia-*) ;;
        libcudnn*|libnccl*|libcublas*|libnvrtc*) ;;   # from the nvidia-* wheels there
        libnormkit.so.*) ;;                             # copied above
        libstdc++.so.*|libgcc_s.so.*) cp -L "$path" ".gpu-bundle/compat/$soname" ;;
        *) cp -L "$path" ".gpu-bundle/$soname" ;;
      esac
    done
{
  git rev-parse HEAD
  git status --porcelain | grep -q . && echo "(with uncommitted changes)" || true
} > .gpu-bundle/COMMIT
ls -l .gpu-bundle .gpu-bundle/compat
check_size .gpu-bundle
echo 'device run: command "scripts/gpu_check.sh", timeout_s 540, carry [".gpu-bundle"]'
