"""The attentive LSTM (docs/contract.md, section 2): an LSTM whose last layer's outputs are pooled by additive
attention. x (T, B, I) time-major, lengths (B,) -> (context (B, H), alpha (B, T)).

Providers: "torch.unfused" (nn.LSTM on the padded batch, then the plain-PyTorch pooling; what
a model without lstm_fused does) and "lstm_fused:<backend>" (lstm_fused.AttentiveLSTM: in
"fwd", under no_grad, one direction, the last layer and the pooling are one operator and the
layer's output is never written). Both load one state_dict: lstm.* (nn.LSTM's names) and
attention.proj.*, attention.score.weight.
"""

from __future__ import annotations

from torch import nn

from .attention import UnfusedAttentionPooling
from .base import (
    Impl,
    Provider,
    UnfusedWorkload,
    backend_providers,
    load_module,
    lstm_fused_attr,
    lstm_fused_backends,
    module_state,
    padded_batch,
)


class UnfusedAttentiveLSTM(nn.Module):
    def __init__(self, input_size, hidden_size, attention_size, num_layers):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers)
        self.attention = UnfusedAttentionPooling(hidden_size, attention_size)

    def forward(self, x, lengths):
        y, _ = self.lstm(x)  # the padded batch, unpacked: steps t < lengths[b] are exact
        return self.attention(y, lengths)


class AttentiveLSTMWorkload(UnfusedWorkload):
    family = "attentive_lstm"
    diff_inputs = ("x",)

    def make_state(self, case, gen):
        d = case.dims
        return module_state(
            gen, lambda: UnfusedAttentiveLSTM(d["I"], d["H"], d["A"], d["L"]).double()
        )

    def make_inputs(self, case, gen):
        return padded_batch(case, "I", gen)

    @staticmethod
    def _wrap(module):
        return Impl(lambda inp: tuple(module(inp["x"], inp["lengths"])[:2]), module)

    def unfused(self, case, state, dtype, device):
        d = case.dims
        module = UnfusedAttentiveLSTM(d["I"], d["H"], d["A"], d["L"])
        return self._wrap(load_module(module, state, dtype, device))

    def providers(self, case, device, options):
        d = case.dims

        def fused(case, state, dtype, device, backend):
            cls = lstm_fused_attr("AttentiveLSTM")
            module = cls(d["I"], d["H"], d["A"], num_layers=d["L"], backend=backend)
            return self._wrap(load_module(module, state, dtype, device))

        return [Provider("torch.unfused", self.unfused)] + backend_providers(
            lstm_fused_backends(device), fused
        )

    def flops(self, case):
        d = case.dims
        B, T, I, H, L, A = d["B"], d["T"], d["I"], d["H"], d["L"], d["A"]
        lstm = 2 * T * B * 4 * H * (I + H) + 2 * T * B * 4 * H * (H + H) * (L - 1)
        return lstm + 2 * B * T * H * A + 2 * B * T * A + 2 * B * T * H
