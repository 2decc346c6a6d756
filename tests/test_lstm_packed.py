"""PackedSequence in and out, and the lengths argument of the layer op."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_fused

from backends import cases
from helpers import assert_close, nn_lstm_twins

BACKENDS = cases("lstm_layer", ["cpu", "reference"])


def _pair(dtype, backend, **kw):
    return nn_lstm_twins(6, 10, dtype, backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(num_layers=2, bidirectional=True),
        dict(bidirectional=True, proj_size=4, batch_first=True),
    ],
    ids=["plain", "L2bi", "bi-proj-bf"],
)
def test_packed_matches_nn_lstm(backend, dtype, enforce_sorted, kw):
    ref, ours = _pair(dtype, backend, **kw)
    T, B = 7, 5
    lengths = torch.tensor([7, 5, 5, 2, 1]) if enforce_sorted else torch.tensor([2, 7, 1, 5, 5])
    bf = kw.get("batch_first", False)
    x = torch.randn((B, T, 6) if bf else (T, B, 6), dtype=dtype, requires_grad=True)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    R = kw.get("proj_size", 0) or 10
    h0 = torch.randn(L * D, B, R, dtype=dtype, requires_grad=True)
    c0 = torch.randn(L * D, B, 10, dtype=dtype, requires_grad=True)

    def run(m):
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
        out, (h, c) = m(packed, (h0, c0))
        assert isinstance(out, nn.utils.rnn.PackedSequence)
        return out, h, c

    (o_r, h_r, c_r), (o_o, h_o, c_o) = run(ref), run(ours)
    assert torch.equal(o_o.batch_sizes, o_r.batch_sizes)
    for attr in ("sorted_indices", "unsorted_indices"):
        a, e = getattr(o_o, attr), getattr(o_r, attr)
        assert (a is None and e is None) or torch.equal(a, e)
    assert_close(o_o.data, o_r.data, msg="packed data")
    assert_close(h_o, h_r, msg="h_n")
    assert_close(c_o, c_r, msg="c_n")
    gw = torch.randn_like(o_r.data)
    params_r, params_o = [x, h0, c0, *ref.parameters()], [x, h0, c0, *ours.parameters()]
    g_r = torch.autograd.grad((o_r.data * gw).sum() + h_r.sum() + 2 * c_r.sum(), params_r)
    g_o = torch.autograd.grad((o_o.data * gw).sum() + h_o.sum() + 2 * c_o.sum(), params_o)
    for i, (a, e) in enumerate(zip(g_o, g_r)):
        assert_close(a, e, msg=f"gradient {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_output_is_zero_and_lengths_zero_keep_state(backend):
    """The layer op with lengths: padding outputs zero, a length-0 sequence keeps h0/c0."""
    torch.manual_seed(0)
    D, T, B, I, H = 2, 5, 4, 3, 6
    x = torch.randn(T, B, I, dtype=torch.float64)
    x[:, 3] = float("nan")  # a length-0 sequence: its inputs must never be read into anything
    lengths = torch.tensor([5, 2, 1, 0])
    h0 = torch.randn(D, B, H, dtype=torch.float64)
    c0 = torch.randn(D, B, H, dtype=torch.float64)
    w_ih = torch.randn(D, 4 * H, I, dtype=torch.float64)
    w_hh = torch.randn(D, 4 * H, H, dtype=torch.float64)
    bias = torch.randn(D, 4 * H, dtype=torch.float64)
    y, h_n, c_n = lstm_fused.functional.lstm_layer(
        x, h0, c0, w_ih, w_hh, bias, lengths=lengths, backend=backend
    )
    y_ref, h_ref, c_ref = lstm_fused.reference.lstm_layer(
        x.nan_to_num(0.0), h0, c0, w_ih, w_hh, bias, lengths=lengths
    )
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(y[n:, b], torch.zeros_like(y[n:, b]))
    assert torch.equal(h_n[:, 3], h0[:, 3]) and torch.equal(c_n[:, 3], c0[:, 3])
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_roundtrip_gives_padded_zeros(backend):
    _, ours = _pair(torch.float32, backend, bidirectional=True)
    x = torch.randn(6, 3, 6)
    lengths = torch.tensor([6, 4, 1])
    out, _ = ours(pack_padded_sequence(x, lengths))
    padded, out_len = pad_packed_sequence(out)
    assert torch.equal(out_len, lengths)
    assert padded.shape == (6, 3, 20)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_padding_never_reaches_gradients(backend):
    torch.manual_seed(0)
    D, T, B, I, H = 2, 4, 3, 3, 5
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 0])
    for b, n in enumerate(lengths.tolist()):
        x[n:, b] = float("nan")
    x.requires_grad_(True)
    ws = [
        torch.randn(D, 4 * H, I, dtype=torch.float64, requires_grad=True),
        torch.randn(D, 4 * H, H, dtype=torch.float64, requires_grad=True),
        torch.randn(D, 4 * H, dtype=torch.float64, requires_grad=True),
    ]
    h0 = torch.randn(D, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(D, B, H, dtype=torch.float64, requires_grad=True)
    y, h_n, c_n = lstm_fused.functional.lstm_layer(x, h0, c0, *ws, lengths=lengths, backend=backend)
    grads = torch.autograd.grad(y.sum() + h_n.sum() + c_n.sum(), [x, h0, c0, *ws])
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(grads[0][n:, b], torch.zeros_like(grads[0][n:, b]))
    for g in grads:
        assert torch.isfinite(g).all()
