"""Backend choice (SPEC §3) and replace_lstm."""
import copy

import pytest
import torch
from torch import nn

import lstm_fused
from lstm_fused import backends


def test_available_backends_on_this_machine():
    names = lstm_fused.available_backends()
    assert "cpu" in names and "reference" in names
    assert all(n in ("cuda", "triton", "cpu", "reference") for n in names)
    assert ("cuda" in names) == (torch.cuda.is_available()
                                 and backends.implementations("lstm_layer")["cuda"]
                                 .unavailable_reason() is None)


def test_auto_picks_cpu_for_cpu_float32_and_reference_for_half():
    dev = torch.device("cpu")
    assert backends.resolve("auto", "lstm_layer", dev, torch.float32).name == "cpu"
    assert backends.resolve("auto", "lstm_layer", dev, torch.float64).name == "cpu"
    assert backends.resolve("auto", "lstm_layer", dev, torch.bfloat16).name == "reference"


def test_env_variable_overrides_auto_only(monkeypatch):
    dev = torch.device("cpu")
    monkeypatch.setenv("LSTM_FUSED_BACKEND", "reference")
    assert backends.resolve("auto", "lstm_layer", dev, torch.float32).name == "reference"
    assert backends.resolve("cpu", "lstm_layer", dev, torch.float32).name == "cpu"


def test_named_backend_never_falls_back():
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot run .* bfloat16"):
        backends.resolve("cpu", "lstm_layer", torch.device("cpu"), torch.bfloat16)


def test_reference_backend_runs_bfloat16_on_cpu():
    m = lstm_fused.LSTM(4, 6, dtype=torch.bfloat16)  # auto -> reference for bf16 on the CPU
    y, _ = m(torch.randn(3, 2, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 5), nn.Tanh())
        self.lstm = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.inner = nn.ModuleDict({"cell": nn.LSTMCell(14, 6),
                                    "proj": nn.LSTM(14, 8, proj_size=3)})
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y, _ = self.lstm(self.enc(x))
        y2, _ = self.inner["proj"](y.transpose(0, 1))
        h, c = self.inner["cell"](y[:, -1])
        return self.head(h) + y2.sum()


def test_replace_lstm_keeps_outputs_gradients_and_parameters():
    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    ref = copy.deepcopy(model)
    params_before = {n: p for n, p in model.named_parameters()}
    out = lstm_fused.replace_lstm(model)
    assert out is model
    assert isinstance(model.lstm, lstm_fused.LSTM) and model.lstm.batch_first
    assert isinstance(model.inner["cell"], lstm_fused.LSTMCell)
    assert isinstance(model.inner["proj"], lstm_fused.LSTM) and model.inner["proj"].proj_size == 3
    # the very same Parameter objects: an optimizer built before the swap still trains them
    for n, p in model.named_parameters():
        assert p is params_before[n], n
    torch.testing.assert_close(model(x), ref(x), rtol=1e-10, atol=1e-12)
    g = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    g_ref = torch.autograd.grad(ref(x).sum(), list(ref.parameters()))
    for a, e in zip(g, g_ref):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_replace_lstm_on_a_bare_lstm_and_training_mode():
    lstm = nn.LSTM(3, 4).eval()
    fused = lstm_fused.replace_lstm(lstm, backend="reference")
    assert isinstance(fused, lstm_fused.LSTM) and fused.backend == "reference"
    assert not fused.training
    assert fused.weight_ih_l0 is lstm.weight_ih_l0
    assert fused.weight_ih_l0.device.type == "cpu"


def test_replace_lstm_rejects_a_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        lstm_fused.replace_lstm(nn.LSTM(3, 4), backend="gpu")
