"""Triton kernels of channel attention (layout: csrc/attention_schemas.h): the masked mean over
time and the rescale y = x * w on valid steps (0 on padding), forward and backward.
Padded steps t >= lengths[b] are never loaded. Arithmetic in ACC (fp32, or fp64)."""

import triton
import triton.language as tl


@triton.jit
def _length(lengths_ptr, b, T, HAS_LENGTHS: tl.constexpr):
    n = T
    if HAS_LENGTHS:
        n = tl.load(lengths_ptr + b).to(tl.int32)
    return n


@triton.jit
def masked_mean_fwd_kernel(
    x_ptr,
    lengths_ptr,
    mean_ptr,
    T,
    C,
    stride_xb,
    stride_xt,
    HAS_LENGTHS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid (B, C / BLOCK_C): mean[b, c] = sum_{t < n} x[b, t, c] / n (0 when n = 0)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    n = _length(lengths_ptr, b, T, HAS_LENGTHS)
    acc = tl.zeros((BLOCK_C,), ACC)
    for t0 in range(0, n, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        x = tl.load(
            x_ptr + b * stride_xb + t[:, None] * stride_xt + c[None, :],
            mask=(t < n)[:, None] & c_ok[None, :],
            other=0.0,
        ).to(ACC)
        acc += tl.sum(x, axis=0)
    inv = tl.where(n > 0, 1.0 / tl.maximum(n, 1).to(ACC), 0.0)
    tl.store(mean_ptr + b * C + c, (acc * inv).to(mean_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def masked_mean_bwd_kernel(
    gm_ptr,
    lengths_ptr,
    gx_ptr,
    T,
    C,
    HAS_LENGTHS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid (B * T, C / BLOCK_C): grad_x[b, t] = grad_mean[b] / n on valid steps, else 0."""
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row % T
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    n = _length(lengths_ptr, b, T, HAS_LENGTHS)
    g = tl.load(gm_ptr + b * C + c, mask=c_ok & (t < n), other=0.0).to(ACC)
    inv = tl.where(t < n, 1.0 / tl.maximum(n, 1).to(ACC), 0.0)
    tl.store(gx_ptr + row * C + c, (g * inv).to(gx_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def rescale_fwd_kernel(
    x_ptr,
    w_ptr,
    lengths_ptr,
    y_ptr,
    T,
    C,
    stride_xb,
    stride_xt,
    HAS_LENGTHS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid (B * T, C / BLOCK_C): y[b, t] = x[b, t] * w[b] on valid steps, else 0."""
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row % T
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    n = _length(lengths_ptr, b, T, HAS_LENGTHS)
    valid = c_ok & (t < n)
    x = tl.load(x_ptr + b * stride_xb + t * stride_xt + c, mask=valid, other=0.0).to(ACC)
    w = tl.load(w_ptr + b * C + c, mask=valid, other=0.0).to(ACC)
    tl.store(y_ptr + row * C + c, tl.where(valid, x * w, 0.0).to(y_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def rescale_bwd_kernel(
    gy_ptr,
    x_ptr,
    w_ptr,
    lengths_ptr,
    gx_ptr,
    gw_ptr,
    T,
    C,
    stride_xb,
    stride_xt,
    HAS_LENGTHS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid (B, C / BLOCK_C): grad_x = grad_y * w on valid steps (0 on padding),
    grad_w[b] = sum_{t < n} grad_y[b, t] * x[b, t]."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    n = _length(lengths_ptr, b, T, HAS_LENGTHS)
    w = tl.load(w_ptr + b * C + c, mask=c_ok, other=0.0).to(ACC)
    gw = tl.zeros((BLOCK_C,), ACC)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        valid = (t < n)[:, None] & c_ok[None, :]
        g = tl.load(gy_ptr + (b * T + t[:, None]) * C + c[None, :], mask=valid, other=0.0).to(ACC)
        x = tl.load(
            x_ptr + b * stride_xb + t[:, None] * stride_xt + c[None, :], mask=valid, other=0.0
        ).to(ACC)
        gw += tl.sum(g * x, axis=0)
        tl.store(
            gx_ptr + (b * T + t[:, None]) * C + c[None, :],
            tl.where(valid, g * w[None, :], 0.0).to(gx_ptr.dtype.element_ty),
            mask=(t < T)[:, None] & c_ok[None, :],
        )
    tl.store(gw_ptr + b * C + c, gw.to(gw_ptr.dtype.element_ty), mask=c_ok)
