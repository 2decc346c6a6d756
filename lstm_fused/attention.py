"""Attention modules over LSTM outputs (docs/contract.md, section 2): AttentionPooling,
ChannelAttention and AttentiveLSTM (an LSTM whose last layer is pooled by additive attention as it is computed).

Padded batches: `lengths` (B,) marks steps t >= lengths[b] as padding; padding gets exactly
zero weight and is never read, a length-0 row gives zero weights and a zero context.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import functional
from ._checks import check_tensor
from .lstm import LSTM
from .ops.library import one_thread_if_busy
from .ops.registry import check_name


def _check_positive_int(where, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be at least {minimum}, got {value}")


class AttentionPooling(nn.Module):
    """Additive (Bahdanau) attention pooling.

    e_t = v . tanh(W_h h_t + W_q q + b); alpha = masked softmax of e over time;
    c = sum_t alpha_t h_t. Parameters: proj = Linear(D, A) (W_h, b), query_proj =
    Linear(Q, A, bias=False) when query_size > 0, score = Linear(A, 1, bias=False) (v).
    forward(x (T, B, D) or (B, T, D) with batch_first, lengths (B,) = None, query (B, Q) = None)
    -> (c (B, D), alpha (B, T)). After the W_h GEMM one fused kernel does the rest.
    """

    def __init__(
        self,
        input_size: int,
        attention_size: int,
        query_size: int = 0,
        *,
        batch_first: bool = False,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        where = "AttentionPooling"
        _check_positive_int(where, "input_size", input_size)
        _check_positive_int(where, "attention_size", attention_size)
        _check_positive_int(where, "query_size", query_size, minimum=0)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.attention_size = attention_size
        self.query_size = query_size
        self.batch_first = batch_first
        self.backend = check_name(backend)
        self.proj = nn.Linear(input_size, attention_size, **factory)
        self.query_proj = (
            nn.Linear(query_size, attention_size, bias=False, **factory) if query_size > 0 else None
        )
        self.score = nn.Linear(attention_size, 1, bias=False, **factory)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.attention_size}"
        if self.query_size:
            s += f", query_size={self.query_size}"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    def check_query(self, query):
        """(query (B, Q), W_q (A, Q)) checked against the module, or (None, None)."""
        where = "AttentionPooling"
        if self.query_size > 0 and query is None:
            raise ValueError(f"{where}: query is required (query_size={self.query_size}), got None")
        if self.query_size == 0 and query is not None:
            raise ValueError(
                f"{where}: query was given but the module has query_size=0; "
                f"build it with query_size=Q to use a query"
            )
        if query is None:
            return None, None
        check_tensor(query, "query", where=where)
        if query.dim() != 2 or query.shape[1] != self.query_size:
            raise ValueError(
                f"{where}: query has shape {tuple(query.shape)}, expected (B, {self.query_size})"
            )
        return query, self.query_proj.weight

    def forward(
        self,
        x: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        query: Optional[torch.Tensor] = None,
        *,
        backend: Optional[str] = None,
        return_lse: bool = False,
    ):
        query, query_weight = self.check_query(query)
        return functional.attention_pooling(
            x,
            self.proj.weight,
            self.proj.bias,
            self.score.weight,
            lengths,
            query=query,
            query_weight=query_weight,
            batch_first=self.batch_first,
            backend=self.backend if backend is None else backend,
            return_lse=return_lse,
        )


def eca_kernel_size(channels: int) -> int:
    """The ECA rule: t = int(|(log2(C) + 1) / 2|), k = t if t is odd else t + 1."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 == 1 else t + 1


class ChannelAttention(nn.Module):
    """Channel attention over a padded sequence (ECA or squeeze-and-excitation gates).

    y = masked mean over t of x (B, C); ECA: w = sigmoid(conv1d_k(y)) across channels
    (conv.weight (1, 1, k), no bias, padding k // 2); SE: w = sigmoid(fc2(relu(fc1(y))));
    output x * w broadcast over time, padded steps 0.
    forward(x (T, B, C) or (B, T, C) with batch_first, lengths (B,) = None) -> y like x.
    """

    def __init__(
        self,
        channels: int,
        mode: str = "eca",
        kernel_size: Optional[int] = None,
        reduction: int = 16,
        *,
        batch_first: bool = False,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        where = "ChannelAttention"
        _check_positive_int(where, "channels", channels)
        if mode not in ("eca", "se"):
            raise ValueError(f"{where}: mode must be 'eca' or 'se', got {mode!r}")
        factory = {"device": device, "dtype": dtype}
        self.channels, self.mode = channels, mode
        self.batch_first = batch_first
        self.backend = check_name(backend)
        if mode == "eca":
            if kernel_size is None:
                kernel_size = eca_kernel_size(channels)
            _check_positive_int(where, "kernel_size", kernel_size)
            if kernel_size % 2 == 0:
                raise ValueError(f"{where}: kernel_size must be odd, got {kernel_size}")
            self.kernel_size = kernel_size
            self.conv = nn.Conv1d(
                1, 1, kernel_size, padding=kernel_size // 2, bias=False, **factory
            )
        else:
            _check_positive_int(where, "reduction", reduction)
            hidden = max(1, channels // reduction)
            self.reduction = reduction
            self.fc1 = nn.Linear(channels, hidden, **factory)
            self.fc2 = nn.Linear(hidden, channels, **factory)

    def extra_repr(self) -> str:
        s = f"{self.channels}, mode={self.mode!r}"
        s += (
            f", kernel_size={self.kernel_size}"
            if self.mode == "eca"
            else f", reduction={self.reduction}"
        )
        return s + (", batch_first=True" if self.batch_first else "")

    def gate(self, mean: torch.Tensor) -> torch.Tensor:
        """Channel weights (B, C) from the masked mean (B, C)."""
        if self.mode == "eca":
            return torch.sigmoid(self.conv(mean.unsqueeze(1)).squeeze(1))
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(mean))))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        where = "ChannelAttention"
        check_tensor(x, "x", where=where)
        if x.dim() == 3 and x.shape[2] != self.channels:
            raise ValueError(
                f"{where}: x has {x.shape[2]} channels in its last dimension, "
                f"expected channels={self.channels}"
            )
        return functional.channel_attention(
            x, lengths, gate=self.gate, batch_first=self.batch_first, backend=self.backend
        )


