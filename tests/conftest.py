"""Shared test setup.

- Without a GPU, Triton kernels run under Triton's interpreter: TRITON_INTERPRET must be set
  before any Triton kernel is defined, so it is set here, before lstm_fused (or a test module)
  imports Triton.
- LSTM_FUSED_POISON=1 makes the kernels start every output as NaN, so an element a kernel
  forgets to write fails the comparisons (csrc/lstm_layer_args.h, new_output); set here,
  before lstm_fused is imported: lstm_fused.switches reads the environment once.
- The slow_compile marker (real compilers, minutes on a cold cache) is declared in pytest.ini,
  which leaves those tests out unless -m "" is given (.ci/run does).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("LSTM_FUSED_POISON", "1")


@pytest.fixture
def cpu_loop(request):
    """Parametrised indirectly with a CPU time loop ("" = the automatic choice): the test runs
    with lstm_fused.switches' cpu_loop set to it (csrc/cpu/lstm_layer_cpu.cpp)."""
    from lstm_fused import switches

    with switches.override(cpu_loop=request.param):
        yield request.param
