#!/usr/bin/env bash
# Run here (no GPU needed): builds the library, the test binary, the GPU probes and the benchmark
# suite for sm_90 and copies them with the commit into .gpu-bundle/, the folder to carry to the GPU
# machine:
#   device run: command "scripts/gpu_check.sh", carry [".gpu-bundle"]
set -euo pipefail
cd "$(dirname "$0")/.."
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
cmake -S . -B build-gpu -G "$generator" -DCMAKE_BUILD_TYPE=Release -DNORMKIT_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DNORMKIT_SANITIZE=OFF -DNORMKIT_BUILD_TESTS=ON \
  -DNORMKIT_BUILD_BENCHMARKS=ON -DNORMKIT_BUILD_EXAMPLES=ON >/dev/null
cmake --build build-gpu -j "$(nproc)" --target normkit_tests normkit_rough_bandwidth normkit_demo \
  normkit_bench normkit_sync_batch_norm_nccl
rm -rf .gpu-bundle && mkdir .gpu-bundle
cp build-gpu/tests/normkit_tests build-gpu/bench/normkit_rough_bandwidth build-gpu/examples/normkit_demo \
  build-gpu/bench/normkit_bench build-gpu/examples/normkit_sync_batch_norm_nccl .gpu-bundle/
cp build-gpu/libnormkit.so.0 .gpu-bundle/  # the real file under its SONAME: no links to carry
# Google Benchmark is a shared library here (Debian's) and absent there: carry the file the
# benchmark suite links, under its SONAME. (cuDNN is not carried: the GPU machine has its own.)
benchmark_lib=$(ldd build-gpu/bench/normkit_bench | awk '/libbenchmark/ { print $3; exit }')
benchmark_soname=$(objdump -p "$benchmark_lib" | awk '$1 == "SONAME" { print $2 }')
cp -L "$benchmark_lib" ".gpu-bundle/$benchmark_soname"
{
  git rev-parse HEAD
  git status --porcelain | grep -q . && echo "(with uncommitted changes)" || true
} > .gpu-bundle/COMMIT
du -sh .gpu-bundle
