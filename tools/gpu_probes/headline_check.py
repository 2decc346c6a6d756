"""Correctness of the CUDA LSTM paths at the model's shapes (docs/gpu_performance.md) against
the float64 reference, on a GPU: the tensor-core time loop (the automatic choice for 16-bit
dtypes where it fits) and the gate-kernel path (forced by the cuda_path switch), with nn.LSTM
(cuDNN) in the same dtype as a yardstick.

    python3 tools/gpu_probes/headline_check.py [--shapes headline,b64h1024,small] [--dtypes ...]
    python3 tools/gpu_probes/headline_check.py --dry     # CPU: backend "cpu", tiny, float32

One layer, one direction, T = 1024; parameters drawn as nn.LSTM draws them (uniform in
+-1/sqrt(H)), x ~ N(0, 1), h0 and c0 ~ N(0, 0.25), all rounded to the dtype first, so the
float64 reference (backend "reference" on the same GPU) sees the very same numbers. The
forward and the backward of one fixed random output gradient; the error of a tensor is
max |got - want| / max(1, max |want|) (the scaling of tests/helpers.assert_close_scaled),
the row's value the largest over y, h_n, c_n and every gradient. Status: ok when it is within
tests/tolerances.py's "cuda_kernel" tolerance of the dtype (calibrated at T <= 20), or within
twice cuDNN's own error at this T; FAIL otherwise, or when the path that ran is not the one
asked for (the CUDA kernels launched are listed by torch.profiler). One RESULT line per
(shape, dtype, path) (tools/gpu_probes/rows.py). Exit status 1 when a row fails. --dry runs
the same code on the CPU (backend "cpu" in place of both CUDA paths, no kernel list): a check of
this script, not of any kernel.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # lstm_fused from this checkout
sys.path.insert(0, str(ROOT / "tests"))  # the tolerance table

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lstm_fused import functional, switches  # noqa: E402
from tolerances import tol  # noqa: E402

# name: (B, T, I, H)
SHAPES = {
    "headline": (16, 1024, 768, 768),
    "b64h1024": (64, 1024, 1024, 1024),
    "small": (16, 1024, 256, 256),
    "tiny": (3, 9, 5, 8),
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# The switch that forces the CUDA gate-kernel path (lstm_fused/switches.py, csrc/switches.h).
GATE_PATH = {"cuda_path": "gates"}
# Substrings of the tensor-core kernels' names (csrc/cuda/lstm_tc_forward.cuh,
# csrc/cuda/lstm_tc_backward.cuh)
TC_FORWARD, TC_BACKWARD = "tc_forward_kernel", "tc_backward_kernel"


def draw(shape, dtype, seed, device):
    """float64 tensors on device, already rounded to dtype: x, h0, c0, w_ih, w_hh, bias, dy."""
    B, T, I, H = shape
    g = torch.Generator().manual_seed(seed)
    k = 1.0 / math.sqrt(H)

    def u(*s):
        return (torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k

    t = {
        "x": torch.randn(T, B, I, generator=g, dtype=torch.float64),
        "h0": torch.randn(1, B, H, generator=g, dtype=torch.float64) * 0.5,
        "c0": torch.randn(1, B, H, generator=g, dtype=torch.float64) * 0.5,
        "w_ih": u(1, 4 * H, I),
        "w_hh": u(1, 4 * H, H),
        "bias": u(1, 4 * H),
        "dy": torch.randn(T, B, H, generator=g, dtype=torch.float64),
    }
    return {n: v.to(dtype).double().to(device) for n, v in t.items()}


def run_layer(t, dtype, backend):
    """(names, tensors): y, h_n, c_n and the gradients of x, h0, c0, w_ih, w_hh, bias."""
    leaves = {n: t[n].to(dtype).requires_grad_() for n in ("x", "h0", "c0", "w_ih", "w_hh", "bias")}
    y, h_n, c_n = functional.lstm_layer(
        leaves["x"],
        leaves["h0"],
        leaves["c0"],
        leaves["w_ih"],
        leaves["w_hh"],
        leaves["bias"],
        backend=backend,
    )
    grads = torch.autograd.grad(y, list(leaves.values()), t["dy"].to(dtype))
    _sync(y.device)
    return (
        ["y", "h_n", "c_n"] + [f"grad {n}" for n in leaves],
        [y.detach(), h_n.detach(), c_n.detach(), *grads],
    )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # a kernel fault surfaces here, in this call


def run_cudnn(t, dtype):
    H = t["w_hh"].shape[-1]
    lstm = nn.LSTM(t["x"].shape[-1], H).to(device=t["x"].device, dtype=dtype)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(t["w_ih"][0])
        lstm.weight_hh_l0.copy_(t["w_hh"][0])
        lstm.bias_ih_l0.copy_(t["bias"][0])
        lstm.bias_hh_l0.zero_()
    x, h0, c0 = (t[n].to(dtype).requires_grad_() for n in ("x", "h0", "c0"))
    y, (h_n, c_n) = lstm(x, (h0, c0))
    params = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0]
    gx, gh0, gc0, gwi, gwh, gb = torch.autograd.grad(y, [x, h0, c0] + params, t["dy"].to(dtype))
    _sync(y.device)
    return [y.detach(), h_n.detach(), c_n.detach(), gx, gh0, gc0, gwi[None], gwh[None], gb[None]]


def errors(got, want, names):
    out = {}
    for n, g, w in zip(names, got, want):
        g = g.double()
        out[n] = (
            math.inf
            if not torch.isfinite(g).all()
            else ((g - w).abs().max().item() / max(1.0, w.abs().max().item()))
        )
    return out


def kernels_of(fn, device):
    """(result of fn(), names of the CUDA kernels it launched; [] on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return fn(), []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        result = fn()
    names = sorted({e.key for e in prof.key_averages() if e.device_type.name == "CUDA"})
    return result, names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="headline,small,b64h1024")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry", action="store_true", help="on the CPU, backend cpu, shape tiny")
    args = ap.parse_args(argv)
    if args.dry:
        # the CPU backend's kernels take float32 (and float64), not the 16-bit dtypes
        device, backend, args.shapes, args.dtypes = torch.device("cpu"), "cpu", "tiny", "float32"
    elif not torch.cuda.is_available():
        print("headline_check: no GPU (torch.cuda.is_available() is False; --dry for the CPU)")
        return 1
    else:
        device, backend = torch.device("cuda"), "cuda"
        torch.backends.cuda.matmul.allow_tf32 = False
    failed = False
    for shape_name in args.shapes.split(","):
        shape = SHAPES[shape_name]
        B, T, I, H = shape
        key_shape = f"{shape_name}:B={B},T={T},I={I},H={H}"
        for dtype_name in args.dtypes.split(","):
            dtype = DTYPES[dtype_name]
            t = draw(shape, dtype, args.seed, device)
            t0 = time.perf_counter()
            names, want = run_layer(t, torch.float64, "reference")
            ref_s = time.perf_counter() - t0
            cudnn = errors(run_cudnn(t, dtype), want, names)
            cudnn_worst = max(cudnn.values())
            print(
                f"RESULT\tcorrectness/{key_shape}/{dtype_name}/nn.LSTM\t{cudnn_worst:.3g}\t"
                f"max norm. err\tinfo\tcuDNN's own error (the yardstick); reference "
                f"{ref_s:.1f} s",
                flush=True,
            )
            limit = max(tol("cuda_kernel", dtype)["atol"], 2 * cudnn_worst)
            for path, env in (("tc", {}), ("gates", GATE_PATH)):
                try:
                    with switches.override(**env):
                        (_, got), kernels = kernels_of(lambda: run_layer(t, dtype, backend), device)
                except RuntimeError as exc:
                    failed = True
                    print(
                        f"RESULT\tcorrectness/{key_shape}/{dtype_name}/{path}\tnan\t"
                        f"max norm. err\tFAIL\t{type(exc).__name__}: {str(exc)[:300]}"
                    )
                    continue
                err = errors(got, want, names)
                worst_name = max(err, key=err.get)
                fwd_tc = any(TC_FORWARD in k for k in kernels)
                bwd_tc = any(TC_BACKWARD in k for k in kernels)
                # "tc": the forward must be the tensor-core loop (the backward is where its plan
                # fits: B <= 32); "gates": neither may be
                path_ok = args.dry or (fwd_tc if path == "tc" else not (fwd_tc or bwd_tc))
                ok = err[worst_name] <= limit and path_ok
                failed |= not ok
                detail = (
                    f"worst {worst_name}; limit {limit:.3g} (tolerance table "
                    f"{tol('cuda_kernel', dtype)['atol']:g}, 2x cuDNN {2 * cudnn_worst:.3g})"
                    f"; tensor-core forward {'ran' if fwd_tc else 'did not run'}, backward "
                    f"{'ran' if bwd_tc else 'did not run'}; kernels: "
                    + ", ".join(k[:60] for k in kernels[:8])
                )
                print(
                    f"RESULT\tcorrectness/{key_shape}/{dtype_name}/{path}\t"
                    f"{err[worst_name]:.3g}\tmax norm. err\t{'ok' if ok else 'FAIL'}\t{detail}",
                    flush=True,
                )
    print(f"headline_check: {'FAILED' if failed else 'passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
