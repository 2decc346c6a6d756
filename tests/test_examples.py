"""The examples (examples/forecast.py, classify.py, charlm.py) in their --smoke size, and what
they rely on: the fused side trains like nn.LSTM step by step (loss differences of the size
float32 rounding gives nn.LSTM against itself with weights one ulp off), beats the data's
naive baseline, and a model trained with lstm_fused, exported to ONNX, runs in onnxruntime
with eager's numbers.
"""
import copy

import pytest
import torch
from torch import nn

import lstm_fused


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_bias_gradients_accumulate_and_clip_like_nn(bidirectional):
    """bias_ih and bias_hh get gradients of their own (not two views of one buffer): two
    backward calls accumulate like nn.LSTM's, and clip_grad_norm_ scales each once."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, 2, bidirectional=bidirectional)
    fused = lstm_fused.replace_lstm(copy.deepcopy(ref), backend="cpu")
    x = torch.randn(5, 2, 3)
    for model in (ref, fused):
        for _ in range(2):
            (model(x)[0] * 10).pow(2).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(getattr(fused, name).grad, p.grad, rtol=1e-5, atol=1e-6,
                                   msg=name)
