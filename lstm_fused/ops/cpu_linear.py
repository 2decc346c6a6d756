"""The dense products of a linear layer on the CPU, forward and backward, for the fused
attention heads (lstm_fused/functional/attention.py): y = x W^T + b, grad_x = g W, and
grad_W = g^T x, grad_b = sum of g's rows. x (M, K), W (N, K), b (N,), g (M, N); contiguous.

float32 runs on oneDNN: the products by mkldnn::_linear_pointwise (the op PyTorch's own CPU
inference uses; csrc/cpu/reused_weight_gemm.h calls it from C++) on the plain weight (one use
per call: packing it first, mkldnn::_reorder_linear_weight, costs more than it saves), the
weight gradient by oneDNN's inner-product backward (aten::mkldnn_linear_backward_weights).
Why: ATen's own matmul goes to MKL, which takes a generic path on AMD CPUs. 2-core AMD EPYC
(Zen 5) VM, 1 thread, x (M, 256), W (128, 256), p50 ms of oneDNN / torch.mm: M = 800
0.23 / 0.49, M = 3200 0.88 / 1.94, M = 12800 3.6 / 8.6 (on the loaded machine, torch.mm took
up to 6 ms at M = 3200). Other dtypes, the switch cpu_gemm="aten", empty operands, or a
PyTorch without those ops use ATen.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import switches


def _onednn_ops_present() -> bool:
    try:
        return (
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.aten, "mkldnn_linear_backward_weights")
        )
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = _onednn_ops_present()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the products of x (M, K) and weight (N, K) run on oneDNN."""
    return (
        _ONEDNN
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.numel() > 0
        and weight.numel() > 0
        and switches.get("cpu_gemm") != "aten"
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (M, K) W^T (+ b) -> (M, N)."""
    if not uses_onednn(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    bias = None if bias is None else bias.contiguous()
    return torch.ops.mkldnn._linear_pointwise(x, weight.contiguous(), bias, "none", [], None)


def add_input_grad(out: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out (M, K) += grad (M, N) W, in place; returns out."""
    if not uses_onednn(grad, weight):
        return out.addmm_(grad, weight)
    w_t = weight.t().contiguous()  # (K, N): grad W is a linear layer with weight W^T
    return out.add_(torch.ops.mkldnn._linear_pointwise(grad, w_t, None, "none", [], None))


def param_grads(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, with_bias: bool
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(grad_W (N, K) = grad^T x, grad_b (N,) = grad's column sums, or None without bias)."""
    if not uses_onednn(grad, weight):
        return grad.t().mm(x), (grad.sum(0) if with_bias else None)
    grad_w, grad_b = torch.ops.aten.mkldnn_linear_backward_weights(
        grad.to_mkldnn(), x.to_mkldnn(), weight, with_bias
    )
    return grad_w, (grad_b if with_bias else None)
