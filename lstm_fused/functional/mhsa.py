"""Multi-head self-attention with key padding through the chosen backend (the function of
lstm_fused.MultiheadSelfAttention): two GEMMs around one fused attention core that never writes
the T x T matrix (lstm_fused/ops/mhsa.py). Dimension letters: B batch, T time steps,
E embed dim, N heads, Dh = E // N.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .. import reference_mhsa
from .._checks import ShapeError, check_device, check_dtype, check_lengths, check_tensor
from ..ops import registry

OP = "mhsa"


def _check_x(x, embed_dim: int, weight: torch.Tensor, where: str) -> None:
    """nn.MultiheadAttention's exception types: its shape asserts (AssertionError; here a
    ShapeError, also a ValueError) and the RuntimeError of its projection for a dtype."""
    check_tensor(x, "x", where=where)
    if x.dim() not in (2, 3):
        raise ShapeError(
            f"{where}: x must be 3-D (T, B, E) or (B, T, E) (or 2-D (T, E) "
            f"unbatched), got {x.dim()}-D with shape {tuple(x.shape)}"
        )
    if x.shape[-1] != embed_dim:
        raise ShapeError(
            f"{where}: x has feature size {x.shape[-1]} (shape {tuple(x.shape)}), "
            f"expected embed_dim = {embed_dim}"
        )
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{where}: x must be a floating point tensor, got dtype {x.dtype}")
    check_dtype(x, "x", weight.dtype, where=where, exc=RuntimeError)
    check_device(x, "x", weight.device, where=where)


def _check_heads(q, k, v, where: str) -> None:
    """q, k, v (B, N, T, Dh) of one shape, dtype and device: nn's exception types (a shape
    error is a ShapeError, also the AssertionError of nn.MultiheadAttention's asserts; a dtype
    a RuntimeError, as scaled_dot_product_attention raises)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, where=where)
    if q.dim() != 4:
        raise ShapeError(f"{where}: q must be 4-D (B, N, T, Dh), got shape {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ShapeError(
                f"{where}: {name} has shape {tuple(t.shape)}, expected q's shape {tuple(q.shape)}"
            )
        if t.dtype != q.dtype:
            raise RuntimeError(f"{where}: {name} has dtype {t.dtype}, expected q's dtype {q.dtype}")
        if t.device != q.device:
            raise RuntimeError(f"{where}: {name} is on {t.device}, expected q's device {q.device}")


def self_attention_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: Optional[torch.Tensor],
    scale: float,
    *,
    dropout_p: float = 0.0,
    training: bool = False,
    seed: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The fused attention core through the chosen backend; differentiable.

    q, k, v (B, N, T, Dh); lengths (B,) integers in [0, T] or None. Returns (B, N, T, Dh).
    In training with dropout_p > 0 the attention weights are dropped out inside the kernel,
    with a mask drawn from `seed`, a one-element int64 tensor (default: a fresh one from
    torch's default generator, so torch.manual_seed makes it reproducible); every backend
    drops the same weights for the same seed (reference_mhsa.dropout_keep_mask)."""
    where = "self_attention_core"
    _check_heads(q, k, v, where)
    if lengths is not None:
        lengths = check_lengths(lengths, q.shape[0], q.shape[2], where=where, device=q.device)
    return _core(q, k, v, lengths, scale, dropout_p, training, seed, backend)


def _core(q, k, v, lengths, scale, dropout_p, training, seed, backend):
    """self_attention_core on checked arguments."""
    dropout = training and dropout_p > 0.0
    impl = registry.for_inputs(
        registry.resolve(
            backend,
            OP,
            q.device,
            q.dtype,
            dropout=dropout,
            lengths=lengths is not None,
            head_dim=q.shape[-1],
        ),
        (q, k, v),
    )
    if not dropout:
        return impl.kernels.attention(q, k, v, lengths, scale)
    # An int or a tensor of any device: the kernels read a one-element int64 CPU tensor.
    seed = (
        draw_seed()
        if seed is None
        else torch.as_tensor(seed, dtype=torch.int64, device="cpu").reshape(())
    )
    return impl.kernels.attention(q, k, v, lengths, scale, float(dropout_p), seed)


def draw_seed() -> torch.Tensor:
    """A 64-bit dropout seed from torch's default CPU generator, as a 0-dim int64 CPU tensor
    (not a Python int: torch.compile traces the draw instead of baking one value in). The
    kernels read it on the host when they launch, so a CUDA graph captured by hand replays the
    captured mask (torch.compile's cudagraphs leave graphs with CPU tensors alone)."""
    return torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)


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
    backend: str = "auto",
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Multi-head self-attention with key padding from lengths (functional form of the module).

    x (T, B, E), or (B, T, E) with batch_first, or (T, E) unbatched; lengths (B,) integers in
    [0, T] or None; in_proj_weight (3E, E); in_proj_bias (3E,); out_proj_weight (E, E);
    out_proj_bias (E,). Returns (out of x's shape, weights (B, T, T) averaged over heads —
    (T, T) unbatched — or None)."""
    where = "multihead_self_attention"
    E = in_proj_weight.shape[1]
    _check_x(x, E, in_proj_weight, where)
    if not isinstance(num_heads, int) or num_heads <= 0 or E % num_heads != 0:
        raise ValueError(
            f"{where}: num_heads must be a positive divisor of embed_dim = {E}, got {num_heads!r}"
        )
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif batch_first:
        x = x.transpose(0, 1)
    T, B, _ = x.shape
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, where=where, device=x.device)

    qkv = F.linear(x, in_proj_weight, in_proj_bias)  # (T, B, 3E)
    q, k, v = (reference_mhsa.split_heads(p, num_heads) for p in qkv.chunk(3, dim=-1))
    scale = (E // num_heads) ** -0.5
    dropout = training and dropout_p > 0.0
    seed = draw_seed() if dropout else None
    ctx = _core(q, k, v, lengths, scale, dropout_p, training, seed, backend)
    weights = None
    if need_weights:  # after dropout in training, like nn: the weights that multiplied v
        weights = reference_mhsa.attention_weights(q, k, lengths, scale)
        if dropout:
            weights = reference_mhsa.drop_weights(weights, seed, dropout_p)
    out = F.linear(reference_mhsa.merge_heads(ctx), out_proj_weight, out_proj_bias)
    if weights is not None:
        weights = weights.mean(dim=1)
    if unbatched:
        return out.squeeze(1), (weights.squeeze(0) if weights is not None else None)
    if batch_first:
        out = out.transpose(0, 1)
    return out, weights