class AttentiveLSTM(nn.Module):
    """An LSTM whose last layer is pooled by additive attention as it runs.

    Submodules: `lstm` (lstm_fused.LSTM; nn.LSTM's parameter names, so `lstm` loads an
    nn.LSTM state_dict) and `attention` (AttentionPooling over the last layer's outputs,
    input size D * R). forward(input (T, B, I) or (B, T, I) with batch_first, or a
    PackedSequence; lengths (B,) = None; hx = None; query (B, Q) = None)
    -> (context (B, D * R), alpha (B, T), (h_n, c_n)).

    Inference (no gradient wanted), one direction: the last layer and the pooling run as one
    kernel (the backend's attentive_lstm_inference): each step's output is scored and folded
    into a running max, sum and context (online softmax) as soon as it is computed, so the
    (T, B, H) output of the last layer is never written. The CPU kernel keeps a ring of
    chunk_size steps of output and pools them with one GEMM per chunk; the Triton kernel pools
    every step on chip (layers small enough for its sequence kernel; larger ones, and the CUDA
    backend, run the layer, then the pooling). Training, or bidirectional (the backward
    direction needs the whole sequence first): the last layer's output is written, as the
    backward needs it anyway, then pooled by the fused pooling kernel; the backward is the
    pooling kernel's, then the layer's.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        attention_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        query_size: int = 0,
        device=None,
        dtype=None,
        *,
        peephole: bool = False,
        chunk_size: int = 16,
        backend: str = "auto",
    ):
        super().__init__()
        _check_positive_int("AttentiveLSTM", "chunk_size", chunk_size)
        self.lstm = LSTM(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            peephole=peephole,
            backend=backend,
        )
        D = 2 if bidirectional else 1
        R = proj_size if proj_size > 0 else hidden_size
        self.attention = AttentionPooling(
            D * R,
            attention_size,
            query_size,
            batch_first=True,
            backend=backend,
            device=device,
            dtype=dtype,
        )
        self.batch_first = batch_first
        self.chunk_size = chunk_size
        self.backend = check_name(backend)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}"

    @one_thread_if_busy
    def forward(
        self,
        input,
        lengths: Optional[torch.Tensor] = None,
        hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        query: Optional[torch.Tensor] = None,
    ):
        where = "AttentiveLSTM"
        lstm = self.lstm
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(
                    f"{where}: lengths must be None with a PackedSequence input "
                    f"(the lengths come from the PackedSequence)"
                )
            x, lengths = pad_packed_sequence(input)  # (T, B, I)
        else:
            check_tensor(input, "input", where=where)
            if input.dim() != 3:
                raise ValueError(
                    f"{where}: input must be 3-D "
                    f"({'B, T' if self.batch_first else 'T, B'}, I), got shape "
                    f"{tuple(input.shape)}"
                )
            x = input.transpose(0, 1) if self.batch_first else input
        weight = lstm.weight_ih_l0
        if x.shape[-1] != lstm.input_size:
            raise ValueError(
                f"{where}: input has {x.shape[-1]} features in its last "
                f"dimension, expected input_size={lstm.input_size}"
            )
        if x.device != weight.device:
            raise RuntimeError(
                f"{where}: input is on {x.device}, expected {weight.device} "
                f"(the device of the module's parameters)"
            )
        if x.dtype != weight.dtype:
            raise TypeError(
                f"{where}: input has dtype {x.dtype}, expected {weight.dtype} "
                f"(the dtype of the module's parameters)"
            )
        # lengths: checked (the one reader, _checks.check_lengths) by functional.attentive_lstm
        query, query_weight = self.attention.check_query(query)
        h0, c0 = lstm.initial_state(hx, x)
        between_layers = None
        if lstm.dropout > 0 and self.training:

            def between_layers(y):
                return torch.nn.functional.dropout(y, p=lstm.dropout, training=True)

        pool = self.attention
        context, alpha, h_n, c_n = functional.attentive_lstm(
            x,
            h0,
            c0,
            [lstm.layer_weights(k) for k in range(lstm.num_layers)],
            lengths,
            pool.proj.weight,
            pool.proj.bias,
            pool.score.weight,
            query=query,
            query_weight=query_weight,
            between_layers=between_layers,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        return context, alpha, (h_n, c_n)
