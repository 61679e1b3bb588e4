#!/usr/bin/env bash
# PyTorch parity (tests/parity/): the same calls through normkit and torch.nn.functional.
# Runs against build/libnormkit.so (scripts/demo.sh or scripts/test.sh builds it), on the CPU
# backend; NORMKIT_PARITY_DEVICE=cuda runs the CUDA backend on CUDA tensors. With PYTHON unset it
# makes a virtual environment with PyTorch and pytest from PyPI (about 3 GB) in build/parity-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [ -z "$python" ]; then
  venv=build/parity-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch pytest
  fi
  python=$venv/bin/python
fi
[ -f build/libnormkit.so ] || { echo "build/libnormkit.so missing: run scripts/test.sh first"; exit 1; }
NORMKIT_LIB=${NORMKIT_LIB:-$PWD/build/libnormkit.so} "$python" -m pytest -q -p no:warnings tests/parity
