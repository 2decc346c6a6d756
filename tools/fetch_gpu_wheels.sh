#!/usr/bin/env bash
# Download into .whl/ the Python wheels that the GPU session (tools/gpu_session.sh) needs and
# the device machine's image lacks; the device tool carries the folder: run(..., carry=[".whl"]).
#
#   flashrnn 1.0.8   FlashRNN, the benchmark's peer (pure Python, 157 kB: its CUDA kernels
#                    compile at their first call). Its needs torch, triton, einops and ninja
#                    are on the device image, so nothing else is fetched.
#
# Run it from the checkout the device tool sends (.whl/ is ignored by git: .gitignore).
# The device machine runs Python 3.12 on x86-64; pip picks the wheel for that, not for here.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=("flashrnn==1.0.8")
PY=${PYTHON:-python3}
mkdir -p .whl
for spec in "${WHEELS[@]}"; do
  name=${spec%%==*}
  rm -f .whl/"${name}"-*.whl  # one version of each: two would stop the install there
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$spec"
done
git check-ignore -q .whl || echo "WARNING: .whl/ is not ignored by git here"
ls -la .whl
