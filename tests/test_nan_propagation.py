"""NaN and infinity in the input reach the outputs as in nn.LSTM, never as a plausible number:
the CPU kernels' fast exp clamps its argument, which would turn a NaN pre-activation into a
finite gate (csrc/cpu/lstm_cell_vec.h passes NaN lanes through). Checked for every CPU variant
this machine runs, forward and inference, and for the frozen LSTM."""

import pytest
import torch
from torch import nn

import lstm_fused
from lstm_fused import _C


def _bad_input(value: float) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(7, 5, 6)
    x[2, 1, 3] = value  # row 1 from step 2 on
    x[5, 4, 0] = value  # row 4 from step 5 on
    return x


def _pattern(module: nn.Module, x: torch.Tensor, grad: bool):
    with torch.set_grad_enabled(grad):
        y, (h, c) = module(x.requires_grad_(grad))
    return [t.isnan() for t in (y, h, c)], [t.isinf() for t in (y, h, c)]


@pytest.mark.parametrize("capability", _C.cpu_capabilities())
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "forward"])
def test_nan_and_inf_reach_the_outputs_as_in_nn_lstm(capability, value, grad):
    ref = nn.LSTM(6, 9, 2, bidirectional=True)
    ours = lstm_fused.LSTM(6, 9, 2, bidirectional=True, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = _bad_input(value)
    nan_r, inf_r = _pattern(ref, x.clone(), grad)
    _C.set_cpu_capability(capability)
    try:
        nan_o, inf_o = _pattern(ours, x.clone(), grad)
    finally:
        _C.set_cpu_capability("auto")
    if value != value:
        assert any(m.any() for m in nan_r)  # the case makes NaN in nn.LSTM
    for a, e in zip(nan_o + inf_o, nan_r + inf_r):
        assert torch.equal(a, e)


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16, torch.qint8])
def test_frozen_lstm_passes_nan_through(weights):
    ref = nn.LSTM(6, 9, 2)
    frozen = lstm_fused.freeze_for_inference(ref, weights=weights)
    x = _bad_input(float("nan"))
    nan_r, _ = _pattern(ref, x.clone(), False)
    nan_o, _ = _pattern(frozen, x.clone(), False)
    for a, e in zip(nan_o, nan_r):
        assert torch.equal(a, e)
