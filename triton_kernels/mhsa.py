"""Flash-style attention core of MultiheadSelfAttention in Triton, with key padding.

    out = softmax(scale * q k^T over the keys t < lengths[b]) v        q, k, v (B, N, T, Dh)

Forward: one program per (query tile, batch row b * head n). It walks the key tiles up to the
row's length with a running max m and running sum l (online softmax), rescaling the context
accumulator, so the T x T scores are never written. Keys t >= lengths[b] are never loaded (the
loop stops at the length and the last tile's loads are masked), so padding that holds NaN or
inf cannot reach the result. A batch row of length 0 gives a zero context and lse = -inf.

Backward recomputes p_ij = exp(scale q_i.k_j - lse_i) tile by tile:
    delta_i = dO_i . O_i;   ds_ij = p_ij (dO_i . v_j - delta_i)
    dV_j = sum_i p_ij dO_i;  dK_j = scale sum_i ds_ij q_i  (one program per key tile)
    dQ_i = scale sum_j ds_ij k_j                           (one program per query tile)
Two kernels instead of atomics, so the result is deterministic.

Attention dropout (DROP, training): the weights that multiply v are p_ij z_ij with
z = keep * keep_scale (keep_scale = 1 / the keep rate, about 1 / (1 - p)) from the
counter-based mask of csrc/attention_dropout.h (the same function as the CPU and CUDA kernels
and the reference, so the same seed drops the same weights everywhere; the backward
regenerates it). The normalisation l and lse are those before dropout. Backward:
dV_j = sum_i p_ij z_ij dO_i, ds_ij = p_ij (z_ij dO_i . v_j - delta_i), delta_i = dO_i . O_i.

Everything is computed in float32 (inputs converted right after loading); float32 inputs use
IEEE products ("ieee"), float16 / bfloat16 inputs are exact in tf32.
Entry points: mhsa_forward(q, k, v, lengths, scale, dropout_p, seed) -> (out, lse)
and mhsa_backward(grad_out, q, k, v, lengths, scale, dropout_p, seed, out, lse)
-> (dq, dk, dv).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from .launch_config import (
    SHARED_MEMORY_LIMIT,
    constexpr_params,
    device_target,
    kernel_config,
    shared_memory_limit,
)

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _load_tile(base, rows, cols, stride_t, stride_d, n_rows, n_cols):
    """(len(rows), len(cols)) tile in float32; rows >= n_rows and cols >= n_cols read as 0."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    ptrs = base + rows[:, None] * stride_t + cols[None, :] * stride_d
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _mix32(h):
    """MurmurHash3's finaliser on uint32 lanes (csrc/attention_dropout.h: mix32)."""
    h ^= h >> 16
    h *= tl.full([], 0x85EBCA6B, tl.uint32)
    h ^= h >> 13
    h *= tl.full([], 0xC2B2AE35, tl.uint32)
    h ^= h >> 16
    return h


@triton.jit
def _dropout_scale(bh, T, rows, keys, seed_lo, seed_hi, threshold, keep_scale):
    """z (len(rows), len(keys)) float32: keep_scale where weight (row, key) of head bh is kept,
    else 0 (csrc/attention_dropout.h, row number bh * T + row modulo 2^32)."""
    r = (bh * T + rows).to(tl.uint32)
    row_key = _mix32(
        _mix32(r ^ seed_lo.to(tl.uint32, bitcast=True)) ^ seed_hi.to(tl.uint32, bitcast=True)
    )
    col = keys.to(tl.uint32) * tl.full([], 0x9E3779B9, tl.uint32)
    u = _mix32(row_key[:, None] ^ col[None, :]) >> 8
    return tl.where(u >= threshold.to(tl.uint32, bitcast=True), keep_scale, 0.0)


