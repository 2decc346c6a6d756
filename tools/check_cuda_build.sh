#!/usr/bin/env bash
# A real CUDA build of lstm_fused, as a new user makes it, and the check that it loads and that
# every op with a CUDA kernel in csrc/ is registered for the CUDA dispatch key. No GPU needed.
#
#   bash tools/check_cuda_build.sh [--venv DIR] [--arch 90] [--work DIR]
#
# - Builds a copy of this tree (the tracked files and the untracked ones git does not ignore,
#   with their uncommitted changes) in $WORK/src, so the worktree's own CPU build of
#   lstm_fused/_C*.so, build/ and .venv are never touched. $WORK defaults to
#   ${TMPDIR:-/tmp}/lstm_fused_cuda_check and is recreated on every run (the venv aside).
# - Python environment: a fresh venv $WORK/venv with torch==2.14.1 (pip takes it from the local
#   wheel store configured for pip), numpy, ninja and pytest; or, with --venv DIR, an existing
#   venv that already has a CUDA build of torch (lstm_fused is installed into it, editable from
#   the copy, and pytest when it lacks it).
# - Build: CUDA_HOME=/usr/local/cuda-13.0 (the toolkit's own folder: an nvcc wrapper on PATH
#   makes torch guess a CUDA_HOME without cuda_runtime.h; override with $CUDA_HOME),
#   FORCE_CUDA=1, LSTM_FUSED_CUDA_ARCH=90 (or --arch), MAX_JOBS=$(nproc),
#   pip install -e . --no-build-isolation --no-deps. Per-file compile times: ninja's log,
#   which setup.py copies to $WORK/src/build/ninja_log (printed sorted at the end).
# - Check: `import lstm_fused`, then tests/test_cuda_registration.py in that environment (every
#   op with a CUDA kernel registered for CUDA, through torch._C._dispatch_has_kernel_for_dispatch_key).
# Logs: $WORK/logs/{venv,build,check}.log. Exit status: 0 only when all of it passed.
#
# Time here (2 cores, otherwise idle, measured 2026-12-03): 280 s in all: the fresh venv with
# torch 2.14.1 86 s, the build 186 s (sm_90, MAX_JOBS=2; the slowest files lstm_layer_cpu.cpp
# 18 s, attention_cpu.cpp 14 s, attention_cuda.cpp 13 s, every .cu 5-9 s; the AVX2 / AVX-512
# copies of the CPU kernels are compiled outside ninja's log), the import and registration
# check 5 s. Each stage prints "took N s"; per-file times are printed from ninja's log.
# Too heavy for CI (a CUDA torch is a few GB); CI keeps tests/test_cuda_compile.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${TMPDIR:-/tmp}/lstm_fused_cuda_check"
VENV=""
ARCH="90"
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --arch) ARCH="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "check_cuda_build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda-13.0}"
LOGS="$WORK/logs"
START=$(date +%s)
took() { echo "check_cuda_build: $1 took $(( $(date +%s) - $2 )) s"; }

if [ ! -x "$CUDA_HOME/bin/nvcc" ] || [ ! -f "$CUDA_HOME/include/cuda_runtime.h" ]; then
  echo "check_cuda_build: CUDA_HOME=$CUDA_HOME is not a CUDA toolkit (no bin/nvcc or" \
       "include/cuda_runtime.h); set CUDA_HOME to the toolkit's folder" >&2
  exit 1
fi

rm -rf "$WORK/src" "$LOGS"
mkdir -p "$WORK/src" "$LOGS"
# The tree as it is now, without ignored files (build outputs, .venv, caches).
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
   while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
   tar --null -T - -cf -) | tar -xf - -C "$WORK/src"

t=$(date +%s)
if [ -z "$VENV" ]; then
  VENV="$WORK/venv"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # The venv's own setuptools and pip, as tools/setup.sh uses them: a newer setuptools (80+)
  # turns the legacy editable install of this pip into an isolated build without torch.
  "$VENV/bin/pip" install -q "torch==2.14.1" numpy ninja pytest \
    > "$LOGS/venv.log" 2>&1 || { tail -n 50 "$LOGS/venv.log"; exit 1; }
  took "fresh venv with torch 2.14.1" "$t"
fi
PY="$VENV/bin/python"
"$PY" -c "import pytest" 2>/dev/null || "$PY" -m pip install -q pytest > "$LOGS/pytest.log" 2>&1
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'CUDA', torch.version.cuda);
sys.exit(0 if torch.version.cuda else 'this torch is a CPU build: no CUDA build to check')"

t=$(date +%s)
(cd "$WORK/src" &&
   FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH="$ARCH" MAX_JOBS="$(nproc)" \
   PATH="$VENV/bin:$PATH" "$PY" -m pip install -v -e . --no-build-isolation --no-deps) \
  > "$LOGS/build.log" 2>&1 || {
    echo "check_cuda_build: the build failed; first errors (full log: $LOGS/build.log):" >&2
    grep -n -m 20 -E "error|Error" "$LOGS/build.log" >&2 || tail -n 80 "$LOGS/build.log" >&2
    exit 1; }
took "CUDA build (sm_$ARCH, MAX_JOBS=$(nproc))" "$t"

t=$(date +%s)
(cd "$WORK/src" && "$PY" -c "import lstm_fused, torch; print('lstm_fused loads; torch', torch.__version__)" &&
   "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_registration.py) \
  > "$LOGS/check.log" 2>&1 || { cat "$LOGS/check.log"; exit 1; }
cat "$LOGS/check.log"
took "import and registration check" "$t"

echo "per-file compile times (ninja log, seconds):"
for log in "$WORK"/src/build/ninja_log; do
  [ -f "$log" ] && awk -F'\t' 'NR > 1 { n = split($4, p, "/"); printf "%8.1f  %s\n", ($2 - $1) / 1000, p[n] }' "$log" | sort -rn
done
took "check_cuda_build (all)" "$START"
