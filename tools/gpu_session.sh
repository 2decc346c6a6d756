#!/usr/bin/env bash
# One device-machine call for a session that is lent a GPU (the `device` tool's `run`, from the
# repository root): build, the tests on the GPU, compute-sanitizer on the CUDA kernels at small
# shapes, then the --quick benchmark against cuDNN / SDPA / nn.MultiheadAttention. Everything
# goes to $OUT (or ./gpu_out): build.log, tests.log, sanitizer.log, and the bench's csv / json.
#   run(command="bash tools/gpu_session.sh", timeout_s=600)
# Written without a GPU (none was ever lent to this project yet): read the logs before
# trusting it, and commit only figures that were seen.
set -u -o pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 LSTM_FUSED_CUDA_ARCH=90
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/device.txt"

python3 -m pip install -e . --no-build-isolation --no-deps 2>&1 | tail -n 40 > "$out/build.log" \
  || { echo "build failed"; exit 1; }
python3 -c "import lstm_fused; print(lstm_fused.available_backends())" | tee -a "$out/build.log"

# The tests, now on the GPU (the CUDA and Triton ones run instead of skipping), 4 minutes at most.
timeout 240 python3 -m pytest tests -q -x -p no:cacheprovider --ignore=tests/test_cuda_emulated.py \
  -k "cuda or triton or mhsa or attention" 2>&1 | tail -n 60 > "$out/tests.log"

# compute-sanitizer (memcheck) on one small call of each CUDA kernel family.
cat > /tmp/sanitize.py <<'PY'
import torch, lstm_fused
torch.manual_seed(0)
dev = "cuda"
x = torch.randn(7, 3, 5, device=dev, requires_grad=True)
lengths = torch.tensor([7, 2, 0], device=dev)
for backend in ("cuda", "triton"):
    lstm = lstm_fused.LSTM(5, 8, num_layers=2, bidirectional=True, backend=backend).to(dev)
    y, _ = lstm(x)
    y.sum().backward()
    mhsa = lstm_fused.MultiheadSelfAttention(16, 2, dropout=0.1, backend=backend).to(dev)
    out, _ = mhsa(y, lengths)
    out.sum().backward()
    pool = lstm_fused.AttentionPooling(16, 4, backend=backend).to(dev)
    c, a = pool(y, lengths)
    (c.sum() + a.sum()).backward()
torch.cuda.synchronize()
print("sanitized calls done")
PY
timeout 150 compute-sanitizer --tool memcheck python3 /tmp/sanitize.py 2>&1 | tail -n 40 \
  > "$out/sanitizer.log"

# The benchmark (correctness against float64 first, then timings), whatever time is left.
timeout 170 python3 -m bench --quick --device cuda --no-progress --out "$out" 2>&1 \
  | tail -n 200 > "$out/bench.log"
echo "done: $(ls "$out")"
