"""Self-attention in training with attention dropout, side by side:
`python -m bench.mhsa_dropout [--reps N] [--p P]`.

nn.MultiheadAttention(E, N, dropout=p) with key_padding_mask against
lstm_fused.MultiheadSelfAttention(E, N, dropout=p) on backend "cpu" (dropout inside the fused
kernel, csrc/attention_dropout.h) and on backend "reference" (plain PyTorch with the same mask:
what "auto" ran in training with dropout before the kernels had it). Forward+backward of a
random output gradient to x and every parameter, on the same weights and a padded batch with
lengths in [1, T], interleaved call by call in one process; prints the median of each and its
ratio to nn. The three use different random draws, so outputs are not compared here: the
kernel's dropout is checked against the reference with the same mask in
tests/test_mhsa_dropout.py, and without dropout against nn in tests/test_mhsa.py.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import lstm_fused

from .timing import interleaved_medians

# (B, T, E, N): the self_attention shape of `python -m bench` (CPU) and a longer sequence.
SHAPES = [(32, 100, 256, 4), (8, 400, 256, 4)]


def run_shape(shape, p: float, reps: int) -> dict:
    B, T, E, N = shape
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(E, N, dropout=p).train()
    ours = lstm_fused.MultiheadSelfAttention(E, N, dropout=p).train()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, E, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    padding = torch.arange(T)[None, :] >= lengths[:, None]
    grad = torch.randn(T, B, E)

    def run(name: str):
        if name == "nn.MultiheadAttention":
            out = theirs(x, x, x, key_padding_mask=padding, need_weights=False)[0]
            params = list(theirs.parameters())
        else:
            ours.backend = name.split(":")[1]
            out = ours(x, lengths)[0]
            params = list(ours.parameters())
        return torch.autograd.grad(out, [x] + params, grad)

    names = ("nn.MultiheadAttention", "lstm_fused:cpu", "lstm_fused:reference")
    return interleaved_medians({name: (lambda name=name: run(name)) for name in names}, reps,
                               warmup=3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40, help="timed calls per provider")
    parser.add_argument("--p", type=float, default=0.1, help="attention dropout probability")
    args = parser.parse_args(argv)
    print(f"training forward+backward, attention dropout p={args.p}; "
          f"{torch.get_num_threads()} threads; p50 ms (speedup over nn.MultiheadAttention)")
    for shape in SHAPES:
        med = run_shape(shape, args.p, args.reps)
        base = med["nn.MultiheadAttention"]
        cells = "  ".join(f"{k} {v:.2f} ({base / v:.2f}x)" for k, v in med.items())
        B, T, E, N = shape
        print(f"B={B},T={T},E={E},N={N}: {cells}", flush=True)


if __name__ == "__main__":
    main()
