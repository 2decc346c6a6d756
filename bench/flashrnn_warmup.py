"""Compile FlashRNN's kernels for the headline cases ahead of the benchmark.

    python -m bench.flashrnn_warmup            # B=16, H=768, bfloat16 and float16

FlashRNN builds (and tunes) its fused CUDA module at its first call, through
torch.utils.cpp_extension, into the torch extensions folder: minutes. tools/gpu_session.sh runs
this in the background while lstm_fused builds, so that the benchmark's FlashRNN rows later
find the module built (its build key is the batch size, hidden size and dtype, not T). One
short call per dtype, forward and backward, so the backward kernels are built too. Exit 0 when
every dtype compiled and ran, 1 otherwise (the log says why); timing is not its job.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from .cases import HEADLINE_DTYPES, HEADLINE_LSTM
from .workloads.lstm import _flashrnn_forward


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.flashrnn_warmup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--batch", type=int, default=HEADLINE_LSTM["B"])
    p.add_argument("--hidden", type=int, default=HEADLINE_LSTM["H"])
    p.add_argument("--dtypes", default=",".join(HEADLINE_DTYPES))
    args = p.parse_args(argv)
    try:
        import flashrnn  # noqa: F401
    except ImportError as exc:
        print(f"flashrnn is not importable: {exc}")
        return 1
    if not torch.cuda.is_available():
        print("no GPU: FlashRNN's kernels run on CUDA only")
        return 1
    failed = 0
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        t0 = time.perf_counter()
        try:
            module = nn.LSTM(args.hidden, args.hidden).to(device="cuda", dtype=dtype)
            x = torch.randn(
                4, args.batch, args.hidden, device="cuda", dtype=dtype, requires_grad=True
            )
            y, h_n, c_n = _flashrnn_forward(module, x)
            (y.float().sum() + c_n.float().sum()).backward()
            torch.cuda.synchronize()
            print(
                f"flashrnn {name} B={args.batch} H={args.hidden}: compiled and ran in "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        except Exception as exc:  # reported; the benchmark will report its own error too
            failed = 1
            print(f"flashrnn {name}: {type(exc).__name__}: {exc}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
