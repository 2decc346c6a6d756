"""torch.autocast: lstm_fused.LSTM / LSTMCell give nn.LSTM's / nn.LSTMCell's output dtypes and,
within the lower-precision dtype's rounding, its values and gradients under the same autocast.
CPU (bfloat16) here; CUDA (float16, bfloat16) where a GPU exists."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_fused
from backends import cases
from tolerances import tol

I, H, T, B = 8, 16, 12, 4
LSTM_CONFIGS = [
    ("plain", dict()),
    ("layers2-bidir", dict(num_layers=2, bidirectional=True)),
    ("proj", dict(proj_size=4)),
    ("nobias-batch_first", dict(bias=False, batch_first=True)),
]

# (device, autocast dtype): the device's backend ("auto") runs the layers.
DEVICES = cases("lstm_layer", ["cpu"], [torch.bfloat16]) + cases(
    "lstm_layer", ["cuda"], [torch.float16, torch.bfloat16]
)


def _pair(kwargs, device, cell=False, seed=0):
    torch.manual_seed(seed)
    ref = (nn.LSTMCell(I, H, **kwargs) if cell else nn.LSTM(I, H, **kwargs)).to(device)
    m = lstm_fused.LSTMCell(I, H, **kwargs) if cell else lstm_fused.LSTM(I, H, **kwargs)
    m = m.to(device)
    m.load_state_dict(ref.state_dict())
    return m, ref


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "data") and hasattr(out, "batch_sizes"):  # PackedSequence
        return [out.data]
    return [t for o in out for t in _flat(o)]


def _compare(m, ref, inputs, device, dtype, lowered=True):
    """Outputs (dtypes, values) and parameter gradients of m and ref under the same autocast;
    lowered: whether nn's outputs are (partly) in the autocast dtype."""
    results = []
    for module in (m, ref):
        module.zero_grad()
        with warnings.catch_warnings(), torch.autocast(device, dtype=dtype):
            warnings.simplefilter("ignore")  # nn.LSTM: "projections not supported with oneDNN"
            outs = _flat(module(*inputs))
        loss = sum(
            (o.float() * torch.linspace(-1, 1, o.numel(), device=device).reshape(o.shape)).sum()
            for o in outs
        )
        loss.backward()
        results.append((outs, {n: p.grad for n, p in module.named_parameters()}))
    (got, got_grads), (want, want_grads) = results
    assert [o.dtype for o in got] == [o.dtype for o in want]
    assert any(o.dtype == dtype for o in want) == lowered
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), **tol("autocast", dtype))
    for n, g in want_grads.items():
        assert got_grads[n].dtype == g.dtype, n
        scale = max(1.0, float(g.abs().max()))  # gradients sum T * B terms of rounded values
        t = tol("autocast", dtype)
        torch.testing.assert_close(got_grads[n], g, atol=t["atol"] * scale, rtol=t["rtol"], msg=n)


@pytest.mark.parametrize("device,dtype", DEVICES)
@pytest.mark.parametrize("name,kwargs", LSTM_CONFIGS, ids=[c[0] for c in LSTM_CONFIGS])
def test_lstm_autocast_matches_nn(device, dtype, name, kwargs):
    m, ref = _pair(kwargs, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, I, generator=g) if m.batch_first else torch.randn(T, B, I, generator=g)
    x = x.to(device)
    _compare(m, ref, (x,), device, dtype)  # float32 input
    _compare(m, ref, (x.to(dtype),), device, dtype)  # the output of an earlier autocast op
    D, L, R = 2 if m.bidirectional else 1, m.num_layers, m.proj_size or H
    hx = (
        torch.randn(D * L, B, R, generator=g).to(device),
        torch.randn(D * L, B, H, generator=g).to(device),
    )
    _compare(m, ref, (x, hx), device, dtype)  # float32 initial state


@pytest.mark.parametrize("device,dtype", DEVICES)
def test_lstm_autocast_packed_and_unbatched(device, dtype):
    m, ref = _pair(dict(num_layers=2, proj_size=4), device)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, I, generator=g).to(device)
    packed = pack_padded_sequence(x, torch.tensor([T, 3, 7, 1]), enforce_sorted=False)
    _compare(m, ref, (packed,), device, dtype)
    _compare(m, ref, (x[:, 0],), device, dtype)


@pytest.mark.parametrize("device,dtype", DEVICES)
def test_lstm_cell_autocast_matches_nn(device, dtype):
    m, ref = _pair(dict(), device, cell=True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, I, generator=g).to(device)
    hx = (torch.randn(B, H, generator=g).to(device), torch.randn(B, H, generator=g).to(device))
    # nn.LSTMCell: matmuls in the autocast dtype, the cell update in c's dtype (a float32 state,
    # also the zeros of a float32 input, gives float32 outputs)
    _compare(m, ref, (x,), device, dtype, lowered=False)
    _compare(m, ref, (x.to(dtype),), device, dtype)
    _compare(m, ref, (x, hx), device, dtype, lowered=False)
    _compare(m, ref, (x[0],), device, dtype, lowered=False)


@pytest.mark.parametrize("backend", cases("lstm_layer", ["cpu", "reference"]))
def test_cpu_backends_by_name(backend):
    """The C++ CPU kernels (float32, float64) compute on the bfloat16-rounded values in float32;
    the reference computes in bfloat16: both give nn.LSTM's dtypes and values."""
    m, ref = _pair(dict(num_layers=2), "cpu")
    m.backend = backend
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(4))
    _compare(m, ref, (x,), "cpu", torch.bfloat16)


def test_dtype_check_outside_autocast_still_raises():
    m = lstm_fused.LSTM(I, H)
    with pytest.raises((TypeError, ValueError), match="dtype|type"):
        m(torch.randn(T, B, I, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        with pytest.raises((TypeError, ValueError), match="dtype|type"):
            m(torch.randn(T, B, I, dtype=torch.bfloat16))


def test_float64_is_left_alone():
    m, ref = _pair(dict(), "cpu")
    m.double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (h, c) = m(x)
    assert y.dtype == h.dtype == c.dtype == torch.float64
    y_ref, _ = ref.double()(x)
    torch.testing.assert_close(y, y_ref, **tol("lstm", torch.float64))
