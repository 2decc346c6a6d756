"""Frozen inference (lstm_fused.freeze_for_inference, FrozenLSTM, the operator
lstm_frozen_layer; docs/contract.md "Frozen inference"): float32, bfloat16 and int8 weights
against the float64 LSTM they were frozen from (the errors the contract states), against the
exact math of reference_frozen.py in float64 (same weights, same activation rounding), on every
CPU kernel variant (the AVX-512 one runs vdpbf16ps / vpdpbusd where the CPU has them, the
others the portable loops), one and two threads, with the errors and the state_dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstm_fused
from lstm_fused import reference_frozen, switches

from backends import LOAD_ERROR
from tolerances import tol

pytestmark = pytest.mark.skipif(LOAD_ERROR is not None, reason="the C++ extension is not built")

WEIGHTS = [torch.float32, torch.bfloat16, torch.qint8]
# (I, H, L, B, T, bidirectional): padding of units (H % 16) and of dot steps (I % 4), row
# tiles of 1 to 6 rows, the panel split of a step (B * 4H * H >= 2^18) and the row split.
SHAPES = [
    (20, 24, 2, 3, 7, False),
    (13, 40, 1, 6, 5, True),
    (7, 17, 1, 11, 4, False),
    (256, 256, 1, 1, 6, False),
    (30, 32, 1, 16, 3, False),
]


def _C():
    from lstm_fused import _C

    return _C


@pytest.fixture(params=["auto", "avx2", "default"])
def variant(request):
    name = request.param
    if name != "auto" and name not in _C().cpu_capabilities():
        pytest.skip(f"the {name} CPU kernels are not built or this CPU cannot run them")
    _C().set_cpu_capability(name)
    yield name
    _C().set_cpu_capability("auto")


def _model(I, H, L, bidirectional, seed=0, **kw):
    torch.manual_seed(seed)
    return nn.LSTM(I, H, L, bidirectional=bidirectional, **kw)


def _emulated(frozen, x):
    """reference_frozen's math in float64 through every layer and direction of `frozen`."""
    D = 2 if frozen.bidirectional else 1
    B, H = x.shape[1], frozen.hidden_size
    y = x
    for k in range(frozen.num_layers):
        outs = []
        for d in range(D):
            xd = y if d == 0 else y.flip(0)
            zero = torch.zeros(B, H)
            yd = reference_frozen.lstm_frozen_layer(
                xd, zero, zero, *frozen._packed[k * D + d], compute=torch.float64
            )[0]
            outs.append(yd if d == 0 else yd.flip(0))
        y = torch.cat(outs, 2)
    return y


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_against_float64_and_the_exact_math(variant, weights, shape):
    I, H, L, B, T, bi = shape
    m = _model(I, H, L, bi)
    frozen = lstm_fused.freeze_for_inference(m, weights)
    assert isinstance(frozen, lstm_fused.FrozenLSTM)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, (h, c) = frozen(x)
        y64, (h64, c64) = m.double()(x.double())
    torch.testing.assert_close(y, _emulated(frozen, x), **tol("frozen_emulation", weights))
    for got, want in ((y, y64), (h, h64), (c, c64)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, **tol("frozen", weights))


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_two_threads_give_the_same_numbers(weights):
    """Each panel and row is computed by one thread in the same order: bit-identical."""
    before = torch.get_num_threads()
    for B in (1, 8):  # the panels of each step shared out; the rows shared out once
        frozen = lstm_fused.freeze_for_inference(_model(64, 256, 1, False), weights)
        x = torch.randn(5, B, 64)
        try:
            with torch.no_grad(), switches.override(cpu_threads="all"):
                torch.set_num_threads(1)
                one = frozen(x)[0]
                torch.set_num_threads(2)
                two = frozen(x)[0]
        finally:
            torch.set_num_threads(before)
        torch.testing.assert_close(two, one, atol=0, rtol=0)


