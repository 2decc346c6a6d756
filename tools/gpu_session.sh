#!/usr/bin/env bash
# The device-machine call of a session that is lent a GPU: one call of about 7 minutes that
# settles the unknowns of the performance model (docs/gpu_performance.md), most valuable first,
# every stage with its own timeout, every measurement written to $OUT/results.tsv as soon as it
# is measured, with the model's prediction beside it (tools/gpu_probes/rows.py,
# tools/gpu_probes/predictions.tsv).
#
#   first call (`run` from the repository root; .whl from tools/fetch_gpu_wheels.sh):
#     run(command="bash tools/gpu_session.sh", carry=[".whl"], timeout_s=540)
#   a rerun, the build skipped where the carried one loads:
#     run(command="bash tools/gpu_session.sh rerun", carry=[".whl", "lstm_fused/<_C .so>"],
#         timeout_s=540)
#   where <_C .so> is the _C.cpython-312-x86_64-linux-gnu.so the first call returned (gunzip
#   it first if it came back as .so.gz), copied into lstm_fused/ of the checkout that is sent.
#   Prefix LSTM_FUSED_GIT_COMMIT=<commit> to the command: the tree travels without .git.
#
# Stages, in this order (arguments: the stages to run; default all; "rerun": all, the build
# skipped when a carried build loads; "bench": info, build (same rule) and bench):
#   info      device, driver, versions, the plan                              -> session.log
#   probes    tools/gpu_probes: built with nvcc (sm_90, no torch: seconds) and with g++ against
#             the CPU emulation; (a) the one-warp mma.sync + ldmatrix self-test, GPU D against
#             the emulation's D and float64; (b) the exchange-only microkernel (flags against
#             grid.sync, with and without the h fetch, forward and backward slices; then the
#             same with every fetched word checked)                         -> session.log
#   build     setup.py build_ext --inplace with FORCE_CUDA=1, sm_90 only, CUDA_HOME set; it
#             starts in the background right after info, so that it compiles while the probes
#             run (they need the GPU, it needs the cores); a build that fails or times out
#             leaves the probe rows intact                                  -> build.log
#   tests     pytest of the CUDA LSTM tests (small shapes, every path, float64 reference)
#   headline  tools/gpu_probes/headline_check.py: the tensor-core path and the gate path
#             against float64 at the model's shapes (T = 1024), cuDNN's error beside them
#   memcheck, synccheck, racecheck   compute-sanitizer on tools/gpu_sanitize.py's LSTM layer
#             calls at a tiny shape (bfloat16: the tensor-core kernels)     -> sanitize.log
#   graph     tests/test_graph_capture.py, where it exists                  -> tests.log
#   bench     python -m bench --headline: the tensor-core path (lstm_fused:cuda), the gate
#             path (lstm_fused:cuda[gates]), nn.LSTM (cuDNN) in fp16 and bf16, FlashRNN (its
#             wheel from .whl/, compiled in the background during the build) -> bench.log,
#             headline.csv
# At most 8 files come back: session.log, results.tsv, build.log, tests.log, sanitize.log,
# bench.log, headline.csv and the built extension (_C.*.so, or .so.gz) when it fits in 16 MiB.
#
# Without a GPU (or with GPU_SESSION_DRY=1) every stage says why it is skipped and does the
# dry part it can (the probes run emulated at tiny sizes, the test selection is collected,
# tools/gpu_sanitize.py --dry runs, the benchmark lists its cases); the script ends 0 with its
# logs. Exit status otherwise: 0 when every stage that ran passed, 1 when one failed or timed out.
#
# Environment: OUT (default ./gpu_out), PYTHON (default python3), GPU_SESSION_BUDGET_S (450),
# GPU_SESSION_<STAGE>_S to change one stage's timeout (INFO, PROBES, BUILD, TESTS, HEADLINE,
# MEMCHECK, SYNCCHECK, RACECHECK, GRAPH, BENCH), GPU_SESSION_PROVIDER_S (60, one benchmark
# provider's limit), GPU_SESSION_FLASHRNN=0 (no FlashRNN, no warm-up), LSTM_FUSED_GIT_COMMIT.
# Written without a GPU: read the logs before trusting a figure, commit only what was seen.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SESSION="$OUT/session.log"
RESULTS="$OUT/results.tsv"
: > "$SESSION"
: > "$RESULTS"
exec > >(tee -a "$SESSION") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

