"""lstm_fused.MultiheadSelfAttention: multi-head self-attention over (Bi)LSTM outputs (SPEC §2).

The function of nn.MultiheadAttention(E, N)(x, x, x, key_padding_mask=t >= lengths[b]), with
the same parameter names (in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias), so a
state_dict loads both ways. The two projections are GEMMs (F.linear); the attention core
(scale q k^T, key padding, softmax, times v) is one fused flash-style kernel that never writes
the T x T matrix (lstm_fused/backends/mhsa.py).

Differences from nn, by design: a batch row with length 0 (no valid key) gives all-zero
attention weights and a zero attention context, so its output is out_proj.bias at every step
(zero without bias) where nn gives NaN. need_weights=True returns the head-averaged weights
(B, T, T) like nn (after dropout in training, like nn); they are computed apart from the fused
kernel, in plain PyTorch, since the weights are T x T by definition. Attention dropout runs
inside the fused kernels (CPU, CUDA, Triton) with a counter-based mask drawn from torch's
default generator: the same weights as nn's dropout in distribution, not the same random
draws.
Dimension letters: B batch, T time steps, E embed dim, N heads, Dh = E // N.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import backends, reference_mhsa
from ._checks import check_device, check_dtype, check_lengths, check_tensor
from .backends import mhsa as _mhsa_backends  # noqa: F401  (registers "self_attention")
from .backends.base import transform_active

OP = _mhsa_backends.OP
_WHERE = "MultiheadSelfAttention"


def _check_x(x, embed_dim: int, weight: torch.Tensor, where: str) -> None:
    check_tensor(x, "x", where=where)
    if x.dim() not in (2, 3):
        raise ValueError(f"{where}: x must be 3-D (T, B, E) or (B, T, E) (or 2-D (T, E) "
                         f"unbatched), got {x.dim()}-D with shape {tuple(x.shape)}")
    if x.shape[-1] != embed_dim:
        raise ValueError(f"{where}: x has feature size {x.shape[-1]} (shape {tuple(x.shape)}), "
                         f"expected embed_dim = {embed_dim}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{where}: x must be a floating point tensor, got dtype {x.dtype}")
    check_dtype(x, "x", weight.dtype, where=where)
    check_device(x, "x", weight.device, where=where)


def self_attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        lengths: Optional[torch.Tensor], scale: float, *,
                        dropout_p: float = 0.0, training: bool = False,
                        seed: Optional[torch.Tensor] = None,
                        backend: str = "auto") -> torch.Tensor:
    """The fused attention core through the chosen backend; differentiable.

    q, k, v (B, N, T, Dh); lengths (B,) int64 on q's device or None. Returns (B, N, T, Dh).
    In training with dropout_p > 0 the attention weights are dropped out inside the kernel,
    with a mask drawn from `seed`, a one-element int64 tensor (default: a fresh one from
    torch's default generator, so torch.manual_seed makes it reproducible); every backend
    drops the same weights for the same seed (reference_mhsa.dropout_keep_mask)."""
    dropout = training and dropout_p > 0.0
    impl = backends.resolve(backend, OP, q.device, q.dtype, dropout=dropout,
                            lengths=lengths is not None, head_dim=q.shape[-1])
    if transform_active((q, k, v)):  # forward-mode AD, torch.func: plain PyTorch (base.py)
        impl = backends.implementations(OP)["reference"]
    if not dropout:
        return impl.attention(q, k, v, lengths, scale)
    # An int or a tensor of any device: the kernels read a one-element int64 CPU tensor.
    seed = draw_seed() if seed is None else torch.as_tensor(seed, dtype=torch.int64,
                                                              device="cpu").reshape(())
    return impl.attention(q, k, v, lengths, scale, float(dropout_p), seed)


def draw_seed() -> torch.Tensor:
    """A 64-bit dropout seed from torch's default CPU generator, as a 0-dim int64 CPU tensor
    (not a Python int: torch.compile traces the draw instead of baking one value in). The
    kernels read it on the host when they launch, so a CUDA graph captured by hand replays the
    captured mask (torch.compile's cudagraphs leave graphs with CPU tensors alone)."""
    return torch.randint(-2**63, 2**63 - 1, (), dtype=torch.int64)


def multihead_self_attention(x: torch.Tensor, lengths: Optional[torch.Tensor],
                             in_proj_weight: torch.Tensor, in_proj_bias: Optional[torch.Tensor],
                             out_proj_weight: torch.Tensor,
                             out_proj_bias: Optional[torch.Tensor], num_heads: int, *,
                             batch_first: bool = False, need_weights: bool = False,
                             dropout_p: float = 0.0, training: bool = False,
                             backend: str = "auto"
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
        raise ValueError(f"{where}: num_heads must be a positive divisor of embed_dim = {E}, "
                         f"got {num_heads!r}")
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif batch_first:
        x = x.transpose(0, 1)
    T, B, _ = x.shape
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, where=where, device=x.device)

    qkv = F.linear(x, in_proj_weight, in_proj_bias)                    # (T, B, 3E)
    q, k, v = (reference_mhsa.split_heads(p, num_heads) for p in qkv.chunk(3, dim=-1))
    scale = (E // num_heads) ** -0.5
    dropout = training and dropout_p > 0.0
    seed = draw_seed() if dropout else None
    ctx = self_attention_core(q, k, v, lengths, scale, dropout_p=dropout_p, training=training,
                              seed=seed, backend=backend)
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


class MultiheadSelfAttention(nn.Module):
    """nn.MultiheadAttention restricted to self-attention with key padding from lengths.

    Parameters (names, shapes and initialisation of nn.MultiheadAttention): in_proj_weight
    (3E, E), in_proj_bias (3E,) (None without bias), out_proj = Linear(E, E).
    forward(x, lengths=None, need_weights=False) -> (out, weights | None): x (T, B, E)
    ((B, T, E) with batch_first, (T, E) unbatched); out has x's shape; weights (B, T, T)
    averaged over heads."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 *, batch_first: bool = False, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{_WHERE}: {name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{_WHERE}: {name} must be greater than zero, got {value}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"{_WHERE}: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads, got num_heads = {num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{_WHERE}: dropout must be a number in [0, 1], got {dropout!r}")
        self.backend = backends.check_name(backend)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        factory = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.MultiheadAttention's initialisation: Xavier-uniform in_proj_weight, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                need_weights: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not isinstance(need_weights, bool):
            raise TypeError(f"{_WHERE}: need_weights must be a bool, got "
                            f"{type(need_weights).__name__}")
        return multihead_self_attention(
            x, lengths, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight,
            self.out_proj.bias, self.num_heads, batch_first=self.batch_first,
            need_weights=need_weights, dropout_p=self.dropout, training=self.training,
            backend=self.backend)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, bias={self.in_proj_bias is not None}, "
                f"batch_first={self.batch_first}, backend={self.backend!r}")
