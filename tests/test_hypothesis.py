"""Random configurations drawn by hypothesis, lstm_fused.LSTM (cpu backend) against nn.LSTM.

hypothesis is a test tool, not a dependency: where it is not installed (the GPU machine may
lack it) this module is skipped, and the rest of the suite still collects."""

import pytest
import torch
from torch import nn

pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import lstm_fused

from helpers import assert_close


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    I=st.integers(1, 9),
    H=st.integers(1, 12),
    L=st.integers(1, 3),
    bi=st.booleans(),
    P=st.integers(0, 11),
    bias=st.booleans(),
    bf=st.booleans(),
    T=st.integers(1, 6),
    B=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(["f32", "f64"]),
)
def test_random_configurations_match_nn_lstm(I, H, L, bi, P, bias, bf, T, B, seed, dtype):
    dtype = {"f32": torch.float32, "f64": torch.float64}[dtype]
    P = P if P < H else 0
    torch.manual_seed(seed)
    ref = nn.LSTM(I, H, L, bias=bias, batch_first=bf, bidirectional=bi, proj_size=P, dtype=dtype)
    ours = lstm_fused.LSTM(
        I,
        H,
        L,
        bias=bias,
        batch_first=bf,
        bidirectional=bi,
        proj_size=P,
        dtype=dtype,
        backend="cpu",
    )
    ours.load_state_dict(ref.state_dict())
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=dtype, requires_grad=True)
    y_r, (h_r, c_r) = ref(x)
    y_o, (h_o, c_o) = ours(x)
    for a, e in ((y_o, y_r), (h_o, h_r), (c_o, c_r)):
        assert_close(a, e)
    w = torch.randn_like(y_r)
    g_r = torch.autograd.grad((y_r * w).sum() + c_r.sum(), [x, *ref.parameters()])
    g_o = torch.autograd.grad((y_o * w).sum() + c_o.sum(), [x, *ours.parameters()])
    for a, e in zip(g_o, g_r):
        assert_close(a, e)