BUDGET_S=${GPU_SESSION_BUDGET_S:-450}
DEADLINE=$((SECONDS + BUDGET_S))
# Stage timeouts (seconds), each also cut to what is left of the budget. The probes run while
# the build compiles, so the budget holds the build's timeout, not the probes': info + build +
# the stages after it add up to the budget (450 s, 7.5 minutes: the 10-minute command limit
# and a rerun within a 15-minute lease both fit).
declare -A LIMIT=([info]=${GPU_SESSION_INFO_S:-15} [probes]=${GPU_SESSION_PROBES_S:-60}
                  [build]=${GPU_SESSION_BUILD_S:-195} [tests]=${GPU_SESSION_TESTS_S:-40}
                  [headline]=${GPU_SESSION_HEADLINE_S:-35} [memcheck]=${GPU_SESSION_MEMCHECK_S:-30}
                  [synccheck]=${GPU_SESSION_SYNCCHECK_S:-20}
                  [racecheck]=${GPU_SESSION_RACECHECK_S:-25} [graph]=${GPU_SESSION_GRAPH_S:-15}
                  [bench]=${GPU_SESSION_BENCH_S:-75})
declare -A STATUS=()
ORDER=(info probes build tests sanitize graph bench)
STATUS_DIR=$(mktemp -d /tmp/gpu_session_status.XXXXXX)
PROBE_DIR=/tmp/gpu_session_probes
BENCH_DIR=/tmp/gpu_session_bench

# ---------------------------------------------------------------------------- arguments
reuse_build=0
if [ $# -eq 0 ] || [ "$*" = "all" ]; then
  STAGES=("${ORDER[@]}")
elif [ "$*" = "rerun" ]; then
  STAGES=("${ORDER[@]}")
  reuse_build=1
elif [ "$*" = "bench" ]; then
  STAGES=(info build bench)
  reuse_build=1
else
  STAGES=("$@")
  for s in "${STAGES[@]}"; do
    case " ${ORDER[*]} " in *" $s "*) ;; *) echo "unknown stage '$s' (stages: ${ORDER[*]})"; exit 2;; esac
  done
fi
wants() { case " ${STAGES[*]} " in *" $1 "*) return 0;; esac; return 1; }

# ---------------------------------------------------------------------------- GPU or dry
DRY_REASON=""
if [ "${GPU_SESSION_DRY:-0}" = "1" ]; then
  DRY_REASON="GPU_SESSION_DRY=1"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  DRY_REASON="no nvidia-smi on this machine"
elif ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  DRY_REASON="torch.cuda.is_available() is False"
fi

