"""The multi-head self-attention family (mhsa): the attention core of MultiheadSelfAttention.

    attention(q, k, v, lengths, scale, dropout_p, seed) -> out    q, k, v, out (B, N, T, Dh)
    out = softmax(scale * q k^T over the keys t < lengths[b]) v; zeros for a row of length 0.
    dropout_p > 0 (training): the weights that multiply v are dropped out with the
    counter-based mask of csrc/attention_dropout.h drawn from `seed`, a one-element int64 tensor
    (reference_mhsa.dropout_keep_mask), the same on every backend.

Operators (schemas in csrc/attention_schemas.h, each with a Triton twin `<name>_triton`):
  mhsa_forward(q, k, v, lengths?, scale, dropout_p=0, seed?) -> (out, lse)
  mhsa_backward(grad_out, q, k, v, lengths?, scale, dropout_p, seed?, out, lse)
      -> (grad_q, grad_k, grad_v)
This module gives each its fake kernel and autograd, the Triton twins their kernels
(triton_kernels/mhsa.py), and registers the implementations of "mhsa".
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference_mhsa
from . import library, registry
from . import triton_library
from .autograd import differentiable_vjp, zeros_if_none

NAMESPACE = torch.ops.lstm_fused
OP = "mhsa"
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
CUDA_MAX_HEAD_DIM = 128  # csrc/cuda/mhsa_plan.h: the CUDA kernels are built for Dh <= 128


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fake_forward(q, k, v, lengths, scale, dropout_p=0.0, seed=None):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=_acc_dtype(q.dtype))


def fake_backward(grad_out, q, k, v, lengths, scale, dropout_p, seed, out, lse):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def register_core_autograd(forward_name: str, backward_op) -> None:
    """Autograd of an (out, lse) = forward(q, k, v, lengths, scale, dropout_p, seed) operator;
    lse is an auxiliary output (not differentiable)."""

    def setup_context(ctx, inputs, output):
        q, k, v, lengths, scale, dropout_p, seed = inputs
        out, lse = output
        ctx.scale, ctx.dropout_p = scale, dropout_p
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, lengths, seed, out, lse)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, lengths, seed, out, lse = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable, by the reference math

            def core(q, k, v):
                return reference_mhsa.attention_core(
                    q, k, v, lengths, ctx.scale, ctx.dropout_p, ctx.dropout_p > 0.0, seed=seed
                )[:1]

            return (
                *differentiable_vjp(core, (q, k, v), (grad_out,), ctx.needs_input_grad[:3]),
                None,
                None,
                None,
                None,
            )
        dq, dk, dv = backward_op(
            zeros_if_none(grad_out, out), q, k, v, lengths, ctx.scale, ctx.dropout_p, seed, out, lse
        )
        return dq, dk, dv, None, None, None, None

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


def triton_forward(q, k, v, lengths, scale, dropout_p=0.0, seed=None):
    """The C++ argument checks (mhsa_forward_check, csrc/check_ops.cpp), then the launcher."""
    NAMESPACE.mhsa_forward_check(q, k, v, lengths, scale, dropout_p, seed)
    return triton_library.kernels("mhsa").mhsa_forward(q, k, v, lengths, scale, dropout_p, seed)


def triton_backward(grad_out, q, k, v, lengths, scale, dropout_p, seed, out, lse):
    NAMESPACE.mhsa_backward_check(grad_out, q, k, v, lengths, scale, dropout_p, seed, out, lse)
    return triton_library.kernels("mhsa").mhsa_backward(
        grad_out, q, k, v, lengths, scale, dropout_p, seed, out, lse
    )


class CoreKernels:
    """attention(q, k, v, lengths, scale, dropout_p=0.0, seed=None) -> out (B, N, T, Dh),
    differentiable, through the operators of one backend (suffix "" or "_triton")."""

    def __init__(self, suffix: str):
        self.suffix = suffix

    @property
    def forward(self):
        # looked up at the call: without lstm_fused._C the operator does not exist, and the
        # package must still import (backend="reference", show_config)
        return getattr(NAMESPACE, "mhsa_forward" + self.suffix)

    def attention(self, q, k, v, lengths, scale, dropout_p=0.0, seed=None):
        return self.forward(q, k, v, lengths, scale, dropout_p, seed)[0]


class ReferenceCoreKernels:
    def attention(self, q, k, v, lengths, scale, dropout_p=0.0, seed=None):
        return reference_mhsa.attention_core(
            q, k, v, lengths, scale, dropout_p, dropout_p > 0.0, seed=seed
        )[0]


def _cuda_head_dim_reason(device, dtype, features) -> Optional[str]:
    head_dim = features.get("head_dim", 0)
    if head_dim > CUDA_MAX_HEAD_DIM:
        return f"head size embed_dim // num_heads = {head_dim} exceeds {CUDA_MAX_HEAD_DIM}"
    return None


def _triton_tile_reason(device, dtype, features) -> Optional[str]:
    """Tiles that fit this GPU without register spills (mhsa.unsupported_reason)."""
    if device.type != "cuda":
        return None
    from ..triton_kernels.launch_config import device_target

    return triton_library.kernels("mhsa").unsupported_reason(
        dtype, features.get("head_dim", 0), device_target(device)
    )


def _register_operators() -> None:
    for suffix, kernel_fwd, kernel_bwd in (
        ("", None, None),
        ("_triton", triton_forward, triton_backward),
    ):
        torch.library.register_fake(f"lstm_fused::mhsa_forward{suffix}")(fake_forward)
        torch.library.register_fake(f"lstm_fused::mhsa_backward{suffix}")(fake_backward)
        if kernel_fwd is not None:
            torch.library.register_kernel(
                f"lstm_fused::mhsa_forward{suffix}", ("cpu", "cuda"), kernel_fwd
            )
            torch.library.register_kernel(
                f"lstm_fused::mhsa_backward{suffix}", ("cpu", "cuda"), kernel_bwd
            )
        register_core_autograd(
            f"lstm_fused::mhsa_forward{suffix}",
            getattr(NAMESPACE, f"mhsa_backward{suffix}").default,
        )


def register_like(namespace: str) -> None:
    """The fake kernels and autograd of this family's C++ operators in another library built
    with the same schemas (the emulated CUDA library: tests/backends.py,
    register_like_lstm_fused)."""
    ops = getattr(torch.ops, namespace)
    torch.library.register_fake(f"{namespace}::mhsa_forward")(fake_forward)
    torch.library.register_fake(f"{namespace}::mhsa_backward")(fake_backward)
    register_core_autograd(f"{namespace}::mhsa_forward", ops.mhsa_backward.default)


def _register_implementations() -> None:
    kernels = {
        "cuda": CoreKernels(""),
        "triton": CoreKernels("_triton"),
        "cpu": CoreKernels(""),
        "reference": ReferenceCoreKernels(),
    }
    dtypes = {"triton": (torch.float32, torch.float16, torch.bfloat16)}
    reasons = {"cuda": _cuda_head_dim_reason, "triton": _triton_tile_reason}
    for backend, entry in kernels.items():
        registry.register(
            registry.backend_implementation(
                OP,
                backend,
                entry,
                dtypes.get(backend, FLOATS),
                native_op="mhsa_forward",
                call_reason=reasons.get(backend),
            )
        )


if library.LOAD_ERROR is None:
    _register_operators()
_register_implementations()
