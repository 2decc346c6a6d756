"""What the one-step call path keeps between calls is never stale: the LSTMCell's weight views
(lstm_fused.functional.kept_weights) follow every change of the parameters, in-place writes
through .data included; the backend a call resolves to follows the switches."""

import pytest
import torch
from torch import nn

import lstm_fused
from lstm_fused import switches
from lstm_fused.ops import registry

from helpers import assert_close


def _twins():
    torch.manual_seed(0)
    ref = nn.LSTMCell(5, 7)
    cell = lstm_fused.LSTMCell(5, 7, backend="cpu")
    cell.load_state_dict(ref.state_dict())
    return ref, cell


@pytest.mark.parametrize(
    "change",
    ["in_place", "through_data", "data_assigned", "parameter_replaced", "bias_through_data"],
)
def test_cell_follows_every_weight_change_without_grad(change):
    ref, cell = _twins()
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    with torch.no_grad():
        for _ in range(2):  # the second call reuses what the first one kept
            assert_close(cell(x, (h, c))[0], ref(x, (h, c))[0], torch.float32)
        new_w = torch.randn(28, 7)
        for m in (ref, cell):
            if change == "in_place":
                m.weight_hh.copy_(new_w)
            elif change == "through_data":  # no version counter sees this one
                m.weight_hh.data.copy_(new_w)
            elif change == "data_assigned":
                m.weight_hh.data = new_w.clone()
            elif change == "parameter_replaced":
                m.weight_hh = nn.Parameter(new_w.clone())
            else:
                m.bias_ih.data.add_(1.0)
        for _ in range(2):
            assert_close(cell(x, (h, c))[0], ref(x, (h, c))[0], torch.float32)


def test_cell_gradients_after_no_grad_calls():
    """Views kept by a no_grad call are not used when autograd records: gradients reach the
    parameters."""
    ref, cell = _twins()
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    with torch.no_grad():
        cell(x, (h, c))
    for m in (ref, cell):
        m(x, (h, c))[0].square().sum().backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert_close(getattr(cell, name).grad, getattr(ref, name).grad, torch.float32, msg=name)


def test_resolve_follows_the_backend_switch():
    x = torch.randn(2, 3)
    features = dict(proj=False, peephole=False, lengths=False)

    def resolved():
        return registry.resolve("auto", "lstm_layer", x.device, x.dtype, **features).backend

    with switches.override(backend=""):
        assert resolved() == "cpu"
        with switches.override(backend="reference"):
            assert resolved() == "reference"
        assert resolved() == "cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        registry.resolve("nope", "lstm_layer", x.device, x.dtype, **features)
    with pytest.raises(ValueError, match="backend must be one of"):
        registry.resolve(["cpu"], "lstm_layer", x.device, x.dtype, **features)
