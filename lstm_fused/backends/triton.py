"""backend="triton": placeholder until the Triton kernels land (issue 3)."""
from __future__ import annotations

from . import register
from .base import LSTMLayerBackend


class TritonLSTM(LSTMLayerBackend):
    name = "triton"

    def unavailable_reason(self):
        return "the Triton kernels are not part of this build yet"


register(TritonLSTM())
