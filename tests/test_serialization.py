"""Saving and loading: whole models with lstm_fused modules inside load with
torch.load(weights_only=True) given lstm_fused.safe_globals(); state_dicts move between
nn.LSTM / nn.LSTMCell and lstm_fused.LSTM / LSTMCell in both directions."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

import lstm_fused
from helpers import assert_close

I, H, A, B, T = 4, 6, 5, 3, 7


class Everything(nn.Module):
    """Every lstm_fused module, in the configurations that hold different torch.nn children."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_fused.LSTM(
            I, H, num_layers=2, bidirectional=True, proj_size=2, peephole=True
        )
        self.cell = lstm_fused.LSTMCell(I, H)
        self.pool = lstm_fused.AttentionPooling(I, A, query_size=2)
        self.mhsa = lstm_fused.MultiheadSelfAttention(I, 2)
        self.eca = lstm_fused.ChannelAttention(I, mode="eca")
        self.se = lstm_fused.ChannelAttention(I, mode="se")
        self.attentive = lstm_fused.AttentiveLSTM(I, H, A, num_layers=2)

    def forward(self, x, lengths, query):
        """x (T, B, I), lengths (B,), query (B, 2) -> a tuple of every module's outputs."""
        y, (h, c) = self.lstm(x)
        hc = self.cell(x[0])
        context, alpha = self.pool(x, lengths, query)
        attended, _ = self.mhsa(x, lengths)
        pooled, alpha2, _ = self.attentive(x, lengths)
        return (
            y,
            h,
            c,
            *hc,
            context,
            alpha,
            attended,
            self.eca(x, lengths),
            self.se(x, lengths),
            pooled,
            alpha2,
        )


def _inputs():
    gen = torch.Generator().manual_seed(3)
    return (
        torch.randn(T, B, I, generator=gen),
        torch.tensor([7, 4, 1]),
        torch.randn(B, 2, generator=gen),
    )


def _saved(model) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return buf


def test_whole_model_loads_with_weights_only_and_safe_globals():
    torch.manual_seed(0)
    model = Everything().eval()
    with torch.no_grad():  # peephole weights start at zero: give them values to save
        for name, p in model.named_parameters():
            if "weight_c" in name:
                p.uniform_(-0.5, 0.5)
    buf = _saved(model)
    with torch.serialization.safe_globals(lstm_fused.safe_globals() + [Everything]):
        loaded = torch.load(buf, weights_only=True)
    assert type(loaded) is Everything and not loaded.training
    x, lengths, query = _inputs()
    with torch.no_grad():
        expected, actual = model(x, lengths, query), loaded(x, lengths, query)
    assert len(actual) == len(expected) == 12
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)
    for (n, p), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == n2 and torch.equal(p, p2)


def test_weights_only_refuses_lstm_fused_classes_not_allowed():
    buf = _saved(lstm_fused.LSTM(I, H))
    with pytest.raises(pickle.UnpicklingError, match="lstm_fused.lstm.LSTM"):
        torch.load(buf, weights_only=True)


def test_safe_globals_is_a_fresh_list_of_classes():
    first = lstm_fused.safe_globals()
    first.append(Everything)
    assert Everything not in lstm_fused.safe_globals()
    assert all(isinstance(c, type) for c in first)


LSTM_CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=2, proj_size=3, bias=False),
]


@pytest.mark.parametrize(
    "config", LSTM_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_lstm_state_dict_round_trip(config, direction):
    torch.manual_seed(1)
    source_cls, target_cls = (
        (nn.LSTM, lstm_fused.LSTM) if direction == "torch_to_fused" else (lstm_fused.LSTM, nn.LSTM)
    )
    source = source_cls(I, H, dtype=torch.float64, **config)
    target = target_cls(I, H, dtype=torch.float64, **config)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(B, T, I, dtype=torch.float64)
    if not config.get("batch_first"):
        x = x.transpose(0, 1)
    y_s, (h_s, c_s) = source(x)
    y_t, (h_t, c_t) = target(x)
    for a, e in ((y_t, y_s), (h_t, h_s), (c_t, c_s)):
        assert_close(a, e, msg=direction)


@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_lstm_cell_state_dict_round_trip(direction):
    torch.manual_seed(2)
    source_cls, target_cls = (
        (nn.LSTMCell, lstm_fused.LSTMCell)
        if direction == "torch_to_fused"
        else (lstm_fused.LSTMCell, nn.LSTMCell)
    )
    source = source_cls(I, H, dtype=torch.float64)
    target = target_cls(I, H, dtype=torch.float64)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(B, I, dtype=torch.float64)
    for a, e in zip(target(x), source(x)):
        assert_close(a, e, msg=direction)
