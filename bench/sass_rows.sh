#!/usr/bin/env bash
# Static SASS evidence of the row-norm kernels (layer and RMS norm) for one architecture, no GPU:
# configures build-sass<arch>/ (CUDA only, no tests, benchmarks or examples), compiles only the
# row-norm object files, and writes into OUT (default bench/results/<date>-static-rows/):
#   res_usage.txt   cuobjdump -res-usage of the objects (registers, stack, shared memory)
#   sass.txt        cuobjdump -sass of the objects
#   table.md        bench/sass_table.py's table of every row-norm kernel
#
#   bench/sass_rows.sh [--arch 90] [--out DIR]
# CUOBJDUMP overrides the cuobjdump used (default /opt/cuda-tools/nvidia/cu13/bin/cuobjdump, else
# the one on the PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=90
out="bench/results/$(date -u +%Y-%m-%d)-static-rows"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "sass_rows.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
cuobjdump=${CUOBJDUMP:-/opt/cuda-tools/nvidia/cu13/bin/cuobjdump}
[ -x "$cuobjdump" ] || cuobjdump=$(command -v cuobjdump)
build=build-sass$arch
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNORMKIT_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DNORMKIT_BUILD_TESTS=OFF -DNORMKIT_BUILD_BENCHMARKS=OFF \
  -DNORMKIT_BUILD_EXAMPLES=OFF >/dev/null
objects=()
for src in kernels/row_norm_*.cu; do
  objects+=("CMakeFiles/normkit.dir/$src.o")
done
nice -n 5 ninja -C "$build" -j 2 "${objects[@]}"
mkdir -p "$out"
: >"$out/res_usage.txt"
for o in "${objects[@]}"; do
  "$cuobjdump" -res-usage "$build/$o" >>"$out/res_usage.txt"
done
python3 bench/sass_table.py "${objects[@]/#/$build/}" --cuobjdump "$cuobjdump" --arch "sm_$arch" \
  --filter 'nk::' >"$out/table.md"
echo "sass_rows.sh: wrote $out/res_usage.txt and $out/table.md"
