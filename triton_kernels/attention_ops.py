"""Launchers of the attention Triton kernels: one function per operator of the attention
family (schemas: csrc/attention_schemas.h), which lstm_fused/ops/attention.py registers as the
operators lstm_fused::<name>_triton.

The checks of user input (lengths in range, shapes, devices) run before, in
lstm_fused.functional; the launchers only bring inner dimensions to stride 1.
"""

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import interpreter_compat
from .launch_config import device_target, full_register_budget, kernel_config

interpreter_compat.apply()  # before any kernel runs: runtime loop bounds under the interpreter

from .attention_channel import (  # noqa: E402
    masked_mean_bwd_kernel,
    masked_mean_fwd_kernel,
    rescale_bwd_kernel,
    rescale_fwd_kernel,
)
from .attention_pooling import (  # noqa: E402
    attention_pooling_bwd_kernel,
    attention_pooling_fwd_kernel,
)
from .attention_softmax import masked_softmax_bwd_kernel, masked_softmax_fwd_kernel  # noqa: E402

Tensor = torch.Tensor


# Largest tile per dimension (powers of two). Tests lower them to run the multi-tile paths
# (online rescale across tiles, several D slices) on tiny shapes.
BLOCK_CAPS = {"softmax_n": 1024, "pool_a": 64, "pool_d": 128, "channel_c": 256}


def _acc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block(n, cap):
    return max(16, min(triton.next_power_of_2(max(n, 1)), cap))


