#!/usr/bin/env bash
# The device-machine call of a session that is lent a GPU: stages, each with its own timeout
# and its whole log under $OUT, inside one overall budget that fits the 10-minute command.
#
#   first call (about 7 minutes; `run` from the repository root):
#     run(command="bash tools/gpu_session.sh", carry=[".whl"], timeout_s=600)
#   second call, the benchmark only (the build is skipped when the carried one loads):
#     run(command="bash tools/gpu_session.sh bench", carry=[".whl", "lstm_fused/<_C .so>"],
#         timeout_s=600)
#   where <_C .so> is the _C.cpython-312-x86_64-linux-gnu.so the first call returned (gunzip
#   it first if it came back as .so.gz), copied into lstm_fused/ of the checkout that is sent.
#   Prefix LSTM_FUSED_GIT_COMMIT=<commit> to the command: the tree travels without .git.
#
# Stages, in this order (arguments: the stages to run; default all; "bench" alone also runs
# info and, when no carried build loads, build):
#   info      device, driver, versions, the plan           -> $OUT/session.log (with the summary)
#   build     setup.py build_ext --inplace with FORCE_CUDA=1, sm_90 only, MAX_JOBS=nproc,
#             CUDA_HOME set to the toolkit; ninja's per-file times; CUDA registration of every op
#                                                          -> $OUT/build.log (whole)
#   tests     the GPU tests (names with cuda / triton), no -x: every failure in one run; not the
#             compile checks (marker slow_compile) nor the CPU emulation of the CUDA launches
#                                                          -> $OUT/tests.log
#   sanitize  compute-sanitizer memcheck (float32, bfloat16), then racecheck (float32), on
#             tools/gpu_sanitize.py                        -> $OUT/sanitize.log
#   bench     correctness against float64, then the headline timings row by row: LSTM B=16,
#             T=1024, I=H=768, bf16/fp16, fwd and fwd+bwd, cuDNN vs lstm_fused cuda/triton,
#             then FlashRNN (its wheel from .whl/, made by tools/fetch_gpu_wheels.sh; its
#             kernels are compiled in the background during the build, by
#             python -m bench.flashrnn_warmup)             -> $OUT/bench.log, $OUT/bench/headline.{csv,json}
# At most 8 files come back: the five logs, the csv and json, and the built extension
# (_C.*.so, or .so.gz) when it fits in 16 MiB, to carry into the second call.
#
# Without a GPU (or with GPU_SESSION_DRY=1) every stage says why it is skipped and does the
# dry part it can (the test selection is collected, tools/gpu_sanitize.py --dry runs, the
# benchmark lists its cases); the script ends 0 with its logs. Exit status otherwise: 0 when
# every stage that ran passed, 1 when one failed or timed out.
#
# Environment: OUT (default ./gpu_out), PYTHON (default python3), GPU_SESSION_BUDGET_S (540),
# GPU_SESSION_<STAGE>_S to change one stage's timeout (INFO, BUILD, TESTS, MEMCHECK,
# RACECHECK, BENCH), GPU_SESSION_PROVIDER_S (240, one benchmark provider's limit),
# GPU_SESSION_FLASHRNN=0 (no FlashRNN, no warm-up),
# LSTM_FUSED_GIT_COMMIT (the commit, where the tree travels without .git).
# Written without a GPU: read the logs before trusting a figure, commit only what was seen.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SESSION="$OUT/session.log"
: > "$SESSION"
exec > >(tee -a "$SESSION") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

BUDGET_S=${GPU_SESSION_BUDGET_S:-540}
DEADLINE=$((SECONDS + BUDGET_S))
# Stage timeouts (seconds). The first call's add up to the budget (540 s, 9 minutes: 60 s
# under the 10-minute command limit); each is also cut to what is left of the budget.
declare -A LIMIT=([info]=${GPU_SESSION_INFO_S:-20} [build]=${GPU_SESSION_BUILD_S:-200}
                  [tests]=${GPU_SESSION_TESTS_S:-100} [memcheck]=${GPU_SESSION_MEMCHECK_S:-50}
                  [racecheck]=${GPU_SESSION_RACECHECK_S:-40} [bench]=${GPU_SESSION_BENCH_S:-130})
declare -A STATUS=()
ORDER=(info build tests sanitize bench)