# The seed words and the threshold are never specialised: Triton turns an integer argument
# equal to 1 into a compile-time constant (which has no .to()), and each value would otherwise
# be its own compiled variant.
_NO_SPECIALIZE = ("seed_lo", "seed_hi", "threshold")


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _forward_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    LEN,
    s_b,
    s_n,
    s_t,
    s_d,  # strides of q, k, v (shared)
    o_b,
    o_n,
    o_t,
    o_d,  # strides of out
    N,
    T,
    Dh,
    scale,
    seed_lo,
    seed_hi,
    threshold,
    keep_scale,
    HAS_LEN: tl.constexpr,
    DROP: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(1)
    bh = tl.program_id(0)  # axis 0: B * N may exceed axis 1's 65535
    b = bh // N
    n = bh % N
    length = T
    if HAS_LEN:
        length = tl.load(LEN + b).to(tl.int32)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    base = b * s_b + n * s_n
    q = _load_tile(Q + base, rows, dims, s_t, s_d, T, Dh)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    start = 0
    while start < length:  # not range(): the interpreter cannot loop to a loaded bound
        keys = start + tl.arange(0, BLOCK_N)
        k = _load_tile(K + base, keys, dims, s_t, s_d, length, Dh)
        v = _load_tile(V + base, keys, dims, s_t, s_d, length, Dh)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        s = tl.where(keys[None, :] < length, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)  # 0 on the first tile (m_i = -inf)
        p = tl.exp(s - m_new[:, None])  # padded keys: exp(-inf) = 0
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROP:
            p = p * _dropout_scale(bh, T, rows, keys, seed_lo, seed_hi, threshold, keep_scale)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        m_i = m_new
        start += BLOCK_N

    has_keys = l_i > 0.0  # False only for a row of length 0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = tl.where(has_keys[:, None], acc / l_safe[:, None], 0.0)
    lse = tl.where(has_keys, m_i + tl.log(l_safe), float("-inf"))
    row_ok = rows < T
    o_ptrs = O + b * o_b + n * o_n + rows[:, None] * o_t + dims[None, :] * o_d
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & (dims[None, :] < Dh))
    tl.store(LSE + bh * T + rows, lse, mask=row_ok)


