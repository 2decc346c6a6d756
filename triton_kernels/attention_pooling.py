"""Triton kernels of additive attention pooling (layout: csrc/attention_schemas.h).

Forward, grid (B, D / BLOCK_D): each program walks the valid steps t < lengths[b] of its row
in BLOCK_T tiles, computes e_t = v . tanh(proj_t + qproj) (A in BLOCK_A tiles), and keeps an
online softmax: running max m, running sum s and the running weighted sum of its BLOCK_D slice
of x, rescaled when m grows. Every program computes the same e (same order, same bits); the
program of the first D slice also stores e in a scratch row (in ACC) and then writes
alpha = exp(e - m) / s and lse = m + log s. Padded steps are never loaded.

Backward, one program per b: dot = sum alpha g_alpha + g_c . c; per step
de_t = alpha_t (g_alpha_t + g_c . x_t - dot + g_lse), grad_x_t = alpha_t g_c,
grad_proj_t = de_t v (1 - tanh^2), and per-b partial sums of grad_v (de_t tanh) and grad_qproj
(grad_proj) into fp32 rows the caller sums. Padded rows of grad_x / grad_proj are written 0.
"""

import triton
import triton.language as tl


@triton.jit
def _tanh(u):
    # Stable: e = exp(-2|u|) <= 1, so no inf / inf.
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u < 0, -t, t)