# ---------------------------------------------------------------------------- arguments
want_bench_only=0
if [ $# -eq 0 ] || [ "$*" = "all" ]; then
  STAGES=("${ORDER[@]}")
elif [ "$*" = "bench" ]; then
  STAGES=(info build bench)
  want_bench_only=1
  LIMIT[bench]=${GPU_SESSION_BENCH_S:-300}  # FlashRNN's first call may compile its kernel
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
# records ok / failed (rc N) / timed out. At the limit the step gets $STOP_SIGNAL (default
# TERM; INT for pytest, which then still prints the failures seen so far), KILL 10 s later.
run_step() {
  local name=$1 log=$2; shift 2
  [ "$log" = "-" ] && log=/dev/stdout
  local left=$((DEADLINE - SECONDS - 5)) limit=${LIMIT[$name]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    STATUS[$name]="skipped: only ${left} s left of the ${BUDGET_S} s budget"
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
  echo "== $name: ${STATUS[$name]}"
  if [ "$log" != /dev/stdout ]; then
    echo "== $name: ${STATUS[$name]}" >> "$log"
    [ "$rc" -ne 0 ] && { echo "-- last lines of ${log#"$OUT"/}:"; tail -n 8 "$log"; }
  fi
}

skip() {  # skip NAME LOG REASON
  STATUS[$1]="skipped: $3"
  echo "== $1: ${STATUS[$1]}" | tee -a "$2"
}

ok() { case "${STATUS[$1]:-}" in ok*) return 0;; esac; return 1; }

# ---------------------------------------------------------------------------- the stages
stage_info() {
  echo "date: $(date -u +%FT%TZ)   host: $(uname -srm)   cores: $(nproc)"
  free -g 2>/dev/null | head -2
  df -h /tmp 2>/dev/null | tail -1
  echo "commit: $(git rev-parse --short=12 HEAD 2>/dev/null || echo "${LSTM_FUSED_GIT_COMMIT:-unknown (no .git here; set LSTM_FUSED_GIT_COMMIT)}")"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  echo "CUDA_HOME (the toolkit with nvcc and cuda_runtime.h): ${CUDA_HOME_FOUND:-none found}"
  if [ -n "$CUDA_HOME_FOUND" ]; then "$CUDA_HOME_FOUND/bin/nvcc" --version | tail -2; fi
  local san
  san=$(command -v compute-sanitizer || { [ -n "$CUDA_HOME_FOUND" ] && ls "$CUDA_HOME_FOUND"/bin/compute-sanitizer 2>/dev/null; } || true)
  echo "compute-sanitizer: ${san:-not found}"
  [ -n "$san" ] && "$san" --version | tail -1
  "$PY" - <<'PY'
import importlib.util, platform, torch
print(f"python {platform.python_version()}  torch {torch.__version__}  cuda {torch.version.cuda}  "
      f"cudnn {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB")
for name in ("triton", "flashrnn", "einops", "ninja", "numpy", "pytest", "xdist",
             "pytest_timeout", "hypothesis", "expecttest", "tqdm", "matplotlib"):
    spec = importlib.util.find_spec(name)
    version = ""
    if spec is not None:
        try:
            version = getattr(__import__(name), "__version__", "")
        except Exception as exc:  # reported: a package that is there but does not import
            version = f"(import fails: {type(exc).__name__}: {exc})"
    print(f"  {name}: {'absent' if spec is None else 'present ' + str(version)}")
PY
  ls -la .whl 2>/dev/null || echo ".whl/: none carried"
}
export -f stage_info

stage_plan() {
  local mode="GPU"
  [ -n "$DRY_REASON" ] && mode="dry: $DRY_REASON"
  echo "stages: ${STAGES[*]}   budget ${BUDGET_S} s   mode: $mode"
  local s
  for s in info build tests memcheck racecheck bench; do
    case $s in memcheck|racecheck) wants sanitize || continue;; *) wants "$s" || continue;; esac
    echo "plan: $s timeout ${LIMIT[$s]} s"
  done
}

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
stage_build() {
  set -x
  export FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH=90 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$(nproc)
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

stage_tests() {  # $1: "collect" for the dry run
  local extra=()
  # 8 workers: the Triton kernels compile on the CPU, in parallel across workers
  "$PY" -c "import xdist" 2>/dev/null && extra+=(-n 8)
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=120)
  [ "${1:-}" = "collect" ] && extra=(--collect-only)
  set -x
  "$PY" -m pytest tests -q -ra -p no:cacheprovider --durations=15 "${extra[@]}" \
    -m "not slow_compile" -k "(cuda or triton) and not compile_for" \
    --ignore=tests/test_cuda_emulated.py --ignore=tests/test_cuda_compile.py
}
export -f stage_tests

stage_memcheck() {
  # No caching allocator: every tensor is its own allocation, so an access past its end is
  # caught instead of landing in a neighbour of the same pool.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 9 \
    --report-api-errors no --print-limit 30 --target-processes all \
    "$PY" tools/gpu_sanitize.py --dtypes float32,bfloat16
}
stage_racecheck() {
  "$SANITIZER" --tool racecheck --error-exitcode 9 --report-api-errors no --print-limit 30 \
    --target-processes all "$PY" tools/gpu_sanitize.py --dtypes float32
}
export -f stage_memcheck stage_racecheck

