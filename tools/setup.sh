#!/usr/bin/env bash
# Set up lstm_fused from nothing: a virtual environment in .venv (or $VENV) with the pinned
# CPU build of torch, the test, benchmark, packaging (build) and lint (ruff, clang-format)
# tools, and the extension built in place.
# On a machine with a CUDA toolkit and a CUDA build of torch already installed, use instead:
#   pip install -e . --no-build-isolation --no-deps
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# torch is pinned: an unpinned torch pulls a CUDA build of several GB.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  torch==2.13.0 triton==3.6.0 numpy pytest hypothesis expecttest ninja pytest-benchmark \
  matplotlib tqdm onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2 statsmodels==0.15.0 \
  scikit-learn==1.9.1 build==1.6.1 ruff==0.16.9 clang-format==23.1.1 sb3-contrib==2.9.2 \
  stable-baselines3==2.9.2 gymnasium==1.4.0
# --no-build-isolation: build against the torch above, not a fresh download.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . --no-build-isolation --no-deps
"$VENV/bin/python" -c "import lstm_fused; print('lstm_fused backends:', lstm_fused.available_backends())"