@triton.jit
def _scores(
    proj_ptr,
    q_ptr,
    v_ptr,
    b,
    t,
    valid,
    stride_pb,
    stride_pt,
    A,
    HAS_Q: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    """e (BLOCK_T,) for the steps t; -inf where not valid."""
    a_offs = tl.arange(0, BLOCK_A)
    e = tl.zeros((BLOCK_T,), ACC)
    for a0 in range(0, A, BLOCK_A):
        a = a0 + a_offs
        a_ok = a < A
        u = tl.load(
            proj_ptr + b * stride_pb + t[:, None] * stride_pt + a[None, :],
            mask=valid[:, None] & a_ok[None, :],
            other=0.0,
        ).to(ACC)
        if HAS_Q:
            u += tl.load(q_ptr + b * A + a, mask=a_ok, other=0.0).to(ACC)[None, :]
        v = tl.load(v_ptr + a, mask=a_ok, other=0.0).to(ACC)
        e += tl.sum(_tanh(u) * v[None, :], axis=1)
    return tl.where(valid, e, float("-inf"))


@triton.jit
def attention_pooling_fwd_kernel(
    x_ptr,
    proj_ptr,
    v_ptr,
    q_ptr,
    lengths_ptr,
    context_ptr,
    alpha_ptr,
    lse_ptr,
    e_ptr,
    T,
    D,
    A,
    stride_xb,
    stride_xt,
    stride_pb,
    stride_pt,
    HAS_Q: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    n = T
    if HAS_LENGTHS:
        n = tl.load(lengths_ptr + b).to(tl.int32)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d < D
    t_offs = tl.arange(0, BLOCK_T)
    m = tl.full((), float("-inf"), ACC)
    s = tl.zeros((), ACC)
    ctx = tl.zeros((BLOCK_D,), ACC)
    for t0 in range(0, n, BLOCK_T):
        t = t0 + t_offs
        valid = t < n
        e = _scores(
            proj_ptr,
            q_ptr,
            v_ptr,
            b,
            t,
            valid,
            stride_pb,
            stride_pt,
            A,
            HAS_Q,
            ACC,
            BLOCK_T,
            BLOCK_A,
        )
        if pid_d == 0:
            tl.store(e_ptr + b * T + t, e.to(e_ptr.dtype.element_ty), mask=valid)
        m_new = tl.maximum(m, tl.max(e, axis=0))  # finite: the tile has a valid step
        rescale = tl.exp(m - m_new)
        w = tl.exp(e - m_new)  # 0 on invalid steps
        x = tl.load(
            x_ptr + b * stride_xb + t[:, None] * stride_xt + d[None, :],
            mask=valid[:, None] & d_ok[None, :],
            other=0.0,
        ).to(ACC)
        s = s * rescale + tl.sum(w, axis=0)
        ctx = ctx * rescale + tl.sum(w[:, None] * x, axis=0)
        m = m_new
    inv = tl.where(s > 0, 1.0 / tl.where(s > 0, s, 1.0), 0.0)
    tl.store(context_ptr + b * D + d, (ctx * inv).to(context_ptr.dtype.element_ty), mask=d_ok)
    if pid_d == 0:
        m_safe = tl.where(s > 0, m, 0.0)
        lse = tl.where(s > 0, m_safe + tl.log(tl.where(s > 0, s, 1.0)), float("-inf"))
        tl.store(lse_ptr + b, lse.to(lse_ptr.dtype.element_ty))
        for t0 in range(0, T, BLOCK_T):
            t = t0 + t_offs
            valid = t < n
            e = tl.load(e_ptr + b * T + t, mask=valid, other=float("-inf")).to(ACC)
            alpha = tl.where(valid, tl.exp(e - m_safe) * inv, 0.0)
            tl.store(alpha_ptr + b * T + t, alpha.to(alpha_ptr.dtype.element_ty), mask=t < T)


@triton.jit
def attention_pooling_bwd_kernel(
    gc_ptr,
    ga_ptr,
    glse_ptr,
    x_ptr,
    proj_ptr,
    v_ptr,
    q_ptr,
    lengths_ptr,
    alpha_ptr,
    context_ptr,
    gx_ptr,
    gproj_ptr,
    gv_ptr,
    gq_ptr,
    T,
    D,
    A,
    stride_xb,
    stride_xt,
    stride_pb,
    stride_pt,
    HAS_Q: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    n = T
    if HAS_LENGTHS:
        n = tl.load(lengths_ptr + b).to(tl.int32)
    t_offs = tl.arange(0, BLOCK_T)
    d_offs = tl.arange(0, BLOCK_D)
    a_offs = tl.arange(0, BLOCK_A)
    # dot = sum_t alpha_t g_alpha_t + g_c . c
    dot = tl.zeros((), ACC)
    for t0 in range(0, n, BLOCK_T):
        t = t0 + t_offs
        valid = t < n
        al = tl.load(alpha_ptr + b * T + t, mask=valid, other=0.0).to(ACC)
        ga = tl.load(ga_ptr + b * T + t, mask=valid, other=0.0).to(ACC)
        dot += tl.sum(al * ga, axis=0)
    if n > 0:
        for d0 in range(0, D, BLOCK_D):
            d = d0 + d_offs
            gc = tl.load(gc_ptr + b * D + d, mask=d < D, other=0.0).to(ACC)
            c = tl.load(context_ptr + b * D + d, mask=d < D, other=0.0).to(ACC)
            dot += tl.sum(gc * c, axis=0)
    glse = tl.where(n > 0, tl.load(glse_ptr + b).to(ACC), 0.0)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + t_offs
        valid = t < n
        in_t = t < T
        al = tl.load(alpha_ptr + b * T + t, mask=valid, other=0.0).to(ACC)
        gxdot = tl.zeros((BLOCK_T,), ACC)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + d_offs
            d_ok = d < D
            gc = tl.load(gc_ptr + b * D + d, mask=d_ok, other=0.0).to(ACC)
            x = tl.load(
                x_ptr + b * stride_xb + t[:, None] * stride_xt + d[None, :],
                mask=valid[:, None] & d_ok[None, :],
                other=0.0,
            ).to(ACC)
            gxdot += tl.sum(x * gc[None, :], axis=1)
            gx = al[:, None] * gc[None, :]  # 0 on padding: alpha is 0 there
            tl.store(
                gx_ptr + (b * T + t[:, None]) * D + d[None, :],
                gx.to(gx_ptr.dtype.element_ty),
                mask=in_t[:, None] & d_ok[None, :],
            )
        ga = tl.load(ga_ptr + b * T + t, mask=valid, other=0.0).to(ACC)
        de = tl.where(valid, al * (ga + gxdot - dot + glse), 0.0)
        for a0 in range(0, A, BLOCK_A):
            a = a0 + a_offs
            a_ok = a < A
            u = tl.load(
                proj_ptr + b * stride_pb + t[:, None] * stride_pt + a[None, :],
                mask=valid[:, None] & a_ok[None, :],
                other=0.0,
            ).to(ACC)
            if HAS_Q:
                u += tl.load(q_ptr + b * A + a, mask=a_ok, other=0.0).to(ACC)[None, :]
            th = _tanh(u)
            v = tl.load(v_ptr + a, mask=a_ok, other=0.0).to(ACC)
            gp = de[:, None] * v[None, :] * (1.0 - th * th)
            gp = tl.where(valid[:, None], gp, 0.0)
            tl.store(
                gproj_ptr + (b * T + t[:, None]) * A + a[None, :],
                gp.to(gproj_ptr.dtype.element_ty),
                mask=in_t[:, None] & a_ok[None, :],
            )
            gv_part = tl.sum(tl.where(valid[:, None], de[:, None] * th, 0.0), axis=0)
            gq_part = tl.sum(gp, axis=0)
            # Row b of the partial sums belongs to this program alone: no race.
            gv_old = tl.load(gv_ptr + b * A + a, mask=a_ok, other=0.0)
            tl.store(gv_ptr + b * A + a, gv_old + gv_part.to(gv_ptr.dtype.element_ty), mask=a_ok)
            gq_old = tl.load(gq_ptr + b * A + a, mask=a_ok, other=0.0)
            tl.store(gq_ptr + b * A + a, gq_old + gq_part.to(gq_ptr.dtype.element_ty), mask=a_ok)
