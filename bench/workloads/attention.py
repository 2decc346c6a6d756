"""Attention workloads over padded LSTM outputs (docs/contract.md, section 2): masked softmax,
additive attention pooling, multi-head self-attention.

Each has an unfused plain-PyTorch provider written from the contract's math (run in float64 it
is the reference), the lstm_fused op on every backend (found at run time: absent ops are reported),
and for self-attention nn.MultiheadAttention and F.scaled_dot_product_attention.
Lengths are in [1, T] with one full row; inputs are time-major (T, B, D) like nn's default.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    Absent,
    Impl,
    Provider,
    UnfusedWorkload,
    Workload,
    accepts,
    attention_backends,
    backend_providers,
    itemsize,
    lengths_mask,
    load_module,
    lstm_fused_attr,
    module_state,
    padded_batch,
    random_lengths,
)

SOFTMAX_SCALE = 0.125


def unfused_masked_softmax(scores, lengths, scale):
    """softmax(scale * s) over the last axis, positions t >= lengths[b] excluded and exactly 0.
    scores (B, ..., T), lengths (B,)."""
    B, T = scores.shape[0], scores.shape[-1]
    valid = lengths_mask(lengths, T).reshape((B,) + (1,) * (scores.dim() - 2) + (T,))
    s = (scores * scale).masked_fill(~valid, float("-inf"))
    return torch.softmax(s, dim=-1).masked_fill(~valid, 0.0)


# ---- masked softmax ----------------------------------------------------------------------


class MaskedSoftmaxWorkload(UnfusedWorkload):
    """scores (B, T, T) (self-attention scores of a padded batch), lengths (B,)."""

    family = "masked_softmax"
    diff_inputs = ("scores",)

    def make_inputs(self, case, gen):
        d = case.dims
        B, T = d["B"], d["T"]
        return {
            "scores": torch.randn(B, T, T, generator=gen, dtype=torch.float64) * 4,
            "lengths": random_lengths(B, T, gen),
        }

    def unfused(self, case, state, dtype, device):
        return Impl(
            lambda inp: (unfused_masked_softmax(inp["scores"], inp["lengths"], SOFTMAX_SCALE),)
        )

    def providers(self, case, device, options) -> List[Provider]:
        out = [Provider("torch.unfused", self.unfused)]

        def fused(case, state, dtype, device, backend=None):
            fn = lstm_fused_attr("functional.masked_softmax")
            kw = {"backend": backend} if backend else {}
            return Impl(lambda inp: (fn(inp["scores"], inp["lengths"], scale=SOFTMAX_SCALE, **kw),))

        try:
            per_backend = accepts(lstm_fused_attr("functional.masked_softmax"), "backend")
        except Absent:  # not in this build: the provider below reports it as absent
            per_backend = False
        if per_backend:
            out += backend_providers(attention_backends(device), fused)
        else:  # no backend= argument (or absent): one provider, "auto"
            out.append(Provider("lstm_fused:auto", fused))
        return out

    def bytes_moved(self, case):
        d = case.dims
        return 2 * d["B"] * d["T"] * d["T"] * itemsize(case.dtype)


# ---- additive attention pooling -----------------------------------------------------------


class UnfusedAttentionPooling(nn.Module):
    """The contract's additive pooling (docs/contract.md, section 2) in plain PyTorch, AttentionPooling's parameter names.
    x (T, B, D) -> (c (B, D), alpha (B, T))."""

    def __init__(self, input_size, attention_size, batch_first=False):
        super().__init__()
        self.batch_first = batch_first
        self.proj = nn.Linear(input_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, x, lengths=None):
        xb = x if self.batch_first else x.transpose(0, 1)  # (B, T, D)
        e = self.score(torch.tanh(self.proj(xb))).squeeze(-1)  # (B, T)
        if lengths is None:
            alpha = torch.softmax(e, dim=-1)
        else:
            alpha = unfused_masked_softmax(e, lengths, 1.0)
        return torch.bmm(alpha.unsqueeze(1), xb).squeeze(1), alpha


class AttentionPoolingWorkload(UnfusedWorkload):
    family = "attention_pooling"
    diff_inputs = ("x",)

    def make_state(self, case, gen):
        d = case.dims
        return module_state(gen, lambda: UnfusedAttentionPooling(d["D"], d["A"]).double())

    def make_inputs(self, case, gen):
        return padded_batch(case, "D", gen)

    @staticmethod
    def _wrap(module):
        return Impl(lambda inp: tuple(module(inp["x"], inp["lengths"])), module)

    def unfused(self, case, state, dtype, device):
        d = case.dims
        return self._wrap(
            load_module(UnfusedAttentionPooling(d["D"], d["A"]), state, dtype, device)
        )

    def providers(self, case, device, options):
        d = case.dims

        def fused(case, state, dtype, device, backend):
            cls = lstm_fused_attr("AttentionPooling")
            return self._wrap(
                load_module(cls(d["D"], d["A"], backend=backend), state, dtype, device)
            )

        return [Provider("torch.unfused", self.unfused)] + backend_providers(
            attention_backends(device), fused
        )

    def flops(self, case):
        d = case.dims
        B, T, D, A = d["B"], d["T"], d["D"], d["A"]
        return 2 * B * T * D * A + 2 * B * T * A + 2 * B * T * D + 5 * B * T

    def bytes_moved(self, case):
        d = case.dims
        B, T, D, A = d["B"], d["T"], d["D"], d["A"]
        return (B * T * D + D * A + 2 * A + B * D + B * T) * itemsize(case.dtype)


# ---- multi-head self-attention ------------------------------------------------------------


class TorchMHA(nn.MultiheadAttention):
    """nn.MultiheadAttention with the forward(x, lengths) of lstm_fused.MultiheadSelfAttention."""

    def forward(self, x, lengths=None):
        T = x.shape[1] if self.batch_first else x.shape[0]
        pad = None if lengths is None else ~lengths_mask(lengths, T)
        return super().forward(x, x, x, key_padding_mask=pad, need_weights=False)[0]


class ProjectedAttention(nn.Module):
    """Self-attention from its parts (nn.MultiheadAttention's parameter names): in-projection,
    then either an unfused QK^T-mask-softmax-V or F.scaled_dot_product_attention, then the
    out-projection. x (T, B, E) -> (T, B, E)."""

    def __init__(self, embed_dim, num_heads, use_sdpa):
        super().__init__()
        self.num_heads, self.use_sdpa = num_heads, use_sdpa
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, lengths):
        T, B, E = x.shape
        N = self.num_heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (
            t.reshape(T, B * N, E // N).transpose(0, 1).reshape(B, N, T, E // N) for t in (q, k, v)
        )
        keep = lengths_mask(lengths, T).reshape(B, 1, 1, T)  # True = attend to this key
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        else:
            s = (q @ k.transpose(-1, -2)) / math.sqrt(E // N)
            o = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1) @ v
        o = o.reshape(B * N, T, E // N).transpose(0, 1).reshape(T, B, E)
        return self.out_proj(o)


class SelfAttentionWorkload(Workload):
    family = "self_attention"
    baseline = "nn.MultiheadAttention"
    diff_inputs = ("x",)

    def make_state(self, case, gen):
        d = case.dims
        state = module_state(
            gen, lambda: nn.MultiheadAttention(d["E"], d["N"], dtype=torch.float64)
        )
        with torch.no_grad():  # nn initialises biases to zero: make them count
            state["in_proj_bias"].normal_(0, 0.1, generator=gen)
            state["out_proj.bias"].normal_(0, 0.1, generator=gen)
        return state

    def make_inputs(self, case, gen):
        return padded_batch(case, "E", gen)

    def output_masks(self, case, inputs) -> List[Optional[torch.Tensor]]:
        # Compare valid query positions only: what a padded position holds is not the contract.
        return [lengths_mask(inputs["lengths"], case.dims["T"]).t().unsqueeze(-1)]

    @staticmethod
    def _wrap(module, returns_tuple=False):
        if returns_tuple:
            return Impl(lambda inp: (module(inp["x"], inp["lengths"])[0],), module)
        return Impl(lambda inp: (module(inp["x"], inp["lengths"]),), module)

    def _parts(self, case, state, dtype, device, use_sdpa):
        d = case.dims
        return self._wrap(
            load_module(ProjectedAttention(d["E"], d["N"], use_sdpa), state, dtype, device)
        )

    def reference(self, case, state, device):
        return self._parts(case, state, torch.float64, device, use_sdpa=False)

    def providers(self, case, device, options):
        d = case.dims

        def torch_mha(case, state, dtype, device):
            return self._wrap(load_module(TorchMHA(d["E"], d["N"]), state, dtype, device))

        def fused(case, state, dtype, device, backend):
            cls = lstm_fused_attr("MultiheadSelfAttention")
            return self._wrap(
                load_module(cls(d["E"], d["N"], backend=backend), state, dtype, device),
                returns_tuple=True,
            )

        out = [
            Provider("nn.MultiheadAttention", torch_mha),
            Provider("torch.unfused", lambda c, s, dt, dev: self._parts(c, s, dt, dev, False)),
            Provider("torch.sdpa", lambda c, s, dt, dev: self._parts(c, s, dt, dev, True)),
        ]
        return out + backend_providers(attention_backends(device), fused)

    def flops(self, case):
        d = case.dims
        B, T, E = d["B"], d["T"], d["E"]
        return 2 * B * T * E * 3 * E + 4 * B * T * T * E + 2 * B * T * E * E

    def bytes_moved(self, case):
        d = case.dims
        B, T, E = d["B"], d["T"], d["E"]
        return (2 * B * T * E + 4 * E * E + 4 * E) * itemsize(case.dtype)
