"""The tensor-core backward loop (csrc/cuda/lstm_tc_backward.cuh) on a CUDA device, at the
shapes the benchmark cares about; skipped (with the reason) without one. The small shapes run
in tests/test_cuda_lstm.py (every config, both kernel paths) and emulated on the CPU in
tests/test_cuda_emulated_tc_backward.py.

At long sequences the 16-bit rounding of both paths grows with T beyond the table of
tests/tolerances.py (written for T <= ~20), so here the tensor-core backward is held to the
gate-kernel backward's own distance from the float64 reference on the same inputs: its error
(max |got - reference| over max |reference|) at most 1.5 times the gate path's plus one
rounding unit of the dtype.
"""

from __future__ import annotations

import pytest
import torch

from lstm_fused import reference, switches
from lstm_fused.functional import lstm_layer
from backends import needs
from helpers import float64_cpu, layer_args

pytestmark = needs("lstm_layer", "cuda")

# (T, B, I, H, P, D, peephole, lengths): the headline (one direction), a small hidden size,
# the largest batch the plan takes, two directions with lengths.
SHAPES = {
    "headline": (1024, 16, 768, 768, 0, 1, False, None),
    "small-H": (256, 16, 256, 256, 0, 1, False, None),
    "batch-64": (64, 64, 256, 512, 0, 1, False, None),
    "bi-lengths": (128, 8, 64, 256, 0, 2, True, [128, 100, 1, 0, 64, 127, 5, 90]),
}


def _grads(args, dtype, path):
    leaves = {
        k: v.detach().clone().requires_grad_(True)
        for k, v in args.items()
        if v is not None and k != "lengths"
    }
    with switches.override(poison="1", cuda_path=path):
        outs = lstm_layer(**dict(args, **leaves), backend="cuda")
        g = torch.Generator(device="cuda").manual_seed(1)
        seeds = [
            torch.randn(o.shape, generator=g, device="cuda", dtype=torch.float64) for o in outs
        ]
        grads = torch.autograd.grad(outs, list(leaves.values()), [s.to(dtype) for s in seeds])
    return dict(zip(leaves, grads)), seeds


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_tensor_core_backward_no_worse_than_the_gate_path(shape, dtype):
    args = layer_args(SHAPES[shape], dtype, device="cuda", seed=2)
    path = torch.ops.lstm_fused.lstm_layer_cuda_backward_path(args["x"], args["w_hh"], args["w_hr"])
    assert path == "tensor_core", path
    tc, seeds = _grads(args, dtype, "")
    gates, _ = _grads(args, dtype, "gates")
    ref_args = {
        k: (v.cuda() if v is not None and k != "lengths" else v)
        for k, v in float64_cpu(args, requires_grad=True).items()
    }
    outs = reference.lstm_layer(**ref_args)
    names = list(tc)
    want = dict(zip(names, torch.autograd.grad(outs, [ref_args[k] for k in names], seeds)))
    eps = torch.finfo(dtype).eps
    for name in names:
        scale = max(want[name].abs().max().item(), 1e-30)
        assert torch.isfinite(tc[name]).all(), name
        err_tc = (tc[name].double() - want[name]).abs().max().item() / scale
        err_gates = (gates[name].double() - want[name]).abs().max().item() / scale
        assert err_tc <= 1.5 * err_gates + eps, (name, err_tc, err_gates)