find_cuda_home() {  # the toolkit folder that has nvcc and cuda_runtime.h
  local nvcc_dir=""
  if command -v nvcc >/dev/null 2>&1; then
    nvcc_dir=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  fi
  local c
  for c in "${CUDA_HOME:-}" "$nvcc_dir" /usr/local/cuda /usr/local/cuda-13*; do
    if [ -n "$c" ] && [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime.h" ]; then
      echo "$c"; return 0
    fi
  done
  return 1
}
CUDA_HOME_FOUND=$(find_cuda_home || true)

# ---------------------------------------------------------------------------- stage runner
# run_step NAME LOG CMD...: CMD under `timeout` (the smaller of its limit and what is left of
# the budget), all its output appended to LOG ("-": this script's output, session.log);
# records ok / failed (rc N) / timed out in STATUS[NAME] and in $STATUS_DIR/NAME (read back
# after a step that ran in the background). At the limit the step gets $STOP_SIGNAL (default
# TERM; INT for pytest, which then still prints the failures seen so far), KILL 10 s later.
run_step() {
  local name=$1 log=$2; shift 2
  [ "$log" = "-" ] && log=/dev/stdout
  local left=$((DEADLINE - SECONDS - 5)) limit=${LIMIT[$name]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    STATUS[$name]="skipped: only ${left} s left of the ${BUDGET_S} s budget"
    echo "${STATUS[$name]}" > "$STATUS_DIR/$name"
    echo "== $name: ${STATUS[$name]}"
    [ "$log" = /dev/stdout ] || echo "== $name: ${STATUS[$name]}" >> "$log"
    return 0
  fi
  local t0=$SECONDS
  echo "== $name: started $(date -u +%H:%M:%S), timeout ${limit} s"
  [ "$log" = /dev/stdout ] || echo "== $name: started $(date -u +%FT%TZ), timeout ${limit} s: $*" >> "$log"
  timeout -s "${STOP_SIGNAL:-TERM}" --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  case $rc in
    0) STATUS[$name]="ok" ;;
    124|137) STATUS[$name]="TIMED OUT after ${limit} s" ;;
    *) STATUS[$name]="FAILED (exit status $rc)" ;;
  esac
  STATUS[$name]="${STATUS[$name]} in $((SECONDS - t0)) s"
  echo "${STATUS[$name]}" > "$STATUS_DIR/$name"
  echo "== $name: ${STATUS[$name]}"
  if [ "$log" != /dev/stdout ]; then
    echo "== $name: ${STATUS[$name]}" >> "$log"
    [ "$rc" -ne 0 ] && { echo "-- last lines of ${log#"$OUT"/}:"; tail -n 8 "$log"; }
  fi
  # one row per stage in the results table (what passed, what failed, how long)
  "$PY" tools/gpu_probes/rows.py --stage "$name" --results "$RESULTS" --key "stage/$name" \
    --status "${STATUS[$name]%% *}" --value "$((SECONDS - t0))" --unit s \
    --detail "${STATUS[$name]}; log: ${log#"$OUT"/}" > /dev/null
}

skip() {  # skip NAME LOG REASON (LOG "-": this script's output only)
  STATUS[$1]="skipped: $3"
  echo "== $1: ${STATUS[$1]}"
  [ "$2" = "-" ] || echo "== $1: ${STATUS[$1]}" >> "$2"
}

ok() { case "${STATUS[$1]:-}" in ok*) return 0;; esac; return 1; }

# ---------------------------------------------------------------------------- the stages
stage_info() {
  echo "date: $(date -u +%FT%TZ)   host: $(uname -srm)   cores: $(nproc)"
  free -g 2>/dev/null | head -2
  echo "commit: $(git rev-parse --short=12 HEAD 2>/dev/null || echo "${LSTM_FUSED_GIT_COMMIT:-unknown (no .git here; set LSTM_FUSED_GIT_COMMIT)}")"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  echo "CUDA_HOME (the toolkit with nvcc and cuda_runtime.h): ${CUDA_HOME_FOUND:-none found}"
  if [ -n "$CUDA_HOME_FOUND" ]; then "$CUDA_HOME_FOUND/bin/nvcc" --version | tail -2; fi
  local san
  san=$(command -v compute-sanitizer || { [ -n "$CUDA_HOME_FOUND" ] && ls "$CUDA_HOME_FOUND"/bin/compute-sanitizer 2>/dev/null; } || true)
  echo "compute-sanitizer: ${san:-not found}"
  "$PY" - <<'PY'
import importlib.util, platform, torch
print(f"python {platform.python_version()}  torch {torch.__version__}  cuda {torch.version.cuda}  "
      f"cudnn {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB, L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB")
for name in ("triton", "flashrnn", "einops", "ninja", "numpy", "pytest", "xdist",
             "pytest_timeout", "hypothesis"):
    spec = importlib.util.find_spec(name)
    print(f"  {name}: {'absent' if spec is None else 'present'}")
PY
  ls -la .whl 2>/dev/null || echo ".whl/: none carried"
}
export -f stage_info

