"""The attention core of MultiheadSelfAttention (op family "self_attention") on every backend.

    attention(q, k, v, lengths, scale, dropout_p, seed) -> out    q, k, v, out (B, N, T, Dh)
    out = softmax(scale * q k^T over the keys t < lengths[b]) v; zeros for a row of length 0.
    dropout_p > 0 (training): the weights that multiply v are dropped out with the
    counter-based mask of csrc/attention_dropout.h drawn from `seed`, a one-element int64 tensor
    (reference_mhsa.dropout_keep_mask), the same on every backend.

Operators (registered once each; the dispatcher picks the device):
  lstm_fused::mhsa_forward / mhsa_backward              C++ (csrc/mhsa_ops.cpp), CPU and CUDA
  lstm_fused::mhsa_forward_triton / mhsa_backward_triton  Triton (triton_kernels/flash_attention.py)
Both forward operators return (out, lse) and get a fake kernel (torch.compile) and an autograd
formula here. Attention dropout runs inside every kernel (CPU, CUDA, Triton) and the
reference, with the same mask for the same seed.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch

from .. import _ops, reference_mhsa
from . import register
from .base import Backend

OP = "self_attention"


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
                return reference_mhsa.attention_core(q, k, v, lengths, ctx.scale, ctx.dropout_p,
                                                     ctx.dropout_p > 0.0, seed=seed)[:1]

            return (*_ops.differentiable_vjp(core, (q, k, v), (grad_out,),
                                             ctx.needs_input_grad[:3]),
                    None, None, None, None)
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dq, dk, dv = backward_op(grad_out, q, k, v, lengths, ctx.scale, ctx.dropout_p, seed,
                                 out, lse)
        return dq, dk, dv, None, None, None, None

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


if _ops.LOAD_ERROR is None:
    torch.library.register_fake("lstm_fused::mhsa_forward")(fake_forward)
    torch.library.register_fake("lstm_fused::mhsa_backward")(fake_backward)
    register_core_autograd("lstm_fused::mhsa_forward", torch.ops.lstm_fused.mhsa_backward.default)


# The Triton operators. The kernels module imports triton (and reads TRITON_INTERPRET) only
# when a Triton operator first runs.
@torch.library.custom_op("lstm_fused::mhsa_forward_triton", mutates_args=())
def mhsa_forward_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        lengths: Optional[torch.Tensor], scale: float, dropout_p: float = 0.0,
                        seed: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    from ..triton_kernels import flash_attention
    return flash_attention.flash_attention_forward(q, k, v, lengths, scale, dropout_p, seed)


@torch.library.custom_op("lstm_fused::mhsa_backward_triton", mutates_args=())
def mhsa_backward_triton(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                         v: torch.Tensor, lengths: Optional[torch.Tensor], scale: float,
                         dropout_p: float, seed: Optional[torch.Tensor], out: torch.Tensor,
                         lse: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..triton_kernels import flash_attention
    return flash_attention.flash_attention_backward(grad_out, q, k, v, lengths, scale,
                                                    dropout_p, seed, out, lse)


mhsa_forward_triton.register_fake(fake_forward)
mhsa_backward_triton.register_fake(fake_backward)
register_core_autograd("lstm_fused::mhsa_forward_triton",
                       torch.ops.lstm_fused.mhsa_backward_triton.default)


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


class SelfAttentionBackend(Backend):
    """attention(q, k, v, lengths, scale, dropout_p, seed) -> out (B, N, T, Dh),
    differentiable. features of a call: dropout=True when attention dropout is active
    (training, p > 0); head_dim = Dh."""

    op = OP
    dtypes: tuple = ()

    def _dtype_reason(self, dtype):
        if dtype not in self.dtypes:
            return (f"dtype {str(dtype).replace('torch.', '')} is not supported "
                    f"(supported: {_dtype_names(self.dtypes)})")
        return None

    def attention(self, q, k, v, lengths, scale, dropout_p=0.0, seed=None):
        raise NotImplementedError


class ReferenceSelfAttention(SelfAttentionBackend):
    name = "reference"
    dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def unsupported_reason(self, device, dtype, **features):
        return self._dtype_reason(dtype)

    def attention(self, q, k, v, lengths, scale, dropout_p=0.0, seed=None):
        return reference_mhsa.attention_core(q, k, v, lengths, scale, dropout_p,
                                             dropout_p > 0.0, seed=seed)[0]


class _NativeSelfAttention(SelfAttentionBackend):
    device_type = ""
    dispatch_key = ""

    def unavailable_reason(self):
        if _ops.LOAD_ERROR is not None:
            return _ops.LOAD_ERROR
        if not _ops.has_kernel("mhsa_forward", self.dispatch_key):
            return f"lstm_fused._C was built without {self.dispatch_key} attention kernels"
        return None

    def unsupported_reason(self, device, dtype, **features):
        if device.type != self.device_type:
            return f"it runs on {self.device_type} tensors, got a tensor on {device}"
        return self._dtype_reason(dtype)

    def attention(self, q, k, v, lengths, scale, dropout_p=0.0, seed=None):
        return torch.ops.lstm_fused.mhsa_forward(q, k, v, lengths, scale, dropout_p, seed)[0]


class CPUSelfAttention(_NativeSelfAttention):
    name = "cpu"
    device_type = "cpu"
    dispatch_key = "CPU"
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class CUDASelfAttention(_NativeSelfAttention):
    name = "cuda"
    device_type = "cuda"
    dispatch_key = "CUDA"
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

    max_head_dim = 128   # csrc/cuda/mhsa_plan.h: the CUDA kernels are built for Dh <= 128

    def unavailable_reason(self):
        reason = super().unavailable_reason()
        if reason is None and not torch.cuda.is_available():
            reason = "no CUDA device is available to PyTorch"
        return reason

    def unsupported_reason(self, device, dtype, **features):
        head_dim = features.get("head_dim", 0)
        if head_dim > self.max_head_dim:
            return f"head size embed_dim // num_heads = {head_dim} exceeds {self.max_head_dim}"
        return super().unsupported_reason(device, dtype, **features)


class TritonSelfAttention(SelfAttentionBackend):
    name = "triton"
    dtypes = (torch.float32, torch.float16, torch.bfloat16)

    def unavailable_reason(self):
        if importlib.util.find_spec("triton") is None:
            return "the triton package is not installed"
        return None

    def unsupported_reason(self, device, dtype, **features):
        interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
        if device.type != "cuda" and not (device.type == "cpu" and interpret):
            return (f"it runs on cuda tensors (cpu tensors only under TRITON_INTERPRET=1), "
                    f"got a tensor on {device}")
        reason = self._dtype_reason(dtype)
        if reason is None and device.type == "cuda":
            # Tiles that fit this GPU without register spills (flash_attention._TILES).
            from ..triton_kernels import flash_attention
            from ..triton_kernels.launch_config import device_target

            reason = flash_attention.unsupported_reason(dtype, features.get("head_dim", 0),
                                                        device_target(device))
        return reason

    def attention(self, q, k, v, lengths, scale, dropout_p=0.0, seed=None):
        return torch.ops.lstm_fused.mhsa_forward_triton(q, k, v, lengths, scale, dropout_p,
                                                        seed)[0]


for _impl in (ReferenceSelfAttention(), CPUSelfAttention(), CUDASelfAttention(),
              TritonSelfAttention()):
    register(_impl)
