"""Test helpers: comparisons of outputs and gradients, random inputs with edge-case lengths,
poisoned padding and NaN-filled allocations (so an element a kernel forgets to write, or
padding it reads, fails the comparison). Tolerances: tests/tolerances.py."""

from __future__ import annotations

import contextlib

import torch
from torch.utils import deterministic

from tolerances import tol


def assert_close(actual, expected, dtype=None, msg="", kind="lstm"):
    dtype = dtype or expected.dtype
    torch.testing.assert_close(actual, expected, **tol(kind, dtype), msg=lambda m: f"{msg}: {m}")


def assert_close_scaled(actual, expected, dtype, what, factor=1.0, kind="cuda_kernel"):
    """actual (any device, dtype) against the float64 `expected`: finite, within tol(kind,
    dtype) with atol times max(1, max |expected|), both times `factor`."""
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (unwritten?) {actual}"
    t = tol(kind, dtype)
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().cpu().double(),
        expected.detach(),
        rtol=factor * t["rtol"],
        atol=factor * t["atol"] * scale,
        msg=lambda m: f"{what} ({dtype}): {m}",
    )


# The layer configurations of the CUDA kernel tests, name: (T, B, I, H, P, D, peephole,
# lengths), on a GPU (tests/test_cuda_lstm.py) and emulated on the CPU, smaller where the
# emulated cooperative launches are slow (tests/test_cuda_emulated.py).
_LAYER_CONFIGS = {
    "uni": ((7, 3, 5, 16, 0, 1, False, None), (5, 3, 5, 8, 0, 1, False, None)),
    "bi": ((6, 4, 5, 16, 0, 2, False, None), (5, 4, 5, 8, 0, 2, False, None)),
    "bi-lengths": (
        (6, 4, 5, 16, 0, 2, False, [6, 1, 0, 4]),
        (6, 4, 5, 8, 0, 2, False, [6, 1, 0, 4]),
    ),
    "proj": ((5, 3, 4, 16, 8, 2, False, [5, 2, 3]),) * 2,
    "peephole": ((5, 3, 4, 16, 0, 2, True, [2, 5, 0]), (5, 3, 4, 8, 0, 2, True, [2, 5, 0])),
    "odd-H": ((4, 2, 3, 5, 0, 2, True, None),) * 2,  # H not a multiple of the vector width
    "all": (
        (6, 5, 6, 24, 12, 2, True, [6, 3, 1, 0, 5]),
        (5, 5, 6, 16, 4, 2, True, [5, 3, 1, 0, 4]),
    ),
}


def layer_configs(where):
    """{name: layer configuration} for where = "gpu" or "emulated"."""
    index = {"gpu": 0, "emulated": 1}[where]
    return {name: pair[index] for name, pair in _LAYER_CONFIGS.items()}


def layer_args(cfg, dtype, device="cpu", seed=0, lengths_dtype=torch.int64):
    """Random arguments of one layer call (csrc/lstm_layer_args.h) as a dict, drawn in float64
    and rounded to dtype: cfg = (T, B, I, H, P, D, peephole, lengths list or None);
    x (T, B, I), h0 (D, B, R), c0 (D, B, H), R = P or H."""
    T, B, I, H, P, D, peephole, lengths = cfg
    R = P if P else H
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    return dict(
        x=rnd(T, B, I, scale=1.0),
        h0=rnd(D, B, R),
        c0=rnd(D, B, H),
        w_ih=rnd(D, 4 * H, I),
        w_hh=rnd(D, 4 * H, R),
        bias=rnd(D, 4 * H),
        w_hr=rnd(D, P, H) if P else None,
        w_peep=rnd(D, 3, H) if peephole else None,
        lengths=None
        if lengths is None
        else torch.tensor(lengths, dtype=lengths_dtype, device=device),
    )


def float64_cpu(args, requires_grad=False):
    """The layer arguments as float64 CPU leaves (lengths as they are, on the CPU)."""
    out = {}
    for k, v in args.items():
        if v is None or k == "lengths":
            out[k] = None if v is None else v.cpu()
        else:
            out[k] = v.detach().cpu().double().requires_grad_(requires_grad)
    return out


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


def lengths_with_edges(B, T, generator=None):
    """(B,) int64 lengths: 0, 1 and T first, random in [0, T] after."""
    edges = torch.tensor([0, 1, T][:B], dtype=torch.int64)
    rest = torch.randint(0, T + 1, (max(0, B - 3),), generator=generator)
    return torch.cat([edges, rest])


def poison_padding(x, lengths, values=(float("nan"), float("inf"), float("-inf"))):
    """x (B, T, ...) with every padded step t >= lengths[b] overwritten by nan / inf / -inf."""
    x = x.clone()
    T = x.shape[1]
    for b, n in enumerate(lengths.tolist()):
        if n < T:
            x[b, n:] = values[b % len(values)]
    return x


@contextlib.contextmanager
def nan_filled_empty():
    """Every torch.empty / at::empty returns NaN-filled memory while active."""
    old_det = torch.are_deterministic_algorithms_enabled()
    old_fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        deterministic.fill_uninitialized_memory = old_fill


def spy_calls(monkeypatch, obj, method):
    """Wraps obj.method (obj a class, or an instance's class); returns the list that records,
    per call, whether it returned a value (not None)."""
    cls = obj if isinstance(obj, type) else type(obj)
    calls = []
    original = getattr(cls, method)

    def spy(self, *args):
        out = original(self, *args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(cls, method, spy)
    return calls