stage_plan() {
  local mode="GPU"
  [ -n "$DRY_REASON" ] && mode="dry: $DRY_REASON"
  echo "stages: ${STAGES[*]}   budget ${BUDGET_S} s   mode: $mode"
  local s
  for s in info probes build tests headline memcheck synccheck racecheck graph bench; do
    case $s in
      memcheck|synccheck|racecheck) wants sanitize || continue;;
      headline) wants tests || continue;;
      *) wants "$s" || continue;;
    esac
    if [ "$s" = probes ] && wants build; then
      echo "plan: $s timeout ${LIMIT[$s]} s (while the build compiles)"
    else
      echo "plan: $s timeout ${LIMIT[$s]} s"
    fi
  done
}

# rows STAGE: stdin (a program's output) passed through, its RESULT lines into results.tsv as
# they come (tools/gpu_probes/rows.py).
rows() { "$PY" tools/gpu_probes/rows.py --stage "$1" --results "$RESULTS" --echo; }

# (a) then (b); each probe program under its own timeout (in the stage's process group, so
# that the stage's timeout stops it too), each row written as soon as the program prints it.
stage_probes() {  # $1: "emulated" for the dry run (no GPU)
  local mode=${1:-gpu} fail=0
  # The exchange microkernel's runs: name, then its arguments (tools/gpu_probes/exchange.cu).
  # Forward slices as csrc/cuda/lstm_tc_plan.h plans them (U units per CTA, K-slice 96 or 128 per
  # warp, 8 warps); the backward's dz exchange as its 1-D kernel does it (U = 4 x 8 columns of
  # dz per CTA, 4H wide, K-slice 384).
  local EXCHANGE_RUNS=(
    "fwd-headline --units 6 --batch 16 --hidden 768 --kslice 96"
    "fwd-64cta --units 12 --batch 16 --hidden 768 --kslice 96 --modes flags,flags+fetch,grid+fetch"
    "bwd-headline --units 32 --batch 16 --hidden 3072 --kslice 384 --modes local,flags,flags+fetch,grid+fetch"
    "fwd-b64h1024 --units 8 --batch 64 --hidden 1024 --kslice 128 --modes local,flags,flags+fetch,grid+fetch"
    "fwd-small --units 6 --batch 16 --hidden 256 --kslice 96 --modes local,flags,flags+fetch,grid+fetch"
    "bwd-small --units 32 --batch 16 --hidden 1024 --kslice 128 --modes flags,flags+fetch,grid+fetch"
    "check-fwd-headline --units 6 --batch 16 --hidden 768 --kslice 96 --check --reps 3"
    "check-bwd-headline --units 32 --batch 16 --hidden 3072 --kslice 384 --check --reps 3 --modes flags+fetch,grid+fetch"
  )
  # Without a GPU: the emulated builds at tiny sizes (every CUDA thread an OS thread).
  local EXCHANGE_RUNS_EMULATED=(
    "emulated --units 4 --batch 2 --hidden 16 --warps 2 --kslice 8 --steps 6 --check --modes flags+fetch,grid+fetch"
  )
  rm -rf "$PROBE_DIR"; mkdir -p "$PROBE_DIR"
  if [ "$mode" = gpu ]; then
    NVCC="$CUDA_HOME_FOUND/bin/nvcc" bash tools/gpu_probes/build.sh "$PROBE_DIR" both 90 || return 1
    cat "$PROBE_DIR"/*.ptxas.txt | grep -E "Compiling entry|Used [0-9]+ registers" || true
  else
    bash tools/gpu_probes/build.sh "$PROBE_DIR" emu || return 1
  fi
  timeout --foreground 60 "$PROBE_DIR/mma_selftest.emu" --write "$PROBE_DIR/d_emu.txt" 2>&1 | rows probes
  [ "${PIPESTATUS[0]}" = 0 ] || fail=1
  if [ "$mode" = gpu ]; then
    timeout --foreground 60 "$PROBE_DIR/mma_selftest" --against "$PROBE_DIR/d_emu.txt" 2>&1 | rows probes
    [ "${PIPESTATUS[0]}" = 0 ] || fail=1
  fi
  local runs=("${EXCHANGE_RUNS[@]}") exe=$PROBE_DIR/exchange run name
  if [ "$mode" != gpu ]; then runs=("${EXCHANGE_RUNS_EMULATED[@]}"); exe=$PROBE_DIR/exchange.emu; fi
  for run in "${runs[@]}"; do
    name=${run%% *}
    # shellcheck disable=SC2086  # the run's arguments are words
    timeout --foreground 60 "$exe" --shape-name "$name" ${run#* } 2>&1 | rows probes
    [ "${PIPESTATUS[0]}" = 0 ] || fail=1
  done
  return "$fail"
}
export -f stage_probes rows
export PROBE_DIR RESULTS

carried_build_loads() {  # the extension in the tree imports and has CUDA kernels
  "$PY" - <<'PY'
import sys, torch
from lstm_fused.ops import library
if library.LOAD_ERROR is not None:
    sys.exit(f"lstm_fused._C does not load: {library.LOAD_ERROR}")
ops = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("lstm_fused::")]
cuda = [n for n in ops if torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
print(f"lstm_fused ops: {len(ops)}, with a CUDA kernel: {len(cuda)}")
sys.exit(0 if cuda else "no lstm_fused op has a CUDA kernel")
PY
}
export -f carried_build_loads

link_triton_kernels() {  # lstm_fused.triton_kernels, as the installed package maps it
  [ -e lstm_fused/triton_kernels ] || ln -s ../triton_kernels lstm_fused/triton_kernels
}
export -f link_triton_kernels

# The extension is built in place (setup.py build_ext --inplace: pip install -e would build it
# in a temporary folder and take ninja's log with it); lstm_fused.triton_kernels is linked.
# Two cores are left to the probes, which run meanwhile.
stage_build() {
  set -x
  local jobs=$(( $(nproc) > 4 ? $(nproc) - 2 : $(nproc) ))
  export FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH=90 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$jobs
  export CUDA_HOME=$CUDA_HOME_FOUND
  rm -f build/temp*/.ninja_log
  "$PY" setup.py build_ext --inplace
  local rc=$?
  set +x
  echo "-- ninja's per-file compile times (ms, longest first):"
  local f
  for f in build/temp*/.ninja_log; do
    [ -f "$f" ] || continue
    echo "$f"; awk -F'\t' 'NR > 1 { printf "%8d  %s\n", $2 - $1, $4 }' "$f" | sort -rn
  done
  [ "$rc" -ne 0 ] && return "$rc"
  link_triton_kernels
  echo "-- the built extension:"; ls -la lstm_fused/_C*.so
  carried_build_loads
}
export -f stage_build

# The CUDA LSTM tests at small shapes (every kernel path, float64 reference, poisoned outputs),
# and the tensor-core kernels' own GPU tests where they exist.
TEST_FILES="tests/test_cuda_lstm.py"
for f in tests/test_tc_*gpu*.py tests/test_cuda_tc*.py; do [ -f "$f" ] && TEST_FILES="$TEST_FILES $f"; done
export TEST_FILES
stage_tests() {  # $1: "collect" for the dry run
  local extra=()
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=60)
  [ "${1:-}" = "collect" ] && extra=(--collect-only)
  set -x
  # shellcheck disable=SC2086  # TEST_FILES is a list of paths
  "$PY" -m pytest $TEST_FILES -q -ra -p no:cacheprovider --durations=10 "${extra[@]}" \
    -m "not slow_compile" --junitxml=/tmp/gpu_session_tests.xml
}
export -f stage_tests

stage_headline() {
  "$PY" tools/gpu_probes/headline_check.py 2>&1 | rows headline
  return "${PIPESTATUS[0]}"
}
export -f stage_headline

stage_graph() {
  "$PY" -m pytest tests/test_graph_capture.py -q -ra -p no:cacheprovider
}
export -f stage_graph

# compute-sanitizer on the LSTM layer calls of tools/gpu_sanitize.py (bfloat16: the
# tensor-core kernels; float32 too for memcheck: the gate path).
SANITIZE_CALLS=lstm_layer
export SANITIZE_CALLS
stage_memcheck() {
  # No caching allocator: every tensor is its own allocation, so an access past its end is
  # caught instead of landing in a neighbour of the same pool.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 9 \
    --report-api-errors no --print-limit 30 --target-processes all \
    "$PY" tools/gpu_sanitize.py --dtypes bfloat16,float32 --backends cuda --only "$SANITIZE_CALLS"
}
stage_synccheck() {
  "$SANITIZER" --tool synccheck --error-exitcode 9 --report-api-errors no --print-limit 30 \
    --target-processes all "$PY" tools/gpu_sanitize.py --dtypes bfloat16 --backends cuda \
    --only "$SANITIZE_CALLS"
}
stage_racecheck() {
  "$SANITIZER" --tool racecheck --error-exitcode 9 --report-api-errors no --print-limit 30 \
    --target-processes all "$PY" tools/gpu_sanitize.py --dtypes bfloat16 --backends cuda \
    --only "$SANITIZE_CALLS"
}
export -f stage_memcheck stage_synccheck stage_racecheck