stage_bench() {  # $1: "list" for the dry run
  export CUDA_HOME=$CUDA_HOME_FOUND TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$(nproc)
  local providers='nn\.LSTM|lstm_fused:(cuda|triton)'
  if [ "${GPU_SESSION_FLASHRNN:-1}" = 1 ]; then
    providers="$providers|flashrnn"
  else
    echo "GPU_SESSION_FLASHRNN=0: FlashRNN is not run"
  fi
  local args=(--headline --no-progress --out "$OUT/bench" --name headline
              --providers "$providers" --provider-timeout "${GPU_SESSION_PROVIDER_S:-240}")
  if [ "${1:-}" = "list" ]; then
    "$PY" -m bench "${args[@]}" --device cuda --list
  else
    "$PY" -m bench "${args[@]}" --device cuda
  fi
}
export -f stage_bench
export PY OUT CUDA_HOME_FOUND

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
  ( export CUDA_HOME=$CUDA_HOME_FOUND TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$(nproc)
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

# ---------------------------------------------------------------------------- run them
stage_plan
wants info && run_step info - bash -c stage_info
[ -z "$DRY_REASON" ] && install_wheels

if wants build; then
  if [ -n "$DRY_REASON" ]; then
    skip build "$OUT/build.log" "no GPU ($DRY_REASON); on the GPU: FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH=90 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=\$(nproc) CUDA_HOME=${CUDA_HOME_FOUND:-<toolkit>} $PY setup.py build_ext --inplace"
  elif [ "$want_bench_only" = 1 ] && bash -c carried_build_loads >> "$OUT/build.log" 2>&1; then
    skip build "$OUT/build.log" "the carried build loads and has CUDA kernels (bench only)"
    STATUS[build]="ok (${STATUS[build]})"
    link_triton_kernels
  elif [ -z "$CUDA_HOME_FOUND" ]; then
    skip build "$OUT/build.log" "no CUDA toolkit found (no nvcc with cuda_runtime.h beside it)"
  else
    start_flashrnn_warmup
    run_step build "$OUT/build.log" bash -c stage_build
    if ok build; then
      # The built extension comes back (debug info stripped, gzipped if need be) to be carried
      # into the benchmark call, which then needs no build.
      so=$(ls lstm_fused/_C*.so 2>/dev/null | head -1)
      back="$OUT/$(basename "$so")"
      if [ -n "$so" ]; then
        strip --strip-debug -o "$back" "$so" 2>/dev/null || cp "$so" "$back"
        if [ "$(stat -c %s "$back")" -gt 16000000 ]; then
          gzip -f "$back"
          [ "$(stat -c %s "$back.gz")" -le 16000000 ] ||
            { rm -f "$back.gz"; echo "(the built extension is over 16 MB gzipped: not returned)"; }
        fi
      fi
    fi
  fi
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
  elif [ -n "$reason" ]; then
    skip tests "$OUT/tests.log" "$reason"
  else
    STOP_SIGNAL=INT run_step tests "$OUT/tests.log" bash -c stage_tests
  fi
fi

if wants sanitize; then
  SANITIZER=$(command -v compute-sanitizer || { [ -n "$CUDA_HOME_FOUND" ] && ls "$CUDA_HOME_FOUND"/bin/compute-sanitizer 2>/dev/null; } || true)
  export SANITIZER
  reason=$(needs_build)
  [ -z "$reason" ] && [ -z "$SANITIZER" ] && reason="compute-sanitizer not found"
  if [ -n "$DRY_REASON" ]; then
    skip memcheck "$OUT/sanitize.log" "$reason; the sanitizer script's dry run on the CPU instead"
    skip racecheck "$OUT/sanitize.log" "$reason"
    timeout 120 "$PY" tools/gpu_sanitize.py --dry >> "$OUT/sanitize.log" 2>&1 ||
      { STATUS[memcheck]="FAILED: tools/gpu_sanitize.py --dry failed (sanitize.log)"; }
  elif [ -n "$reason" ]; then
    skip memcheck "$OUT/sanitize.log" "$reason"
    skip racecheck "$OUT/sanitize.log" "$reason"
  else
    run_step memcheck "$OUT/sanitize.log" bash -c stage_memcheck
    run_step racecheck "$OUT/sanitize.log" bash -c stage_racecheck
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
  fi
fi

# ---------------------------------------------------------------------------- summary
echo
echo "== summary ($(date -u +%H:%M:%S), ${SECONDS} s of the ${BUDGET_S} s budget)"
failed=0
for s in info build tests memcheck racecheck warmup bench; do
  [ -n "${STATUS[$s]:-}" ] || continue
  printf '  %-10s %s\n' "$s" "${STATUS[$s]}"
  case "${STATUS[$s]}" in FAILED*|TIMED*) failed=1;; esac
done
if [ -f "$OUT/bench.log" ]; then
  echo "-- headline rows:"; grep '^row:' "$OUT/bench.log" | cut -c1-220
fi
n=$(find "$OUT" -type f | wc -l)
echo "-- $n files under $OUT (at most 8 come back):"
find "$OUT" -type f -printf '  %p  %s bytes\n' | sort
[ "$n" -le 8 ] || echo "WARNING: more than 8 files under $OUT: some will not come back"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null  # session.log complete before the call returns
exit "$failed"
