"""CUDA graphs: lstm_fused.LSTM's forward and backward, with resets and lengths, run with no host
synchronisation, so that torch.cuda.graphs and torch.compile(mode="reduce-overhead") capture
them; replays give eager's numbers.

On a GPU (skipped without one; tools/gpu_session.sh runs them): the calls run eagerly under
torch.cuda.set_sync_debug_mode("error") (any synchronising CUDA call raises), are captured
with torch.cuda.graph (a synchronisation inside capture is an error too) and replayed on new
inputs copied into the captured ones.

On the CPU: the same calls (without lengths, whose range check reads CPU lengths on the host,
where that is free) under CUDA capture's rules (torch.cuda.is_current_stream_capturing reports
True) with every host read of a tensor refused (no_host_reads below: the ATen operators that
read a value back to the host, and Tensor.tolist / cpu / numpy): the Python path of the module
and of lstm_fused.functional.lstm decides nothing from tensor values. The CUDA C++ host code
reads no tensor values either (its lengths and resets go to the kernels as device pointers).
A PackedSequence input cannot be captured (its batch sizes are a host tensor): the module
says so under capture.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lstm_fused
from lstm_fused import functional

from helpers import assert_close

HAS_CUDA = torch.cuda.is_available() and "cuda" in lstm_fused.available_backends()
needs_gpu = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA device and lstm_fused's CUDA kernels"
)

# ATen operators that read a tensor's values back to the host (a device synchronisation on a
# GPU): item / bool / int / float (_local_scalar_dense), and ops whose output shape depends
# on values.
_HOST_READS = {
    "_local_scalar_dense",
    "is_nonzero",
    "item",
    "equal",
    "nonzero",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "repeat_interleave",
}


class _NoHostReads(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _HOST_READS:
            raise AssertionError(f"host read of a tensor value: aten.{name}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_reads(monkeypatch):
    """Within the block: code sees CUDA capture in progress, and any read of a tensor's values
    on the host raises AssertionError."""
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    for method in ("tolist", "cpu", "numpy"):

        def refuse(self, *args, _method=method, **kwargs):
            raise AssertionError(f"host read of a tensor value: Tensor.{_method}")

        monkeypatch.setattr(torch.Tensor, method, refuse)
    try:
        with _NoHostReads():
            yield
    finally:
        monkeypatch.undo()


def _problem(device, dtype=torch.float32, T=7, B=3, I=5, H=6, layers=2, seed=0):
    """An LSTM, its input (T, B, I), states, resets (T, B) with resets inside every row but
    one, lengths (B,) with a short row, and output gradients, all on `device`."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lstm = lstm_fused.LSTM(I, H, layers).to(device=device, dtype=dtype)

    def rnd(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(device, dtype)

    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[2, 0] = resets[5, 1] = resets[3, 1] = True
    lengths = torch.tensor([T, T - 2, 3][:B], dtype=torch.int64)
    return dict(
        lstm=lstm,
        x=rnd(T, B, I),
        h0=rnd(layers, B, H),
        c0=rnd(layers, B, H),
        resets=resets.to(device),
        lengths=lengths.to(device),
        gy=rnd(T, B, H),
        gh=rnd(layers, B, H),
        gc=rnd(layers, B, H),
    )


def _module_step(p, x, h0, c0):
    """The module's forward with resets, then the gradients of x, h0, c0 and every parameter
    for fixed output gradients."""
    lstm = p["lstm"]
    y, (h, c) = lstm(x, (h0, c0), resets=p["resets"])
    grads = torch.autograd.grad(
        (y, h, c), (x, h0, c0, *lstm.parameters()), (p["gy"], p["gh"], p["gc"])
    )
    return (y, h, c, *grads)


def _functional_step(p, x, h0, c0, with_lengths=True):
    """lstm_fused.functional.lstm with resets (and lengths), forward and backward."""
    lstm = p["lstm"]
    weights = [lstm.layer_weights(k) for k in range(lstm.num_layers)]
    y, h, c = functional.lstm(
        x, h0, c0, weights, p["lengths"] if with_lengths else None, resets=p["resets"]
    )
    grads = torch.autograd.grad(
        (y, h, c), (x, h0, c0, *lstm.parameters()), (p["gy"], p["gh"], p["gc"])
    )
    return (y, h, c, *grads)


STEPS = {"module": _module_step, "functional_lengths": _functional_step}
# Without lengths: outside capture the range check of lengths reads them on the host (free for
# CPU lengths, one synchronisation for CUDA lengths); under capture on CUDA it is a device-side
# assert (lstm_fused/_checks.py), which the capture tests run.
STEPS_WITHOUT_LENGTHS = {
    "module": _module_step,
    "functional": lambda *args: _functional_step(*args, with_lengths=False),
}


def _leaves(p):
    return [p[k].detach().clone().requires_grad_() for k in ("x", "h0", "c0")]


@pytest.mark.parametrize("step", sorted(STEPS_WITHOUT_LENGTHS))
def test_no_host_reads_on_the_capture_path(step, monkeypatch):
    """CPU tensors, CUDA capture's rules: forward and backward read no tensor value on the
    host, and give the same numbers as the ordinary call."""
    p = _problem("cpu")
    want = STEPS_WITHOUT_LENGTHS[step](p, *_leaves(p))
    with no_host_reads(monkeypatch):
        got = STEPS_WITHOUT_LENGTHS[step](p, *_leaves(p))
    for g, w in zip(got, want):
        assert_close(g, w, torch.float32)


def test_no_host_reads_refuses_a_host_read(monkeypatch):
    """The check itself: a host read inside it fails."""
    with pytest.raises(AssertionError, match="host read"):
        with no_host_reads(monkeypatch):
            bool(torch.ones(2).any())
    with pytest.raises(AssertionError, match="host read"):
        with no_host_reads(monkeypatch):
            torch.arange(3).tolist()


@needs_gpu
@pytest.mark.parametrize("step", sorted(STEPS_WITHOUT_LENGTHS))
def test_eager_cuda_call_does_not_synchronise(step):
    """Eager forward and backward with resets: no synchronising CUDA call."""
    p = _problem("cuda")
    leaves = _leaves(p)
    STEPS_WITHOUT_LENGTHS[step](p, *leaves)  # the first call loads kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        STEPS_WITHOUT_LENGTHS[step](p, *leaves)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_gpu
@pytest.mark.parametrize("step", sorted(STEPS))
def test_cuda_graph_capture_and_replay(step):
    """torch.cuda.graph captures forward and backward; a replay on new inputs (copied into
    the captured ones) gives the eager call's outputs and gradients."""
    p = _problem("cuda")
    static = _leaves(p)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture, as torch.cuda.graphs asks
        for _ in range(3):
            STEPS[step](p, *static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = STEPS[step](p, *static)
    fresh = _problem("cuda", seed=1)
    with torch.no_grad():
        for s, k in zip(static, ("x", "h0", "c0")):
            s.copy_(fresh[k])
    graph.replay()
    torch.cuda.synchronize()
    want = STEPS[step](p, *_leaves({k: fresh[k] for k in ("x", "h0", "c0")}))
    for g, w in zip(out, want):
        assert_close(g, w, torch.float32)


@needs_gpu
def test_compile_reduce_overhead_matches_eager():
    """torch.compile(mode="reduce-overhead") (CUDA graphs through Inductor) of the module with
    resets, forward and backward, over several calls, matches eager."""
    p = _problem("cuda")
    lstm = p["lstm"]

    def step(x, h0, c0):
        y, (h, c) = lstm(x, (h0, c0), resets=p["resets"])
        return (y * p["gy"]).sum() + (h * p["gh"]).sum() + (c * p["gc"]).sum()

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    for seed in range(3):
        fresh = _problem("cuda", seed=seed + 1)
        eager_in, comp_in = _leaves(fresh), _leaves(fresh)
        want = torch.autograd.grad(step(*eager_in), eager_in)
        got = torch.autograd.grad(compiled(*comp_in), comp_in)
        for g, w in zip(got, want):
            assert_close(g, w, torch.float32)


@needs_gpu
def test_packed_sequence_under_capture_is_refused():
    """A PackedSequence's batch sizes live on the host: under capture the module raises a
    RuntimeError that says so, instead of a CUDA error from inside the copy."""
    from torch.nn.utils.rnn import pack_padded_sequence

    p = _problem("cuda")
    packed = pack_padded_sequence(p["x"], p["lengths"].cpu(), enforce_sorted=False)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="PackedSequence input cannot be captured"):
        with torch.cuda.graph(graph):
            p["lstm"](packed)
