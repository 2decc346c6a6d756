"""lstm_fused.MultiheadSelfAttention: multi-head self-attention over (Bi)LSTM outputs.

The function of nn.MultiheadAttention(E, N)(x, x, x, key_padding_mask=t >= lengths[b]), with
the same parameter names (in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias), so a
state_dict loads both ways. The two projections are GEMMs (F.linear); the attention core
(scale q k^T, key padding, softmax, times v) is one fused flash-style kernel that never writes
the T x T matrix (lstm_fused/ops/mhsa.py).

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
from torch import nn

from ._checks import ShapeError
from .functional.mhsa import (  # noqa: F401  (draw_seed, self_attention_core: re-exported)
    draw_seed,
    multihead_self_attention,
    self_attention_core,
)
from .ops.registry import check_name

_WHERE = "MultiheadSelfAttention"


class MultiheadSelfAttention(nn.Module):
    """nn.MultiheadAttention restricted to self-attention with key padding from lengths.

    Parameters (names, shapes and initialisation of nn.MultiheadAttention): in_proj_weight
    (3E, E), in_proj_bias (3E,) (None without bias), out_proj = Linear(E, E).
    forward(x, lengths=None, need_weights=False) -> (out, weights | None): x (T, B, E)
    ((B, T, E) with batch_first, (T, E) unbatched); out has x's shape; weights (B, T, T)
    averaged over heads."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        *,
        batch_first: bool = False,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{_WHERE}: {name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{_WHERE}: {name} must be greater than zero, got {value}")
        if embed_dim % num_heads != 0:  # nn.MultiheadAttention asserts it
            raise ShapeError(
                f"{_WHERE}: embed_dim ({embed_dim}) must be divisible by "
                f"num_heads, got num_heads = {num_heads}"
            )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout <= 1
        ):
            raise ValueError(f"{_WHERE}: dropout must be a number in [0, 1], got {dropout!r}")
        self.backend = check_name(backend)
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

    def forward(
        self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None, need_weights: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not isinstance(need_weights, bool):
            raise TypeError(
                f"{_WHERE}: need_weights must be a bool, got {type(need_weights).__name__}"
            )
        return multihead_self_attention(
            x,
            lengths,
            self.in_proj_weight,
            self.in_proj_bias,
            self.out_proj.weight,
            self.out_proj.bias,
            self.num_heads,
            batch_first=self.batch_first,
            need_weights=need_weights,
            dropout_p=self.dropout,
            training=self.training,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"dropout={self.dropout}, bias={self.in_proj_bias is not None}, "
            f"batch_first={self.batch_first}, backend={self.backend!r}"
        )
