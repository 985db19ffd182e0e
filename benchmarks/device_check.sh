#!/usr/bin/env bash
# The GPU check (benchmarks/device_check.py): engine vs CPU reference on the device, engine
# throughput at 64 / 256 / 1024 / 4096 models, the projected 1000-model MNIST twin. At most 8
# minutes on one GPU; exits 0 with one line on a machine without one.
#   bash benchmarks/device_check.sh            # PYTHON=... to choose the interpreter (torch with CUDA)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
if ! "$PYTHON" -c "import torch, numpy, numba, h5py, scipy, tqdm" 2>/dev/null; then
    echo "device_check: $PYTHON lacks the toolkit's requirements; install it first: $PYTHON -m pip install -e ." >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 470 "$PYTHON" benchmarks/device_check.py "$@"