def _inner(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _acc_torch(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# Triton's defaults, written out: every kernel here is a loop over tiles of one row.
_WARPS, _STAGES = 4, 3


def masked_softmax_forward_config(N, dtype, has_lengths, has_mask, target):
    """KernelConfig of masked_softmax_fwd_kernel for rows of N scores (launch_config.py)."""
    return kernel_config(
        masked_softmax_fwd_kernel,
        dict(
            HAS_LENGTHS=has_lengths,
            HAS_MASK=has_mask,
            ACC=_acc(dtype),
            BLOCK_N=_block(N, BLOCK_CAPS["softmax_n"]),
        ),
        _WARPS,
        _STAGES,
        dtype,
        pointers=dict(lengths_ptr=torch.int64, mask_ptr=torch.uint8),
        floats=("scale",),
    )


def masked_softmax_backward_config(N, dtype, target):
    return kernel_config(
        masked_softmax_bwd_kernel,
        dict(ACC=_acc(dtype), BLOCK_N=_block(N, BLOCK_CAPS["softmax_n"])),
        _WARPS,
        _STAGES,
        dtype,
        floats=("scale",),
    )


def attention_pooling_forward_config(T, D, A, dtype, has_q, has_lengths, target):
    """KernelConfig of attention_pooling_fwd_kernel for x (B, T, D), proj (B, T, A)."""
    return kernel_config(
        attention_pooling_fwd_kernel,
        dict(HAS_Q=has_q, HAS_LENGTHS=has_lengths, ACC=_acc(dtype), **_pooling_blocks(T, D, A)),
        _WARPS,
        _STAGES,
        dtype,
        pointers=dict(lengths_ptr=torch.int64, e_ptr=_acc_torch(dtype)),
        maxnreg=full_register_budget(_WARPS),
    )


def attention_pooling_backward_config(T, D, A, dtype, has_q, has_lengths, target):
    acc = _acc_torch(dtype)
    return kernel_config(
        attention_pooling_bwd_kernel,
        dict(HAS_Q=has_q, HAS_LENGTHS=has_lengths, ACC=_acc(dtype), **_pooling_blocks(T, D, A)),
        _WARPS,
        _STAGES,
        dtype,
        pointers=dict(lengths_ptr=torch.int64, gv_ptr=acc, gq_ptr=acc),
        maxnreg=full_register_budget(_WARPS),
    )


def channel_configs(C, dtype, has_lengths, target):
    """KernelConfigs of the four channel-attention kernels for C channels, by name."""
    common = dict(
        HAS_LENGTHS=has_lengths, ACC=_acc(dtype), BLOCK_C=_block(C, BLOCK_CAPS["channel_c"])
    )
    lens = dict(lengths_ptr=torch.int64)
    return {
        "mean_fwd": kernel_config(
            masked_mean_fwd_kernel, dict(common, BLOCK_T=16), _WARPS, _STAGES, dtype, pointers=lens
        ),
        "mean_bwd": kernel_config(
            masked_mean_bwd_kernel, common, _WARPS, _STAGES, dtype, pointers=lens
        ),
        "rescale_fwd": kernel_config(
            rescale_fwd_kernel, common, _WARPS, _STAGES, dtype, pointers=lens
        ),
        "rescale_bwd": kernel_config(
            rescale_bwd_kernel, dict(common, BLOCK_T=16), _WARPS, _STAGES, dtype, pointers=lens
        ),
    }


def masked_softmax_forward(
    scores: Tensor, lengths: Optional[Tensor], mask: Optional[Tensor], scale: float
) -> Tensor:
    scores = scores.contiguous()
    R, N = scores.shape
    out = torch.empty_like(scores)
    if R == 0 or N == 0:
        return out
    mask_u8 = None if mask is None else mask.contiguous().view(torch.uint8)
    cfg = masked_softmax_forward_config(
        N, scores.dtype, lengths is not None, mask is not None, device_target(scores.device)
    )
    cfg.launch(
        (R,),
        scores,
        lengths if lengths is not None else scores,
        mask_u8 if mask_u8 is not None else scores,
        out,
        N,
        float(scale),
    )
    return out


def masked_softmax_backward(grad_probs: Tensor, probs: Tensor, scale: float) -> Tensor:
    grad_probs, probs = grad_probs.contiguous(), probs.contiguous()
    R, N = probs.shape
    out = torch.empty_like(probs)
    if R == 0 or N == 0:
        return out
    cfg = masked_softmax_backward_config(N, probs.dtype, device_target(probs.device))
    cfg.launch((R,), grad_probs, probs, out, N, float(scale))
    return out


def _pooling_blocks(T, D, A):
    return dict(
        BLOCK_T=16, BLOCK_A=_block(A, BLOCK_CAPS["pool_a"]), BLOCK_D=_block(D, BLOCK_CAPS["pool_d"])
    )


def attention_pooling_forward(
    x: Tensor, proj: Tensor, v: Tensor, qproj: Optional[Tensor], lengths: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor]:
    x, proj, v = _inner(x), _inner(proj), v.contiguous()
    qproj = None if qproj is None else qproj.contiguous()
    B, T, D = x.shape
    A = proj.shape[2]
    context = torch.empty((B, D), dtype=x.dtype, device=x.device)
    alpha = torch.empty((B, T), dtype=x.dtype, device=x.device)
    lse = torch.empty((B,), dtype=x.dtype, device=x.device)
    if B == 0:
        return context, alpha, lse
    scratch = torch.empty((B, max(T, 1)), dtype=_acc_torch(x.dtype), device=x.device)  # e_t
    cfg = attention_pooling_forward_config(
        T, D, A, x.dtype, qproj is not None, lengths is not None, device_target(x.device)
    )
    grid = (B, max(1, triton.cdiv(D, cfg.meta()["BLOCK_D"])))
    cfg.launch(
        grid,
        x,
        proj,
        v,
        qproj if qproj is not None else v,
        lengths if lengths is not None else v,
        context,
        alpha,
        lse,
        scratch,
        T,
        D,
        A,
        x.stride(0),
        x.stride(1),
        proj.stride(0),
        proj.stride(1),
    )
    return context, alpha, lse


def attention_pooling_backward(
    grad_context: Tensor,
    grad_alpha: Tensor,
    grad_lse: Tensor,
    x: Tensor,
    proj: Tensor,
    v: Tensor,
    qproj: Optional[Tensor],
    lengths: Optional[Tensor],
    alpha: Tensor,
    context: Tensor,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    x, proj, v = _inner(x), _inner(proj), v.contiguous()
    qproj = None if qproj is None else qproj.contiguous()
    B, T, D = x.shape
    A = proj.shape[2]
    grad_x = torch.empty((B, T, D), dtype=x.dtype, device=x.device)
    grad_proj = torch.empty((B, T, A), dtype=x.dtype, device=x.device)
    acc_dtype = _acc_torch(x.dtype)
    gv_rows = torch.zeros((B, A), dtype=acc_dtype, device=x.device)
    gq_rows = torch.zeros((B, A), dtype=acc_dtype, device=x.device)
    if B > 0:
        cfg = attention_pooling_backward_config(
            T, D, A, x.dtype, qproj is not None, lengths is not None, device_target(x.device)
        )
        cfg.launch(
            (B,),
            grad_context.contiguous(),
            grad_alpha.contiguous(),
            grad_lse.contiguous(),
            x,
            proj,
            v,
            qproj if qproj is not None else v,
            lengths if lengths is not None else v,
            alpha.contiguous(),
            context.contiguous(),
            grad_x,
            grad_proj,
            gv_rows,
            gq_rows,
            T,
            D,
            A,
            x.stride(0),
            x.stride(1),
            proj.stride(0),
            proj.stride(1),
        )
    grad_v = gv_rows.sum(0).to(x.dtype)
    grad_q = gq_rows.to(x.dtype) if qproj is not None else x.new_empty((0,))
    return grad_x, grad_proj, grad_v, grad_q


def _channel(name, x, C, lengths):
    return channel_configs(C, x.dtype, lengths is not None, device_target(x.device))[name]


def channel_masked_mean_forward(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    x = _inner(x)
    B, T, C = x.shape
    mean = torch.empty((B, C), dtype=x.dtype, device=x.device)
    if B == 0 or C == 0:
        return mean
    cfg = _channel("mean_fwd", x, C, lengths)
    cfg.launch(
        (B, triton.cdiv(C, cfg.meta()["BLOCK_C"])),
        x,
        lengths if lengths is not None else x,
        mean,
        T,
        C,
        x.stride(0),
        x.stride(1),
    )
    return mean


def channel_masked_mean_backward(grad_mean: Tensor, x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    B, T, C = x.shape
    grad_x = torch.empty((B, T, C), dtype=x.dtype, device=x.device)
    if B * T == 0 or C == 0:
        return grad_x
    cfg = _channel("mean_bwd", x, C, lengths)
    cfg.launch(
        (B * T, triton.cdiv(C, cfg.meta()["BLOCK_C"])),
        grad_mean.contiguous(),
        lengths if lengths is not None else x,
        grad_x,
        T,
        C,
    )
    return grad_x


def channel_rescale_forward(x: Tensor, w: Tensor, lengths: Optional[Tensor]) -> Tensor:
    x, w = _inner(x), w.contiguous()
    B, T, C = x.shape
    y = torch.empty((B, T, C), dtype=x.dtype, device=x.device)
    if B * T == 0 or C == 0:
        return y
    cfg = _channel("rescale_fwd", x, C, lengths)
    cfg.launch(
        (B * T, triton.cdiv(C, cfg.meta()["BLOCK_C"])),
        x,
        w,
        lengths if lengths is not None else x,
        y,
        T,
        C,
        x.stride(0),
        x.stride(1),
    )
    return y


def channel_rescale_backward(
    grad_y: Tensor, x: Tensor, w: Tensor, lengths: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    x, w = _inner(x), w.contiguous()
    B, T, C = x.shape
    grad_x = torch.empty((B, T, C), dtype=x.dtype, device=x.device)
    grad_w = torch.empty((B, C), dtype=x.dtype, device=x.device)
    if B == 0 or C == 0:
        return grad_x, grad_w
    cfg = _channel("rescale_bwd", x, C, lengths)
    cfg.launch(
        (B, triton.cdiv(C, cfg.meta()["BLOCK_C"])),
        grad_y.contiguous(),
        x,
        w,
        lengths if lengths is not None else x,
        grad_x,
        grad_w,
        T,
        C,
        x.stride(0),
        x.stride(1),
    )
    return grad_x, grad_w
