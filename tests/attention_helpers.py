"""Shared pieces of the attention tests: random lengths with 0, 1 and T, poisoned padding,
and a switch that makes every uninitialised allocation NaN (so an output element a kernel
forgets to write fails the comparison)."""
import contextlib
import os

import pytest
import torch
from torch.utils import deterministic


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


def triton_device():
    """Where the Triton kernels run: "cuda", or "cpu" under Triton's interpreter; skips the
    test when Triton is missing, or when there is neither a GPU nor the interpreter."""
    pytest.importorskip("triton", reason="Triton is not installed")
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")
    return "cpu"


def spy_calls(monkeypatch, cls, method):
    """Wraps cls.method; returns the list that records, per call, whether it returned a value
    (not None)."""
    calls = []
    original = getattr(cls, method)

    def spy(self, *args):
        out = original(self, *args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(cls, method, spy)
    return calls


TOL = {
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.float32: dict(atol=2e-6, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=2e-2),
}
