"""Shared test setup.

Without a GPU, Triton kernels run under Triton's interpreter: TRITON_INTERPRET must be set
before any Triton kernel is defined, so it is set here, before lstm_fused (or a test module)
imports Triton.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
