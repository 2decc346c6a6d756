#!/usr/bin/env bash
# Build the GPU probes (tools/gpu_probes/*.cu) into OUTDIR:
#   gpu: nvcc, no torch (seconds): OUTDIR/<probe>     for the compute capabilities in ARCHS
#   emu: g++ with the CPU emulation of tests/cuda_emu/: OUTDIR/<probe>.emu
#
#   bash tools/gpu_probes/build.sh OUTDIR [gpu|emu|both] [ARCHS]     (ARCHS e.g. "90" or "80 90")
#
# ptxas's resource usage of each kernel goes to OUTDIR/<probe>.ptxas.txt. Environment: NVCC
# (default: $CUDA_HOME/bin/nvcc, else nvcc on PATH), CXX (default g++).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUTDIR [gpu|emu|both] [ARCHS]}
what=${2:-both}
archs=${3:-90}
mkdir -p "$out"
probes=(mma_selftest exchange)

if [ "$what" = gpu ] || [ "$what" = both ]; then
  nvcc=${NVCC:-}
  if [ -z "$nvcc" ]; then
    if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then nvcc=$CUDA_HOME/bin/nvcc
    else nvcc=$(command -v nvcc || true); fi
  fi
  [ -n "$nvcc" ] || { echo "build.sh: no nvcc (set NVCC or CUDA_HOME)"; exit 2; }
  gencode=()
  for a in $archs; do gencode+=("-gencode=arch=compute_$a,code=sm_$a"); done
  for p in "${probes[@]}"; do
    "$nvcc" -std=c++17 -O3 -lineinfo --resource-usage "${gencode[@]}" -I"$root/csrc" \
      -I"$here" "$here/$p.cu" -o "$out/$p" > "$out/$p.ptxas.txt" 2>&1 &
  done
  fail=0
  for job in $(jobs -p); do wait "$job" || fail=1; done
  for p in "${probes[@]}"; do
    if [ ! -x "$out/$p" ]; then echo "build.sh: nvcc failed on $p.cu:"; cat "$out/$p.ptxas.txt"; fi
  done
  [ "$fail" = 0 ] || exit 1
fi

if [ "$what" = emu ] || [ "$what" = both ]; then
  cxx=${CXX:-g++}
  for p in "${probes[@]}"; do
    "$cxx" -x c++ -std=c++17 -O1 -pthread -DLSTM_FUSED_CUDA_EMULATION -I"$root/csrc" \
      -I"$root/tests/cuda_emu" -I"$here" "$here/$p.cu" -o "$out/$p.emu"
  done
fi
echo "build.sh: built ${probes[*]} ($what) into $out"