def test_float32_is_lstm_fused_math():
    """float32 weights: the float32 tolerance of the LSTM against nn.LSTM in float64, also with
    batch_first, an initial state and unbatched input."""
    m = _model(12, 20, 2, True, batch_first=True)
    frozen = lstm_fused.freeze_for_inference(m)
    x = torch.randn(3, 9, 12)
    hx = (torch.randn(4, 3, 20), torch.randn(4, 3, 20))
    with torch.no_grad():
        got = frozen(x, hx)
        want = m.double()(x.double(), tuple(t.double() for t in hx))
        torch.testing.assert_close(got[0].double(), want[0], **tol("lstm", torch.float32))
        torch.testing.assert_close(got[1][0].double(), want[1][0], **tol("lstm", torch.float32))
        torch.testing.assert_close(got[1][1].double(), want[1][1], **tol("lstm", torch.float32))
        one = frozen(x[0], tuple(t[:, 0] for t in hx))
        torch.testing.assert_close(one[0], got[0][0], **tol("lstm", torch.float32))
        assert one[1][0].shape == (4, 20)


def test_float32_large_batches_run_the_lstm_loop(monkeypatch):
    """float32 weights with B > FLOAT32_FROZEN_MAX_B run functional.lstm (lstm_fused.LSTM's CPU
    loop) on views of the same weights; smaller batches the frozen kernel."""
    from lstm_fused import frozen as frozen_module

    m = _model(12, 20, 2, True)
    f = lstm_fused.freeze_for_inference(m)
    calls = []
    real = frozen_module.functional.lstm
    monkeypatch.setattr(
        frozen_module.functional, "lstm", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    for B, routed in (
        (frozen_module.FLOAT32_FROZEN_MAX_B, 0),
        (frozen_module.FLOAT32_FROZEN_MAX_B + 1, 1),
    ):
        x = torch.randn(5, B, 12)
        calls.clear()
        with torch.no_grad():
            got = f(x)
            want = m.double()(x.double())
        m.float()
        assert len(calls) == routed
        torch.testing.assert_close(got[0].double(), want[0], **tol("lstm", torch.float32))
        torch.testing.assert_close(got[1][1].double(), want[1][1], **tol("lstm", torch.float32))
    f.to("cpu")  # the packed copies follow the buffers
    with torch.no_grad():
        torch.testing.assert_close(f(x)[0], got[0], atol=0, rtol=0)


def test_freeze_in_place():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 8)

    net = Net()
    assert lstm_fused.freeze_for_inference(net, torch.qint8, inplace=True) is net
    assert isinstance(net.rnn, lstm_fused.FrozenLSTM) and net.rnn.weights == torch.qint8


def test_freeze_a_model_copies_it():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm_fused.LSTM(8, 16)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    net = Net()
    frozen = lstm_fused.freeze_for_inference(net, weights=torch.bfloat16)
    assert isinstance(net.lstm, lstm_fused.LSTM)  # the original is left alone
    assert isinstance(frozen.lstm, lstm_fused.FrozenLSTM) and not frozen.training
    x = torch.randn(6, 2, 8)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), atol=1e-2, rtol=0)
    assert "weights=torch.bfloat16" in repr(frozen.lstm)
    assert repr(frozen.lstm) == "FrozenLSTM(8, 16, weights=torch.bfloat16)"


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_state_dict_round_trip(weights):
    m = _model(10, 18, 2, True)
    frozen = lstm_fused.freeze_for_inference(m, weights)
    sd = frozen.state_dict()
    names = set(m.state_dict())
    if weights == torch.qint8:
        names |= {n + "_scale" for n in m.state_dict() if n.startswith("weight")}
        assert sd["weight_ih_l0"].dtype == torch.int8 and sd["weight_ih_l0_scale"].shape == (72,)
    else:
        assert sd["weight_hh_l1_reverse"].dtype == weights
    assert set(sd) == names
    other = lstm_fused.FrozenLSTM(10, 18, 2, bidirectional=True, weights=weights)
    other.load_state_dict(sd)
    x = torch.randn(4, 3, 10)
    with torch.no_grad():
        torch.testing.assert_close(other(x)[0], frozen(x)[0], atol=0, rtol=0)
    wrong = lstm_fused.FrozenLSTM(10, 18, 2, bidirectional=True, weights=torch.float32)
    if weights != torch.float32:
        with pytest.raises(RuntimeError, match="dtype mismatch"):
            wrong.load_state_dict(sd)


