"""The threading of the CPU time loops (csrc/cpu/parallel_time_loop.h) against the float64
reference, with two threads and the busy-machine guard off (the switch cpu_threads="all": on a
shared machine it would run every call on one thread): B = 66 takes the split by batch rows (no
per-step barrier; 33 rows a thread, eight tiles of 4 and one of 1), B = 5 the split by panels of
hidden units with a barrier a step (fewer than 32 rows a thread). Forward, inference and backward, with
lengths, both directions; and with the guard on, the same answers."""

import contextlib
import os
import time

import pytest
import torch

import lstm_fused
from helpers import assert_close


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _check_against_reference(B: int) -> None:
    torch.manual_seed(B)
    # H = 130: 8 full panels of 16 float units and one of 2 (and column panels of 64, 64 and
    # 2 in the backward); enough multiply-adds a step (B * 4H * (I + H) >= 2^18) for threads.
    ours = lstm_fused.LSTM(7, 130, 1, bidirectional=True, backend="cpu")
    ref = lstm_fused.LSTM(7, 130, 1, bidirectional=True, backend="reference", dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(6, B, 7, requires_grad=True)
    x64 = x.detach().double().requires_grad_(True)
    lengths = torch.randint(1, 7, (B,))
    lengths[0] = 6
    pack = torch.nn.utils.rnn.pack_padded_sequence
    y, (h, c) = ours(pack(x, lengths, enforce_sorted=False))
    y_r, (h_r, c_r) = ref(pack(x64, lengths, enforce_sorted=False))
    for a, e in ((y.data, y_r.data), (h, h_r), (c, c_r)):
        assert_close(a, e.float())
    gy, gh, gc = torch.randn_like(y.data), torch.randn_like(h), torch.randn_like(c)
    g = torch.autograd.grad(
        (y.data * gy).sum() + (h * gh).sum() + (c * gc).sum(), [x, *ours.parameters()]
    )
    g_r = torch.autograd.grad(
        (y_r.data * gy.double()).sum() + (h_r * gh.double()).sum() + (c_r * gc.double()).sum(),
        [x64, *ref.parameters()],
    )
    for a, e in zip(g, g_r):
        assert_close(a, e.float())
    with torch.no_grad():
        y_i = ours(pack(x, lengths, enforce_sorted=False))[0]
    assert_close(y_i.data, y.data.detach())


@pytest.mark.parametrize("B", [66, 5], ids=["rows", "panels"])
def test_threaded_time_loops_match_reference(B, two_threads):
    with lstm_fused.switches.override(cpu_threads="all"):
        _check_against_reference(B)


@pytest.mark.parametrize("B", [66, 5], ids=["rows", "panels"])
def test_busy_guard_keeps_the_answers(B, two_threads):
    _check_against_reference(B)
    # The guard restores the calling thread's thread count.
    assert torch.get_num_threads() == 2


def _runnable_threads() -> int:
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


@contextlib.contextmanager
def _busy_machine():
    """More threads runnable than there are CPUs (one spinning process a CPU, and one more),
    for the block; waits until /proc/loadavg shows them."""
    from bench.load import spinning_load

    cpus = len(os.sched_getaffinity(0))
    with spinning_load(cpus + 1):
        deadline = time.monotonic() + 10
        while _runnable_threads() <= cpus and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _runnable_threads() > cpus, "the spinning processes never showed as runnable"
        time.sleep(0.02)  # past the guard's 10 ms between checks of /proc/loadavg
        yield


@pytest.mark.skipif(
    not os.path.exists("/proc/loadavg"), reason="the busy check reads Linux's /proc/loadavg"
)
def test_a_busy_machine_runs_the_whole_call_on_one_thread(two_threads):
    """While more threads are runnable than there are CPUs, the guard around the public entry
    points (lstm_fused/ops/library.py one_thread_if_busy) gives every parallel region of the
    call one thread, the aten ops between the kernels included (seen from between_layers,
    which runs inside the call); the thread count is 2 again after the call, and with
    cpu_threads="all" it stays 2 inside."""
    torch.manual_seed(0)
    lstm = lstm_fused.LSTM(8, 16, 2, backend="cpu")
    x = torch.randn(5, 3, 8)
    h0 = torch.zeros(2, 3, 16)
    weights = [lstm.layer_weights(k) for k in range(2)]
    seen = []

    def between_layers(y):
        seen.append(torch.get_num_threads())
        return y

    with _busy_machine():
        y, _, _ = lstm_fused.functional.lstm(x, h0, h0, weights, between_layers=between_layers)
        assert torch.get_num_threads() == 2
        with lstm_fused.switches.override(cpu_threads="all"):
            lstm_fused.functional.lstm(x, h0, h0, weights, between_layers=between_layers)
    assert seen == [1, 2]
    assert_close(y, lstm(x)[0])


@pytest.mark.skipif(
    not os.path.exists("/proc/loadavg"), reason="the busy check reads Linux's /proc/loadavg"
)
def test_a_busy_machine_runs_the_layers_backward_on_one_thread(two_threads, monkeypatch):
    """The layer operators' backward (lstm_fused/ops/lstm_layer.py) holds the same guard: its
    own aten ops (here the zero gradient of y, which only h_n's use leaves undefined) see one
    thread while the machine is busy, and two after."""
    from lstm_fused.ops import lstm_layer as layer_ops

    seen = []
    zeros_if_none = layer_ops.zeros_if_none

    def spy(grad, like):
        seen.append(torch.get_num_threads())
        return zeros_if_none(grad, like)

    monkeypatch.setattr(layer_ops, "zeros_if_none", spy)
    lstm = lstm_fused.LSTM(8, 16, backend="cpu")
    x = torch.randn(5, 3, 8, requires_grad=True)
    with _busy_machine():
        _, (h_n, _) = lstm(x)
        h_n.sum().backward()
        assert torch.get_num_threads() == 2
    assert seen and set(seen) == {1}
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("B", [66, 5], ids=["rows", "panels"])
def test_one_and_two_threads_give_the_same_bits(B):
    """The CPU backend's answers do not depend on the thread count (every value is summed in
    the same order whichever thread computes it), so the busy guard switching a call to one
    thread changes no result: forward and every gradient, bit for bit, two layers, both
    directions, lengths."""
    torch.manual_seed(B)
    lstm = lstm_fused.LSTM(7, 130, 2, bidirectional=True, backend="cpu")
    x = torch.randn(6, B, 7, requires_grad=True)
    lengths = torch.randint(1, 7, (B,))
    lengths[0] = 6
    pack = torch.nn.utils.rnn.pack_padded_sequence
    before = torch.get_num_threads()
    answers = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with lstm_fused.switches.override(cpu_threads="all"):
                y, (h, c) = lstm(pack(x, lengths, enforce_sorted=False))
                loss = (y.data * torch.linspace(-1, 1, y.data.numel()).view_as(y.data)).sum()
                grads = torch.autograd.grad(
                    loss + h.sum() + c.square().sum(), [x, *lstm.parameters()]
                )
            answers.append([y.data, h, c, *grads])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*answers):
        torch.testing.assert_close(two, one, rtol=0, atol=0)
