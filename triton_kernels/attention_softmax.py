"""Triton kernels of the masked softmax (layout: csrc/attention_schemas.h).

One program per row of scores (R, N). Forward: one sweep over the row in BLOCK_N tiles keeps
a running max m and a running sum s = sum exp(x - m) (rescaled when m grows), a second,
write-only sweep writes p = exp(x - m) / s. Excluded positions (j >= lengths[r], or mask false)
are loaded as -inf and never used, so NaN or inf stored there cannot leak; they get p = 0, and
a row with nothing kept is all zeros. Backward: dot = sum p g over p != 0, then
grad = scale * p * (g - dot), 0 where p = 0. Arithmetic in ACC (fp32, or fp64 for fp64 input).
"""

import triton
import triton.language as tl


@triton.jit
def masked_softmax_fwd_kernel(
    scores_ptr,
    lengths_ptr,
    mask_ptr,
    out_ptr,
    N,
    scale,
    HAS_LENGTHS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    n = N
    if HAS_LENGTHS:
        n = tl.load(lengths_ptr + row).to(tl.int32)
    cols = tl.arange(0, BLOCK_N)
    m = tl.full((), float("-inf"), ACC)
    s = tl.zeros((), ACC)
    for start in range(0, N, BLOCK_N):
        j = start + cols
        keep = j < n
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + row * N + j, mask=j < N, other=0) != 0)
        x = tl.load(scores_ptr + row * N + j, mask=keep, other=0.0).to(ACC) * scale
        x = tl.where(keep, x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all excluded so far
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), axis=0)
        m = m_new
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    inv = tl.where(s > 0, 1.0 / tl.where(s > 0, s, 1.0), 0.0)
    for start in range(0, N, BLOCK_N):
        j = start + cols
        keep = j < n
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + row * N + j, mask=j < N, other=0) != 0)
        x = tl.load(scores_ptr + row * N + j, mask=keep, other=0.0).to(ACC) * scale
        p = tl.where(keep, tl.exp(x - m_safe) * inv, 0.0)
        tl.store(out_ptr + row * N + j, p.to(out_ptr.dtype.element_ty), mask=j < N)


@triton.jit
def masked_softmax_bwd_kernel(
    grad_ptr, probs_ptr, out_ptr, N, scale, ACC: tl.constexpr, BLOCK_N: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    dot = tl.zeros((), ACC)
    for start in range(0, N, BLOCK_N):
        j = start + cols
        p = tl.load(probs_ptr + row * N + j, mask=j < N, other=0.0).to(ACC)
        g = tl.load(grad_ptr + row * N + j, mask=j < N, other=0.0).to(ACC)
        dot += tl.sum(tl.where(p != 0, p * g, 0.0), axis=0)
    for start in range(0, N, BLOCK_N):
        j = start + cols
        p = tl.load(probs_ptr + row * N + j, mask=j < N, other=0.0).to(ACC)
        g = tl.load(grad_ptr + row * N + j, mask=j < N, other=0.0).to(ACC)
        out = tl.where(p != 0, scale * p * (g - dot), 0.0)
        tl.store(out_ptr + row * N + j, out.to(out_ptr.dtype.element_ty), mask=j < N)
