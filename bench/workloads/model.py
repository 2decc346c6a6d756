"""A whole model's training step (seeds 001/003): embedding -> BiLSTM -> multi-head
self-attention -> additive attention pooling -> classifier, cross-entropy, SGD step.

tokens (B, T) int64, lengths (B,), labels (B,); batch-first throughout. Providers:
"torch.nn" (nn.LSTM, nn.MultiheadAttention, unfused pooling) and "lstm_fused:<backend>"
(lstm_fused.LSTM on that backend; lstm_fused's attention modules, backend "auto", where this
build has them, else the torch ones, as the row's note says). The padded batch goes through the
LSTM unpacked, as many simple models do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..cases import Case
from .attention import TorchMHA, UnfusedAttentionPooling
from .base import (
    Absent,
    Impl,
    Provider,
    Workload,
    backend_providers,
    load_module,
    lstm_fused_attr,
    lstm_fused_backends,
    module_state,
    random_lengths,
)
from .lstm import LSTMWorkload


class Classifier(nn.Module):
    def __init__(self, emb, lstm, attn, pool, fc):
        super().__init__()
        self.emb, self.lstm, self.attn, self.pool, self.fc = emb, lstm, attn, pool, fc

    def forward(self, tokens, lengths):
        y, _ = self.lstm(self.emb(tokens))  # (B, T, 2H)
        a = self.attn(y, lengths)  # (B, T, 2H)
        if isinstance(a, tuple):  # lstm_fused.MultiheadSelfAttention
            a = a[0]
        c, _alpha = self.pool(a, lengths)  # (B, 2H)
        return self.fc(c)  # (B, C)


def _build(case: Case, lstm_backend=None, fused_attention=False):
    """The classifier; lstm_backend None: nn.LSTM, else lstm_fused.LSTM(backend=...)."""
    d = case.dims
    V, E, H, N, A, C = d["V"], d["E"], d["H"], d["N"], d["A"], d["C"]
    notes = []
    if lstm_backend is None:
        lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)
    else:
        import lstm_fused

        lstm = lstm_fused.LSTM(E, H, bidirectional=True, batch_first=True, backend=lstm_backend)
    attn = pool = None
    if fused_attention:
        try:
            attn = lstm_fused_attr("MultiheadSelfAttention")(2 * H, N, batch_first=True)
            notes.append("attention: lstm_fused")
        except Absent:
            notes.append("attention: torch (lstm_fused.MultiheadSelfAttention absent)")
        try:
            pool = lstm_fused_attr("AttentionPooling")(2 * H, A, batch_first=True)
            notes.append("pooling: lstm_fused")
        except Absent:
            notes.append("pooling: torch (lstm_fused.AttentionPooling absent)")
    attn = attn or TorchMHA(2 * H, N, batch_first=True)
    pool = pool or UnfusedAttentionPooling(2 * H, A, batch_first=True)
    return Classifier(nn.Embedding(V, E), lstm, attn, pool, nn.Linear(2 * H, C)), "; ".join(notes)


def _impl(model: nn.Module, note: str = "") -> Impl:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def call(inp):
        return (model(inp["tokens"], inp["lengths"]),)

    def train_step(inp):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inp["tokens"], inp["lengths"]).float(), inp["labels"])
        loss.backward()
        opt.step()
        return loss

    return Impl(call, model, train_step, note)


class ModelStepWorkload(Workload):
    family = "model_step"
    baseline = "torch.nn"

    def make_state(self, case, gen):
        state = module_state(gen, lambda: _build(case)[0].double())
        with torch.no_grad():
            for key in ("attn.in_proj_bias", "attn.out_proj.bias"):
                state[key].normal_(0, 0.1, generator=gen)
        return state

    def make_inputs(self, case, gen):
        d = case.dims
        B, T = d["B"], d["T"]
        return {
            "tokens": torch.randint(0, d["V"], (B, T), generator=gen),
            "lengths": random_lengths(B, T, gen),
            "labels": torch.randint(0, d["C"], (B,), generator=gen),
        }

    def reference(self, case, state, device):
        model, _ = _build(case, lstm_backend="reference")
        return _impl(load_module(model, state, torch.float64, device))

    def providers(self, case, device, options):
        def torch_model(case, state, dtype, device):
            return _impl(load_module(_build(case)[0], state, dtype, device))

        def fused(case, state, dtype, device, backend):
            model, note = _build(case, lstm_backend=backend, fused_attention=True)
            return _impl(load_module(model, state, dtype, device), note)

        return [Provider("torch.nn", torch_model)] + backend_providers(
            lstm_fused_backends(device), fused
        )

    def _lstm_case(self, case):
        d = case.dims
        return Case(
            "lstm",
            "fwd",
            (("B", d["B"]), ("T", d["T"]), ("I", d["E"]), ("H", d["H"]), ("L", 1), ("D", 2)),
            case.dtype,
        )

    def flops(self, case):
        d = case.dims
        B, T, H2, A, C = d["B"], d["T"], 2 * d["H"], d["A"], d["C"]
        attn = 2 * B * T * H2 * 3 * H2 + 4 * B * T * T * H2 + 2 * B * T * H2 * H2
        pool = 2 * B * T * H2 * A + 2 * B * T * A + 2 * B * T * H2
        return LSTMWorkload().flops(self._lstm_case(case)) + attn + pool + 2 * B * H2 * C

    def bytes_moved(self, case):
        d = case.dims
        size = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}[case.dtype]
        B, T, H2 = d["B"], d["T"], 2 * d["H"]
        weights = d["V"] * d["E"] + 4 * H2 * H2 + H2 * d["A"] + H2 * d["C"]
        return LSTMWorkload().bytes_moved(self._lstm_case(case)) + (3 * B * T * H2 + weights) * size