@triton.jit
def _delta_kernel(DO, O, DELTA, T, Dh, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta (B*N, T) = rowsum(dO * O); dO and O contiguous (B, N, T, Dh)."""
    pid_m = tl.program_id(1)
    bh = tl.program_id(0)  # axis 0: B * N may exceed axis 1's 65535
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    do = _load_tile(DO + bh * T * Dh, rows, dims, Dh, 1, T, Dh)
    o = _load_tile(O + bh * T * Dh, rows, dims, Dh, 1, T, Dh)
    tl.store(DELTA + bh * T + rows, tl.sum(do * o, axis=1), mask=rows < T)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    LEN,
    s_b,
    s_n,
    s_t,
    s_d,
    N,
    T,
    Dh,
    scale,
    seed_lo,
    seed_hi,
    threshold,
    keep_scale,
    HAS_LEN: tl.constexpr,
    DROP: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dK, dV of one key tile; dO, DK, DV contiguous (B, N, T, Dh); lse, delta (B*N, T)."""
    pid_n = tl.program_id(1)
    bh = tl.program_id(0)  # axis 0: B * N may exceed axis 1's 65535
    b = bh // N
    n = bh % N
    length = T
    if HAS_LEN:
        length = tl.load(LEN + b).to(tl.int32)
    keys = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    base = b * s_b + n * s_n
    k = _load_tile(K + base, keys, dims, s_t, s_d, length, Dh)
    v = _load_tile(V + base, keys, dims, s_t, s_d, length, Dh)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    key_ok = keys < length
    # A tile made only of padding keys gets zero gradients: skip the query loop.
    stop = tl.where(pid_n * BLOCK_N < length, T, 0)
    start = 0
    while start < stop:  # not range(): the interpreter cannot loop to a loaded bound
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < T
        q = _load_tile(Q + base, rows, dims, s_t, s_d, T, Dh)
        do = _load_tile(DO + bh * T * Dh, rows, dims, Dh, 1, T, Dh)
        lse = tl.load(LSE + bh * T + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * T + rows, mask=row_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        ok = row_ok[:, None] & key_ok[None, :]
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if DROP:
            z = _dropout_scale(bh, T, rows, keys, seed_lo, seed_hi, threshold, keep_scale)
            dv += tl.dot(tl.trans(p * z), do, input_precision=PRECISION)
            dp = dp * z
        else:
            dv += tl.dot(tl.trans(p), do, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds), q, input_precision=PRECISION)
        start += BLOCK_M

    out_mask = (keys[:, None] < T) & (dims[None, :] < Dh)
    offs = bh * T * Dh + keys[:, None] * Dh + dims[None, :]
    tl.store(DK + offs, (dk * scale).to(DK.dtype.element_ty), mask=out_mask)
    tl.store(DV + offs, dv.to(DV.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    LEN,
    s_b,
    s_n,
    s_t,
    s_d,
    N,
    T,
    Dh,
    scale,
    seed_lo,
    seed_hi,
    threshold,
    keep_scale,
    HAS_LEN: tl.constexpr,
    DROP: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dQ of one query tile; dO, DQ contiguous (B, N, T, Dh)."""
    pid_m = tl.program_id(1)
    bh = tl.program_id(0)  # axis 0: B * N may exceed axis 1's 65535
    b = bh // N
    n = bh % N
    length = T
    if HAS_LEN:
        length = tl.load(LEN + b).to(tl.int32)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < T
    base = b * s_b + n * s_n
    q = _load_tile(Q + base, rows, dims, s_t, s_d, T, Dh)
    do = _load_tile(DO + bh * T * Dh, rows, dims, Dh, 1, T, Dh)
    lse = tl.load(LSE + bh * T + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * T + rows, mask=row_ok, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    start = 0
    while start < length:  # not range(): the interpreter cannot loop to a loaded bound
        keys = start + tl.arange(0, BLOCK_N)
        k = _load_tile(K + base, keys, dims, s_t, s_d, length, Dh)
        v = _load_tile(V + base, keys, dims, s_t, s_d, length, Dh)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        ok = row_ok[:, None] & (keys[None, :] < length)
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if DROP:
            dp = dp * _dropout_scale(bh, T, rows, keys, seed_lo, seed_hi, threshold, keep_scale)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds, k, input_precision=PRECISION)
        start += BLOCK_N

    offs = bh * T * Dh + rows[:, None] * Dh + dims[None, :]
    tl.store(
        DQ + offs, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & (dims[None, :] < Dh)
    )


def _same_strides(q, k, v):
    """q, k, v sharing one stride set (the views of one packed projection do)."""
    if q.stride() == k.stride() == v.stride():
        return q, k, v
    return q.contiguous(), k.contiguous(), v.contiguous()


def _int32(word: int) -> int:
    """A 32-bit word as a signed int32 value (one kernel signature for every seed)."""
    return word - (1 << 32) if word >= (1 << 31) else word


def dropout_threshold(dropout_p: float) -> int:
    """round(p * 2^24) as C++'s llround does for p >= 0: a weight is dropped when its 24 random
    bits fall below it (the rule of csrc/attention_dropout.h, which every backend follows)."""
    return math.floor(dropout_p * 16777216.0 + 0.5)


def dropout_keep_scale(dropout_p: float) -> float:
    """The factor of a kept weight: one over the exact keep rate."""
    threshold = dropout_threshold(dropout_p)
    return 16777216.0 / (16777216.0 - threshold) if threshold < (1 << 24) else 0.0


def _dropout_args(dropout_p: float, seed: Optional[torch.Tensor]):
    """(seed_lo, seed_hi, threshold, keep_scale) of csrc/attention_dropout.h; seed a
    one-element int64 tensor (read on the host), needed when dropout_p > 0."""
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"mhsa: dropout_p must be in [0, 1], got {dropout_p}")
    if dropout_p == 0.0:
        return 0, 0, 0, 1.0
    if seed is None or seed.numel() != 1 or seed.dtype != torch.int64 or seed.device.type != "cpu":
        raise ValueError("mhsa: dropout_p > 0 needs seed, a one-element int64 CPU tensor")
    s = int(seed.item())
    threshold, keep_scale = dropout_threshold(dropout_p), dropout_keep_scale(dropout_p)
    return _int32(s & 0xFFFFFFFF), _int32((s >> 32) & 0xFFFFFFFF), threshold, keep_scale


# Tiles per kernel on a GPU: (BLOCK_M, BLOCK_N, num_warps) by target (80: sm_80 and every GPU
# below sm_90's shared memory; 90: sm_90 and up), input dtype and head block BLOCK_D (the next
# power of two >= Dh, at least 16), chosen so that every kernel compiles without register
# spills, dropout and lengths on (tests/test_triton_aot.py compiles them). The forward and dQ
# keep a query tile (BLOCK_M rows) and loop over key tiles; dK/dV keep a key tile (BLOCK_N) and
# loop over query tiles. A (dtype, BLOCK_D) without an entry is refused (unsupported_reason):
# its kernels spill at every tile tried (16 to 64 rows, 2 to 8 warps).
# Products: float32 inputs use "tf32x3" (three TF32 tensor-core products: about float32's
# accuracy; a CPU emulation of it gives a largest error / (|a| |b|) of 2.4e-7 against 2.5e-7
# for float32 FMAs at K <= 128), 16-bit inputs "tf32" (exact for their values; the
# probabilities are rounded to TF32).
_Q64, _Q16 = (64, 16, 4), (16, 16, 4)
_TILES = {
    80: {
        (torch.float16, 16): dict(fwd=_Q64, dkdv=(16, 64, 4), dq=_Q64),
        (torch.float16, 32): dict(fwd=_Q64, dkdv=(16, 32, 4), dq=_Q64),
        (torch.float16, 64): dict(fwd=_Q64, dkdv=(16, 32, 4), dq=_Q64),
        (torch.float16, 128): dict(fwd=_Q16, dkdv=(16, 32, 4), dq=_Q16),
        (torch.float32, 16): dict(fwd=_Q64, dkdv=(16, 16, 4), dq=_Q64),
        (torch.float32, 32): dict(fwd=_Q64, dkdv=(16, 16, 4), dq=_Q64),
        (torch.float32, 64): dict(fwd=_Q64, dkdv=(16, 32, 4), dq=_Q16),
    },
    90: {
        (torch.float16, 16): dict(fwd=_Q64, dkdv=(16, 64, 4), dq=_Q64),
        (torch.float16, 32): dict(fwd=_Q64, dkdv=(16, 64, 4), dq=_Q64),
        (torch.float16, 64): dict(fwd=_Q64, dkdv=(16, 64, 4), dq=_Q64),
        (torch.float16, 128): dict(fwd=_Q16, dkdv=(16, 32, 4), dq=_Q16),
        (torch.float32, 16): dict(fwd=_Q64, dkdv=(16, 64, 4), dq=_Q64),
        (torch.float32, 32): dict(fwd=_Q64, dkdv=(16, 64, 4), dq=_Q64),
        (torch.float32, 64): dict(fwd=(32, 16, 4), dkdv=(16, 32, 4), dq=(16, 16, 8)),
    },
}
for _table in _TILES.values():  # bfloat16 as float16 unless measured otherwise
    for (_dt, _d), _tiles in list(_table.items()):
        if _dt == torch.float16:
            _table.setdefault((torch.bfloat16, _d), _tiles)


def _tile_target(target) -> int:
    return 90 if shared_memory_limit(target) >= SHARED_MEMORY_LIMIT[90] else 80


# The pointer parameters of the kernels (the others are strides, sizes and scalars).
_POINTERS = ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ", "LSE", "DELTA", "LEN")
# Under the interpreter (tests, tiny T): 16 x 16 tiles keep the work small and run the
# multi-tile paths; float32 products in IEEE arithmetic.
_INTERPRETER_TILE = 16


def head_block(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(max(head_dim, 1)))


def unsupported_reason(dtype, head_dim: int, target) -> Optional[str]:
    """Why these kernels refuse (dtype, head size) on `target`, or None (module _TILES)."""
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} is not supported (float32, float16, bfloat16)"
    if target is None:  # the interpreter: no registers to spill
        return None
    table = _TILES[_tile_target(target)]
    if (dtype, head_block(head_dim)) not in table:
        largest = max(d for dt, d in table if dt == dtype)
        return (
            f"its attention kernels in {str(dtype).replace('torch.', '')} take head sizes "
            f"up to {largest} on this GPU (embed_dim // num_heads = {head_dim}: their tiles "
            f"would spill registers)"
        )
    return None


def flash_configs(head_dim: int, dtype, has_len: bool, drop: bool, target):
    """The KernelConfigs (launch_config.py) of one attention call of head size head_dim on
    `target`, by role: "fwd", "delta", "dkdv", "dq". Raises ValueError where
    unsupported_reason refuses."""
    reason = unsupported_reason(dtype, head_dim, target)
    if reason:
        raise ValueError(f"mhsa: {reason}")
    block_d = head_block(head_dim)
    if target is None:
        prec = "ieee" if dtype == torch.float32 else "tf32"
        tiles = {k: (_INTERPRETER_TILE, _INTERPRETER_TILE, 4, prec) for k in ("fwd", "dkdv", "dq")}
    else:
        prec = "tf32x3" if dtype == torch.float32 else "tf32"
        tiles = {
            role: (*t, prec) for role, t in _TILES[_tile_target(target)][(dtype, block_d)].items()
        }
    ptrs = dict(LSE=torch.float32, DELTA=torch.float32, LEN=torch.int64)
    floats = ("scale", "keep_scale")
    kernels = {"fwd": _forward_kernel, "dkdv": _dkdv_kernel, "dq": _dq_kernel}
    out = {}
    for role, kernel in kernels.items():
        block_m, block_n, warps, prec = tiles[role]
        params = constexpr_params(kernel)
        pointers = {n: ptrs.get(n, dtype) for n in params if n in _POINTERS}
        out[role] = kernel_config(
            kernel,
            dict(
                HAS_LEN=has_len,
                DROP=drop,
                PRECISION=prec,
                BLOCK_M=block_m,
                BLOCK_N=block_n,
                BLOCK_D=block_d,
            ),
            warps,
            1,
            dtype,
            pointers=pointers,
            floats=floats,
        )
    block_m = tiles["dq"][0]
    out["delta"] = kernel_config(
        _delta_kernel,
        dict(BLOCK_M=block_m, BLOCK_D=block_d),
        4,
        1,
        dtype,
        pointers=dict(DO=dtype, O=dtype, DELTA=torch.float32),
    )
    return out


def mhsa_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: Optional[torch.Tensor],
    scale: float,
    dropout_p: float = 0.0,
    seed: Optional[torch.Tensor] = None,
):
    """q, k, v (B, N, T, Dh) float32/float16/bfloat16 on one device; lengths (B,) int64 or None;
    dropout_p in [0, 1] with its seed, a one-element int64 tensor (module docstring). Returns
    out (B, N, T, Dh) contiguous in q's dtype and lse (B, N, T) float32."""
    q, k, v = _same_strides(q, k, v)
    B, N, T, Dh = q.shape
    out = torch.empty((B, N, T, Dh), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, N, T), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    drop_args = _dropout_args(dropout_p, seed)
    cfg = flash_configs(
        Dh, q.dtype, lengths is not None, drop_args[2] > 0, device_target(q.device)
    )["fwd"]
    grid = (B * N, triton.cdiv(T, cfg.meta()["BLOCK_M"]))
    cfg.launch(
        grid,
        q,
        k,
        v,
        out,
        lse,
        lengths if lengths is not None else q,
        *q.stride(),
        *out.stride(),
        N,
        T,
        Dh,
        float(scale),
        *drop_args,
    )
    return out, lse


def mhsa_backward(grad_out, q, k, v, lengths, scale, dropout_p, seed, out, lse):
    """Gradients (dq, dk, dv), each (B, N, T, Dh) contiguous in q's dtype."""
    q, k, v = _same_strides(q, k, v)
    B, N, T, Dh = q.shape
    grad_out = grad_out.to(q.dtype).contiguous()
    out = out.contiguous()
    lse = lse.contiguous()
    dq = torch.empty((B, N, T, Dh), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    if dq.numel() == 0:
        return dq, dk, dv
    drop_args = _dropout_args(dropout_p, seed)
    cfgs = flash_configs(
        Dh, q.dtype, lengths is not None, drop_args[2] > 0, device_target(q.device)
    )
    len_arg = lengths if lengths is not None else q
    delta = torch.empty((B, N, T), dtype=torch.float32, device=q.device)
    rows = (B * N, triton.cdiv(T, cfgs["delta"].meta()["BLOCK_M"]))
    cfgs["delta"].launch(rows, grad_out, out, delta, T, Dh)
    common = (*q.stride(), N, T, Dh, float(scale), *drop_args)
    cfgs["dkdv"].launch(
        (B * N, triton.cdiv(T, cfgs["dkdv"].meta()["BLOCK_N"])),
        q,
        k,
        v,
        grad_out,
        lse,
        delta,
        dk,
        dv,
        len_arg,
        *common,
    )
    cfgs["dq"].launch(
        (B * N, triton.cdiv(T, cfgs["dq"].meta()["BLOCK_M"])),
        q,
        k,
        v,
        grad_out,
        lse,
        delta,
        dq,
        len_arg,
        *common,
    )
    return dq, dk, dv