# The headline timings: the tensor-core path, the gate path, cuDNN (nn.LSTM) and FlashRNN, in
# bf16 and fp16, forward and forward+backward. The Triton backend is left out (the step path
# at H = 768 is host-bound: tens of ms, nothing to learn in this call).
BENCH_PROVIDERS='nn\.LSTM|lstm_fused:cuda'
stage_bench() {  # $1: "list" for the dry run
  export CUDA_HOME=$CUDA_HOME_FOUND TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$(nproc)
  local providers=$BENCH_PROVIDERS
  if [ "${GPU_SESSION_FLASHRNN:-1}" = 1 ]; then
    providers="$providers|flashrnn"
  else
    echo "GPU_SESSION_FLASHRNN=0: FlashRNN is not run"
  fi
  local args=(--headline --no-progress --out "$BENCH_DIR" --name headline
              --providers "$providers" --provider-timeout "${GPU_SESSION_PROVIDER_S:-60}")
  if [ "${1:-}" = "list" ]; then
    "$PY" -m bench "${args[@]}" --device cuda --list
  else
    "$PY" -m bench "${args[@]}" --device cuda
  fi
}
export -f stage_bench
export PY OUT CUDA_HOME_FOUND BENCH_DIR BENCH_PROVIDERS

install_wheels() {  # the carried wheels (.whl/, tools/fetch_gpu_wheels.sh) onto PYTHONPATH
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "== wheels: none carried in .whl/ (tools/fetch_gpu_wheels.sh): FlashRNN will be absent"
    return 0
  fi
  local site=/tmp/gpu_session_site
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
       --target "$site" .whl/*.whl; then
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    echo "== wheels: installed $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')into $site"
  else
    echo "== wheels: pip could not install .whl/*.whl (see above)"
  fi
}

# FlashRNN compiles its CUDA module at its first call (minutes). In the background, at low
# priority, while lstm_fused builds, it is compiled for the headline cases, so that the
# benchmark's FlashRNN rows find it built; the benchmark waits for it before timing anything.
WARMUP_LOG=/tmp/gpu_session_flashrnn_warmup.log
start_flashrnn_warmup() {
  [ "${GPU_SESSION_FLASHRNN:-1}" = 1 ] && wants bench || return 0
  if ! "$PY" -c "import flashrnn" 2>/dev/null; then
    echo "== flashrnn warm-up: not started (flashrnn is not importable)"; return 0
  fi
  ( export CUDA_HOME=$CUDA_HOME_FOUND TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=4
    exec nice -n 19 timeout --kill-after=10 400 "$PY" -m bench.flashrnn_warmup ) > "$WARMUP_LOG" 2>&1 &
  WARMUP_PID=$!
  WARMUP_T0=$SECONDS
  echo "== flashrnn warm-up: started in the background (its log goes into bench.log)"
}

finish_flashrnn_warmup() {  # wait for it, leaving the bench stage its time
  [ -n "${WARMUP_PID:-}" ] || return 0
  local cap=$((DEADLINE - SECONDS - LIMIT[bench] - 5)) t0=$SECONDS
  while kill -0 "$WARMUP_PID" 2>/dev/null && [ $((SECONDS - t0)) -lt "$cap" ]; do sleep 2; done
  if kill -0 "$WARMUP_PID" 2>/dev/null; then
    STATUS[warmup]="still compiling after $((SECONDS - WARMUP_T0)) s: the benchmark starts anyway (its FlashRNN rows run last and wait for the compile; the other rows' timings may be disturbed by it)"
  else
    wait "$WARMUP_PID"
    local rc=$?
    if [ "$rc" -eq 0 ]; then STATUS[warmup]="ok in $((SECONDS - WARMUP_T0)) s"
    else STATUS[warmup]="did not finish cleanly (exit status $rc; its log is in bench.log)"; fi
  fi
  echo "== flashrnn warm-up: ${STATUS[warmup]}"
  { echo "== flashrnn warm-up (python -m bench.flashrnn_warmup): ${STATUS[warmup]}"
    cat "$WARMUP_LOG"; } >> "$OUT/bench.log"
}

return_built_extension() {
  # The built extension comes back (debug info stripped, gzipped if need be) to be carried
  # into a rerun, which then needs no build.
  local so back
  so=$(ls lstm_fused/_C*.so 2>/dev/null | head -1)
  [ -n "$so" ] || return 0
  back="$OUT/$(basename "$so")"
  strip --strip-debug -o "$back" "$so" 2>/dev/null || cp "$so" "$back"
  if [ "$(stat -c %s "$back")" -gt 16000000 ]; then
    gzip -f "$back"
    [ "$(stat -c %s "$back.gz")" -le 16000000 ] ||
      { rm -f "$back.gz"; echo "(the built extension is over 16 MB gzipped: not returned)"; }
  fi
}

# ---------------------------------------------------------------------------- run them
stage_plan
wants info && run_step info - bash -c stage_info
[ -z "$DRY_REASON" ] && install_wheels

BUILD_PID=""
if wants build; then
  if [ -n "$DRY_REASON" ]; then
    skip build "$OUT/build.log" "no GPU ($DRY_REASON); on the GPU: FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH=90 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=\$(nproc)-2 CUDA_HOME=${CUDA_HOME_FOUND:-<toolkit>} $PY setup.py build_ext --inplace"
  elif [ "$reuse_build" = 1 ] && bash -c carried_build_loads >> "$OUT/build.log" 2>&1; then
    skip build "$OUT/build.log" "the carried build loads and has CUDA kernels"
    STATUS[build]="ok (${STATUS[build]})"
    link_triton_kernels
  elif [ -z "$CUDA_HOME_FOUND" ]; then
    skip build "$OUT/build.log" "no CUDA toolkit found (no nvcc with cuda_runtime.h beside it)"
  else
    start_flashrnn_warmup
    run_step build "$OUT/build.log" bash -c stage_build &
    BUILD_PID=$!
  fi
fi

if wants probes; then
  if [ -n "$DRY_REASON" ]; then
    skip probes - "no GPU ($DRY_REASON); the emulated probes at tiny sizes instead"
    ( stage_probes emulated ) || STATUS[probes]="FAILED: the emulated probes (session.log)"
  elif [ -z "$CUDA_HOME_FOUND" ]; then
    skip probes - "no CUDA toolkit found (no nvcc)"
  else
    run_step probes - bash -c stage_probes
  fi
fi

if [ -n "$BUILD_PID" ]; then
  wait "$BUILD_PID"
  STATUS[build]=$(cat "$STATUS_DIR/build" 2>/dev/null || echo "FAILED (no status)")
  ok build && return_built_extension
fi

needs_build() {  # reason to skip a stage that needs the CUDA build, or nothing
  if [ -n "$DRY_REASON" ]; then echo "no GPU ($DRY_REASON)"
  elif wants build && ! ok build; then echo "the build did not succeed (${STATUS[build]:-not run}; see build.log)"
  fi
}

if wants tests; then
  reason=$(needs_build)
  if [ -n "$DRY_REASON" ]; then
    skip tests "$OUT/tests.log" "$reason; collecting the GPU selection instead"
    ( stage_tests collect ) >> "$OUT/tests.log" 2>&1 ||
      STATUS[tests]="FAILED: the GPU test selection does not collect (tests.log)"
    skip headline "$OUT/tests.log" "$reason"
  elif [ -n "$reason" ]; then
    skip tests "$OUT/tests.log" "$reason"
    skip headline "$OUT/tests.log" "$reason"
  else
    STOP_SIGNAL=INT run_step tests "$OUT/tests.log" bash -c stage_tests
    run_step headline "$OUT/tests.log" bash -c stage_headline
  fi
fi

if wants sanitize; then
  SANITIZER=$(command -v compute-sanitizer || { [ -n "$CUDA_HOME_FOUND" ] && ls "$CUDA_HOME_FOUND"/bin/compute-sanitizer 2>/dev/null; } || true)
  export SANITIZER
  reason=$(needs_build)
  [ -z "$reason" ] && [ -z "$SANITIZER" ] && reason="compute-sanitizer not found"
  if [ -n "$DRY_REASON" ]; then
    skip memcheck "$OUT/sanitize.log" "$reason; the sanitizer script's dry run on the CPU instead"
    skip synccheck "$OUT/sanitize.log" "$reason"
    skip racecheck "$OUT/sanitize.log" "$reason"
    timeout 120 "$PY" tools/gpu_sanitize.py --dry >> "$OUT/sanitize.log" 2>&1 ||
      { STATUS[memcheck]="FAILED: tools/gpu_sanitize.py --dry failed (sanitize.log)"; }
  elif [ -n "$reason" ]; then
    for s in memcheck synccheck racecheck; do skip $s "$OUT/sanitize.log" "$reason"; done
  else
    run_step memcheck "$OUT/sanitize.log" bash -c stage_memcheck
    run_step synccheck "$OUT/sanitize.log" bash -c stage_synccheck
    run_step racecheck "$OUT/sanitize.log" bash -c stage_racecheck
  fi
fi

if wants graph; then
  reason=$(needs_build)
  if [ ! -f tests/test_graph_capture.py ]; then
    skip graph "$OUT/tests.log" "tests/test_graph_capture.py does not exist"
  elif [ -n "$reason" ]; then
    skip graph "$OUT/tests.log" "$reason"
  else
    run_step graph "$OUT/tests.log" bash -c stage_graph
  fi
fi

if wants bench; then
  if [ -n "$DRY_REASON" ]; then
    skip bench "$OUT/bench.log" "no GPU ($DRY_REASON); the headline cases it would run:"
    ( stage_bench list ) >> "$OUT/bench.log" 2>&1 || STATUS[bench]="FAILED: python -m bench --headline --list"
  else
    finish_flashrnn_warmup
    # The benchmark does not need our CUDA build: without it lstm_fused:cuda is reported absent.
    run_step bench "$OUT/bench.log" bash -c stage_bench
    [ -f "$BENCH_DIR/headline.csv" ] && cp "$BENCH_DIR/headline.csv" "$OUT/headline.csv"
    "$PY" tools/gpu_probes/rows.py --stage bench --results "$RESULTS" \
      --bench-csv "$BENCH_DIR/headline.csv"
  fi
fi

# ---------------------------------------------------------------------------- summary
echo
echo "== summary ($(date -u +%H:%M:%S), ${SECONDS} s of the ${BUDGET_S} s budget)"
failed=0
for s in info probes build tests headline memcheck synccheck racecheck graph warmup bench; do
  [ -n "${STATUS[$s]:-}" ] || continue
  printf '  %-10s %s\n' "$s" "${STATUS[$s]}"
  case "${STATUS[$s]}" in FAILED*|TIMED*) failed=1;; esac
done
echo "-- measurements (results.tsv: measured, status, the model's prediction):"
awk -F'\t' 'NR > 1 && $2 !~ /^stage\// { printf "  %-72s %9s %-10s %-5s %s\n", substr($2, 1, 72), $3, $4, $5, substr($6, 1, 48) }' "$RESULTS"
n=$(find "$OUT" -type f | wc -l)
echo "-- $n files under $OUT (at most 8 come back):"
find "$OUT" -type f -printf '  %p  %s bytes\n' | sort
[ "$n" -le 8 ] || echo "WARNING: more than 8 files under $OUT: some will not come back"
rm -rf "$STATUS_DIR"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null  # session.log complete before the call returns
exit "$failed"
