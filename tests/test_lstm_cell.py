"""lstm_fused.LSTMCell against nn.LSTMCell (and the reference for peepholes)."""

import pytest
import torch
from torch import nn

import lstm_fused

from backends import cases
from helpers import assert_close

BACKENDS = cases("lstm_layer", ["cpu", "reference"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sizes", [(13, 37, 3), (1, 1, 1), (8, 16, 0)])
def test_cell_matches_nn(backend, dtype, bias, sizes):
    I, H, B = sizes
    torch.manual_seed(0)
    ref = nn.LSTMCell(I, H, bias=bias, dtype=dtype)
    ours = lstm_fused.LSTMCell(I, H, bias=bias, dtype=dtype, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, I, dtype=dtype, requires_grad=True)
    h = torch.randn(B, H, dtype=dtype, requires_grad=True)
    c = torch.randn(B, H, dtype=dtype, requires_grad=True)
    for hx in (None, (h, c)):
        h_r, c_r = ref(x, hx)
        h_o, c_o = ours(x, hx)
        assert_close(h_o, h_r)
        assert_close(c_o, c_r)
        inputs = [x] + ([h, c] if hx else []) + list(ref.parameters())
        g_r = torch.autograd.grad(h_r.sum() + 3 * c_r.sum(), inputs, allow_unused=False)
        inputs_o = [x] + ([h, c] if hx else []) + list(ours.parameters())
        g_o = torch.autograd.grad(h_o.sum() + 3 * c_o.sum(), inputs_o)
        for a, e in zip(g_o, g_r):
            assert_close(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_unbatched(backend):
    torch.manual_seed(0)
    ref = nn.LSTMCell(5, 7, dtype=torch.float64)
    ours = lstm_fused.LSTMCell(5, 7, dtype=torch.float64, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, dtype=torch.float64)
    hx = (torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64))
    for a, e in zip(ours(x, hx), ref(x, hx)):
        assert a.shape == (7,)
        assert_close(a, e)
    for a, e in zip(ours(x), ref(x)):
        assert_close(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_peephole_matches_reference(backend):
    torch.manual_seed(0)
    cell = lstm_fused.LSTMCell(5, 7, peephole=True, dtype=torch.float64, backend=backend)
    with torch.no_grad():
        for g in ("ci", "cf", "co"):
            getattr(cell, f"weight_{g}").uniform_(-1, 1)
    x = torch.randn(3, 5, dtype=torch.float64)
    h, c = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    h1, c1 = cell(x, (h, c))
    w_peep = torch.stack([cell.weight_ci, cell.weight_cf, cell.weight_co])
    h2, c2 = lstm_fused.reference.lstm_cell(
        x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh, None, w_peep
    )
    assert_close(h1, h2)
    assert_close(c1, c2)
