#!/usr/bin/env bash
# Builds and runs every test.
#  1. The default build: the CUDA backend compiled for one architecture (NORMKIT_CUDA_ARCH,
#     default 90; without nvcc, a CPU-only build), every CPU test, the install/consumer test, and
#     the GPU tests, which skip with a reason where no GPU is present.
#  2. Host code under AddressSanitizer and UndefinedBehaviorSanitizer (CPU-only build).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
cuda=ON
if ! command -v nvcc >/dev/null; then
  cuda=OFF
  echo "nvcc not found: building without the CUDA backend"
fi

# Every option is set explicitly: a cache left by an earlier configure must not switch tests off.
cmake -S . -B build -G "$generator" -DCMAKE_BUILD_TYPE=Release -DNORMKIT_ENABLE_CUDA=$cuda \
  -DCMAKE_CUDA_ARCHITECTURES="${NORMKIT_CUDA_ARCH:-90}" -DNORMKIT_SANITIZE=OFF \
  -DNORMKIT_BUILD_TESTS=ON -DNORMKIT_BUILD_EXAMPLES=ON -DNORMKIT_BUILD_BENCHMARKS=ON
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure --no-tests=error -j "$jobs"

cmake -S . -B build-sanitize -G "$generator" -DCMAKE_BUILD_TYPE=Debug -DNORMKIT_ENABLE_CUDA=OFF \
  -DNORMKIT_SANITIZE=ON -DNORMKIT_BUILD_TESTS=ON -DNORMKIT_BUILD_EXAMPLES=OFF \
  -DNORMKIT_BUILD_BENCHMARKS=OFF
cmake --build build-sanitize -j "$jobs"
ctest --test-dir build-sanitize --output-on-failure --no-tests=error -j "$jobs"
