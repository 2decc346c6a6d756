"""Test helpers: tolerances per dtype, comparisons of outputs and gradients."""
from __future__ import annotations

import torch

# Absolute/relative tolerances per dtype for LSTM outputs and gradients of moderate size
# (T <= ~20, values O(1)): float64 compares two exact-to-rounding computations; float32 carries
# about 1e-7 relative rounding per operation through the recurrence.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-9),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}


def assert_close(actual, expected, dtype=None, msg=""):
    dtype = dtype or expected.dtype
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{msg}: {m}")


def grads_of(module, inputs, outputs_fn):
    """Run outputs_fn(), back-propagate a fixed random weighting of every output, and return
    {name: grad} for the module's parameters and the given input tensors."""
    for p in module.parameters():
        p.grad = None
    for t in inputs.values():
        t.grad = None
    outs = outputs_fn()
    gen = torch.Generator().manual_seed(1234)
    loss = 0
    for o in outs:
        w = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device, o.dtype)
        loss = loss + (o * w).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    grads.update({n: t.grad.clone() for n, t in inputs.items()})
    return grads


def nn_lstm_twins(input_size, hidden_size, dtype, backend, **kw):
    """(nn.LSTM, lstm_fused.LSTM) with the same arguments and weights, seeded."""
    from torch import nn

    import lstm_fused

    torch.manual_seed(0)
    ref = nn.LSTM(input_size, hidden_size, dtype=dtype, **kw)
    ours = lstm_fused.LSTM(input_size, hidden_size, dtype=dtype, backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours
