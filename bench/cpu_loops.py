"""The CPU forward's time loops side by side: `python -m bench.cpu_loops [--fwd-bwd] [--reps N]`.

csrc/cpu/lstm_layer_cpu.cpp has two loops: rows and fused. The fused one does the
input projection by one GEMM before the loop (fused_gemm) or in its register tiles
(fused_input). The switch cpu_loop (lstm_fused.switches) picks one. This times each, and
nn.LSTM, on the same module weights and input,
interleaved call by call in one process so that a slow spell of the machine hits all of them
alike; it prints the median of each and its ratio to nn.LSTM. Forward in no_grad by default,
forward+backward with --fwd-bwd. Outputs are checked against nn.LSTM before timing.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import lstm_fused
from lstm_fused import switches

from .timing import interleaved_medians

# (B, T, I, H, num_layers, bidirectional): the target shape first, then the small
# shapes of `python -m bench`.
SHAPES = [
    (32, 100, 256, 512, 2, False),
    (16, 50, 128, 128, 1, False),
    (4, 50, 128, 128, 1, False),
    (64, 50, 128, 128, 1, False),
    (16, 50, 128, 64, 1, False),
    (16, 50, 128, 256, 1, False),
    (16, 50, 128, 128, 1, True),
]
LOOPS = ("rows", "fused_gemm", "fused_input")


def _call(module, x, fwd_bwd: bool):
    if not fwd_bwd:
        with torch.no_grad():
            return module(x)
    y, (h, c) = module(x)
    torch.autograd.grad(y.sum() + c.sum(), [x, *module.parameters()])
    return y, (h, c)


def run_shape(shape, reps: int, fwd_bwd: bool) -> dict:
    B, T, I, H, L, bi = shape
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, L, bidirectional=bi)
    ours = lstm_fused.LSTM(I, H, L, bidirectional=bi, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, requires_grad=fwd_bwd)
    want = _call(ref, x, False)[0]

    def run(name: str):
        """One call of nn.LSTM or of lstm_fused with the CPU loop `name`."""
        if name == "nn.LSTM":
            return _call(ref, x, fwd_bwd)
        with switches.override(cpu_loop=name):
            return _call(ours, x, fwd_bwd)

    names = ("nn.LSTM",) + LOOPS
    for loop in LOOPS:
        with switches.override(cpu_loop=loop):
            torch.testing.assert_close(_call(ours, x, False)[0], want, rtol=1e-4, atol=1e-5)
    return interleaved_medians({name: (lambda name=name: run(name)) for name in names},
                               reps, warmup=3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fwd-bwd", action="store_true", help="time forward+backward")
    parser.add_argument("--reps", type=int, default=0,
                        help="timed calls per loop (default: 15 for H >= 512, else 60)")
    args = parser.parse_args(argv)
    mode = "forward+backward" if args.fwd_bwd else "forward, no_grad"
    print(f"{mode}; {torch.get_num_threads()} threads; p50 ms (speedup over nn.LSTM)")
    for shape in SHAPES:
        reps = args.reps or (15 if shape[3] >= 512 else 60)
        med = run_shape(shape, reps, args.fwd_bwd)
        B, T, I, H, L, bi = shape
        cells = "  ".join(f"{k} {v:.2f} ({med['nn.LSTM'] / v:.2f}x)" for k, v in med.items())
        print(f"B={B},T={T},I={I},H={H},L={L},D={2 if bi else 1}: {cells}", flush=True)


if __name__ == "__main__":
    main()
