"""Plain PyTorch ground truth of multi-head self-attention with key padding (docs/contract.md,
section 2).

Works in any dtype (float64 included) on any device; every fused kernel is checked against it.
Dimension letters: B batch, T time steps, E embed dim, N heads, Dh = E // N head size.

Semantics: the function of nn.MultiheadAttention(E, N)(x, x, x, key_padding_mask=padding),
padding[b, t] = t >= lengths[b]. Padded keys get exactly zero weight. Padded *queries* are
computed like nn does (they attend to the valid keys). A batch row with length 0 has no key at
all: nn returns NaN there; here its attention weights are all zero and its attention context is
zero, so its output is out_proj.bias (zero without bias), never NaN.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def key_padding(
    lengths: Optional[torch.Tensor], batch: int, steps: int, device
) -> Optional[torch.Tensor]:
    """Boolean (B, T), True on padding (t >= lengths[b]); None when lengths is None."""
    if lengths is None:
        return None
    t = torch.arange(steps, device=device)
    return t[None, :] >= lengths.to(device)[:, None]


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, lengths: Optional[torch.Tensor], scale: float
) -> torch.Tensor:
    """softmax(scale * q k^T) over the valid keys. q, k (B, N, T, Dh) -> (B, N, T, T).

    Padded keys get exact zeros; a batch row without valid key (length 0) gets all zeros."""
    B, _, T, _ = q.shape
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    pad = key_padding(lengths, B, T, q.device)
    if pad is None:
        return torch.softmax(scores, dim=-1)
    pad = pad[:, None, None, :]
    # Fill padding with a finite very negative value (not -inf) so an all-padding row gives a
    # uniform softmax instead of NaN; the `where` then zeroes the padding exactly.
    scores = scores.masked_fill(pad, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    return torch.where(pad, torch.zeros((), dtype=weights.dtype, device=weights.device), weights)


_M32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser on uint32 values held in int64 (csrc/attention_dropout.h)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32  # the int64 product wraps; its low 32 bits are exact
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def dropout_threshold(dropout_p: float) -> int:
    """round(p * 2^24) as C++'s llround does for p >= 0: a weight is dropped when its 24 random
    bits fall below it (csrc/attention_dropout.h)."""
    return math.floor(dropout_p * 16777216.0 + 0.5)


def keep_scale(dropout_p: float) -> float:
    """The factor of a kept weight: one over the exact keep rate (csrc/attention_dropout.h)."""
    threshold = dropout_threshold(dropout_p)
    return 16777216.0 / (16777216.0 - threshold) if threshold < (1 << 24) else 0.0


def dropout_keep_mask(seed, B: int, N: int, T: int, dropout_p: float, device=None) -> torch.Tensor:
    """Boolean (B, N, T, T): which attention weights the fused kernels keep for `seed` (an int
    or a one-element int64 tensor).

    The counter-based mask of csrc/attention_dropout.h (the CPU, CUDA and Triton kernels
    compute the same function): weight (b, n, i, j) is kept iff
    mix32(mix32(mix32(row ^ seed_lo) ^ seed_hi) ^ (j * 0x9E3779B9)) >> 8 >= round(p * 2^24),
    row = (b * N + n) * T + i modulo 2^32."""
    threshold = dropout_threshold(dropout_p)
    if isinstance(seed, torch.Tensor):  # tensor ops only: traceable by torch.compile
        seed = seed.reshape(()).to(device=device, dtype=torch.int64)
    seed_lo, seed_hi = seed & _M32, (seed >> 32) & _M32
    rows = torch.arange(B * N * T, dtype=torch.int64, device=device) & _M32
    row_key = _mix32(_mix32(rows ^ seed_lo) ^ seed_hi)
    cols = (torch.arange(T, dtype=torch.int64, device=device) * 0x9E3779B9) & _M32
    u = _mix32(row_key[:, None] ^ cols[None, :]) >> 8
    return (u >= threshold).reshape(B, N, T, T)


def drop_weights(weights: torch.Tensor, seed, dropout_p: float) -> torch.Tensor:
    """Attention weights (B, N, T, T) after the kernels' dropout for `seed`: kept ones scaled
    by keep_scale(p) (1 / (1 - p) up to p's rounding to 2^-24), the others 0."""
    B, N, T, _ = weights.shape
    keep = dropout_keep_mask(seed, B, N, T, dropout_p, weights.device)
    return torch.where(
        keep,
        weights * keep_scale(dropout_p),
        torch.zeros((), dtype=weights.dtype, device=weights.device),
    )


def attention_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: Optional[torch.Tensor],
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
    seed=None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused kernels' function: (softmax(scale q k^T) masked) v.

    q, k, v (B, N, T, Dh); lengths (B,) int or None. Returns (out (B, N, T, Dh), weights
    (B, N, T, T) after dropout). Dropout (training only) drops attention weights: with a seed,
    exactly the ones the fused kernels drop (dropout_keep_mask), without one by F.dropout."""
    weights = attention_weights(q, k, lengths, scale)
    if training and dropout_p > 0.0:
        if seed is None:
            weights = F.dropout(weights, p=dropout_p, training=True)
        else:
            weights = drop_weights(weights, seed, dropout_p)
    pad = key_padding(lengths, q.shape[0], q.shape[2], q.device)
    if pad is not None:  # 0 * NaN is NaN: padded values must not enter the product at all
        v = v.masked_fill(pad[:, None, :, None], 0)
    return torch.matmul(weights, v), weights


def split_heads(x_proj: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(T, B, E) -> (B, N, T, Dh) (a view)."""
    T, B, E = x_proj.shape
    return x_proj.reshape(T, B, num_heads, E // num_heads).permute(1, 2, 0, 3)


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(B, N, T, Dh) -> (T, B, E)."""
    B, N, T, Dh = out.shape
    return out.permute(2, 0, 1, 3).reshape(T, B, N * Dh)


def multihead_self_attention(
    x: torch.Tensor,
    lengths: Optional[torch.Tensor],
    in_proj_weight: torch.Tensor,
    in_proj_bias: Optional[torch.Tensor],
    out_proj_weight: torch.Tensor,
    out_proj_bias: Optional[torch.Tensor],
    num_heads: int,
    *,
    batch_first: bool = False,
    need_weights: bool = False,
    dropout_p: float = 0.0,
    training: bool = False,
):
    """The whole module in plain PyTorch.

    x (T, B, E) (or (B, T, E) with batch_first); in_proj_weight (3E, E); in_proj_bias (3E,);
    out_proj_weight (E, E); out_proj_bias (E,). Returns (out of x's layout, weights (B, T, T)
    averaged over heads, or None)."""
    if batch_first:
        x = x.transpose(0, 1)
    T, B, E = x.shape
    qkv = F.linear(x, in_proj_weight, in_proj_bias)  # (T, B, 3E)
    q, k, v = (split_heads(part, num_heads) for part in qkv.chunk(3, dim=-1))
    scale = (E // num_heads) ** -0.5
    ctx, weights = attention_core(q, k, v, lengths, scale, dropout_p, training)
    out = F.linear(merge_heads(ctx), out_proj_weight, out_proj_bias)
    if batch_first:
        out = out.transpose(0, 1)
    return out, (weights.mean(dim=1) if need_weights else None)