def test_errors():
    m = _model(6, 8, 1, False)
    with pytest.raises(TypeError, match="weights must be"):
        lstm_fused.freeze_for_inference(m, torch.int8)
    with pytest.raises(ValueError, match="proj_size"):
        lstm_fused.freeze_for_inference(nn.LSTM(6, 8, proj_size=4))
    with pytest.raises(ValueError, match="peephole"):
        lstm_fused.freeze_for_inference(lstm_fused.LSTM(6, 8, peephole=True))
    frozen = lstm_fused.freeze_for_inference(m, torch.qint8)
    x = torch.randn(3, 2, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference only"):
        frozen(x)
    with torch.no_grad():
        assert frozen(x)[0].shape == (3, 2, 8)
    packed = nn.utils.rnn.pack_padded_sequence(x.detach(), torch.tensor([3, 2]))
    with torch.no_grad(), pytest.raises(NotImplementedError, match="PackedSequence"):
        frozen(packed)
    with torch.no_grad(), pytest.raises(RuntimeError, match="input_size"):
        frozen(torch.randn(3, 2, 5))
    with torch.no_grad(), pytest.raises(TypeError, match="float32"):
        frozen(torch.randn(3, 2, 6, dtype=torch.float64))


def test_operator_checks_and_refuses_gradients():
    frozen = lstm_fused.freeze_for_inference(_model(6, 8, 1, False), torch.bfloat16)
    w_ih, w_hh, b, s_ih, s_hh = frozen._packed[0]
    op = torch.ops.lstm_fused.lstm_frozen_layer
    x, h0 = torch.randn(3, 2, 6), torch.zeros(2, 8)
    y, h_n, c_n = op(x, h0, h0, w_ih, w_hh, b, s_ih, s_hh)
    assert y.shape == (3, 2, 8) and h_n.shape == c_n.shape == (2, 8)
    with pytest.raises(ValueError, match="w_hh has shape"):
        op(x, h0, h0, w_ih, w_hh[:, :1], b, None, None)
    with pytest.raises(TypeError, match="x must be float32"):
        op(x.double(), h0, h0, w_ih, w_hh, b, None, None)
    with pytest.raises(TypeError, match="w_ih has dtype"):
        op(x, h0, h0, w_ih.float(), w_hh, b, None, None)
    with pytest.raises(ValueError, match="w_ih_scale is only for uint8"):
        op(x, h0, h0, w_ih, w_hh, b, b, None)
    xg = x.clone().requires_grad_()
    out = op(xg, h0, h0, w_ih, w_hh, b, None, None)[0]
    with pytest.raises(RuntimeError, match="inference only"):
        out.sum().backward()
    # the Triton twin: the same checks, then the plain-PyTorch math
    twin = torch.ops.lstm_fused.lstm_frozen_layer_triton(x, h0, h0, w_ih, w_hh, b, None, None)
    torch.testing.assert_close(twin[0], y, **tol("frozen_emulation", torch.bfloat16))


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_whole_model_loads_with_weights_only(tmp_path, weights):
    frozen = lstm_fused.freeze_for_inference(_model(6, 8, 1, False), weights)
    path = tmp_path / "frozen.pt"
    torch.save(frozen, path)
    with torch.serialization.safe_globals(lstm_fused.safe_globals()):
        loaded = torch.load(path, weights_only=True)
    x = torch.randn(4, 2, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], frozen(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_rows_near_zero(variant, weights):
    """A row of values near zero (int8: below the quantization's 1e-30, taken as zeros) gives
    the float64 result within the kind's error, beside ordinary rows."""
    m = _model(6, 20, 1, False)
    frozen = lstm_fused.freeze_for_inference(m, weights)
    x = torch.randn(4, 3, 6)
    x[:, 2] = 1e-35
    x[:, 1] = 1e-3 * torch.randn(4, 6)
    with torch.no_grad():
        y = frozen(x)[0]
        want = m.double()(x.double())[0]
    torch.testing.assert_close(y.double(), want, **tol("frozen", weights))
    torch.testing.assert_close(y, _emulated(frozen, x), **tol("frozen_emulation", weights))
