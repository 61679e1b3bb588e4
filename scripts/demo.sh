#!/usr/bin/env bash
# Builds the library and runs the demo: batch norm training, the switch to inference, and the
# batch-of-one mismatch. Runs on the GPU when one is present, otherwise on the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
generator="Unix Makefiles"
command -v ninja >/dev/null && generator=Ninja
cuda=ON
command -v nvcc >/dev/null || cuda=OFF
cmake -S . -B build -G "$generator" -DCMAKE_BUILD_TYPE=Release -DNORMKIT_ENABLE_CUDA=$cuda \
  -DCMAKE_CUDA_ARCHITECTURES="${NORMKIT_CUDA_ARCH:-90}" -DNORMKIT_BUILD_EXAMPLES=ON >/dev/null
cmake --build build --target normkit_demo -j "$(nproc)" >/dev/null
exec ./build/examples/normkit_demo
