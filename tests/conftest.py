"""Shared test setup.

- Without a GPU, Triton kernels run under Triton's interpreter: TRITON_INTERPRET must be set
  before any Triton kernel is defined, so it is set here, before lstm_fused (or a test module)
  imports Triton.
- LSTM_FUSED_POISON=1 makes the C++ kernels start every output as NaN, so an element a kernel
  forgets to write fails the comparisons (csrc/lstm_layer_args.h, new_output).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("LSTM_FUSED_POISON", "1")


def pytest_configure(config):
    # Tests that run real compilers (nvcc for csrc/cuda, Triton's compiler) and take minutes on
    # a cold cache: deselect with -m "not slow_compile".
    config.addinivalue_line(
        "markers", "slow_compile: runs a real compiler (nvcc / Triton) ahead of time; minutes "
        "on a cold compile cache")
