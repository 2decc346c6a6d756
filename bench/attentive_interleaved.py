"""The attentive LSTM against nn.LSTM + unfused pooling, interleaved call by call:
`python -m bench.attentive_interleaved [--reps N]`.

The same two models as the `attentive_lstm` family of `python -m bench` (bench/workloads/
attentive.py: "torch.unfused" and lstm_fused.AttentiveLSTM on backend "auto"), on one state and
one padded batch (lengths in [1, T], one full row), timed alternately in one process so that a
slow spell of this VM hits both alike (the suite times one provider after the other). Forward
under no_grad, and forward+backward of random gradients of the context and the weights to x
and every parameter. Prints medians and the ratio; checks outputs and gradients first.
"""
from __future__ import annotations

import argparse

import torch

import lstm_fused

from .timing import interleaved_medians
from .workloads.attentive import UnfusedAttentiveLSTM

# (B, T, I, H, L, A): the attentive_lstm shapes of `python -m bench` on the CPU.
SHAPES = [(32, 100, 256, 512, 2, 128), (8, 100, 256, 512, 2, 128), (32, 100, 256, 128, 2, 128)]


def run_shape(shape, reps: int) -> dict:
    B, T, I, H, L, A = shape
    torch.manual_seed(0)
    base = UnfusedAttentiveLSTM(I, H, A, L)
    ours = lstm_fused.AttentiveLSTM(I, H, A, num_layers=L)
    ours.load_state_dict(base.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    grads = (torch.randn(B, H), torch.randn(B, T))

    def fwd(model):
        with torch.no_grad():
            return model(x, lengths)[:2]

    def fwd_bwd(model):
        out = model(x, lengths)[:2]
        return torch.autograd.grad(out, [x] + list(model.parameters()), grads)

    for a, b in zip(fwd(base), fwd(ours)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(fwd_bwd(base), fwd_bwd(ours)):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    models = {"torch.unfused": base, "lstm_fused": ours}
    return {mode: interleaved_medians({name: (lambda m=m: fn(m)) for name, m in models.items()},
                                      reps, warmup=2)
            for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="timed calls per model and mode")
    args = parser.parse_args(argv)
    print(f"{torch.get_num_threads()} threads; float32; p50 ms (speedup over torch.unfused)")
    for shape in SHAPES:
        res = run_shape(shape, args.reps)
        B, T, I, H, L, A = shape
        cells = "  ".join(
            f"{mode}: torch.unfused {m['torch.unfused']:.2f}, lstm_fused {m['lstm_fused']:.2f} "
            f"({m['torch.unfused'] / m['lstm_fused']:.2f}x)" for mode, m in res.items())
        print(f"B={B},T={T},I={I},H={H},L={L},A={A}: {cells}", flush=True)


if __name__ == "__main__":
    main()
