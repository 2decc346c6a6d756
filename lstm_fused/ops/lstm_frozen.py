"""The frozen LSTM family: one direction of one LSTM layer in inference, its weights packed once
(lstm_fused/frozen.py) as float32, bfloat16 or int8 (docs/contract.md, "Frozen inference").

Operator (schema in csrc/lstm_frozen_schemas.h, shapes in csrc/lstm_frozen_args.h):
  lstm_frozen_layer(x, h0, c0, w_ih, w_hh, bias, w_ih_scale?, w_hh_scale?) -> (y, h_n, c_n)
      inference only (differentiating through it raises)
Its kernels: C++ on the CPU (csrc/cpu/lstm_frozen_cpu.cpp); no CUDA and no Triton kernel. The
Triton twin lstm_frozen_layer_triton runs the C++ checks, then the plain-PyTorch math of
lstm_fused/reference_frozen.py, on any device; so does the "reference" implementation.
"""

from __future__ import annotations

import torch

from .. import reference_frozen
from . import library, registry
from .autograd import refuse_autograd

NAMESPACE = torch.ops.lstm_fused
OP = "lstm_frozen"
NO_CUDA_KERNEL = {
    "lstm_frozen_layer": "a CPU deployment path (bfloat16 / int8 dot instructions of x86 CPUs); "
    "CUDA tensors run reference_frozen's plain-PyTorch math",
}
TO_TRAIN = "train the lstm_fused.LSTM / nn.LSTM it was frozen from"


def fake_layer(x, h0, c0, w_ih, w_hh, bias, w_ih_scale=None, w_hh_scale=None):
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[1]
    return x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(B, H)


def portable_layer(x, h0, c0, w_ih, w_hh, bias, w_ih_scale=None, w_hh_scale=None):
    """The C++ checks (lstm_frozen_layer_check), then reference_frozen's math in float32."""
    NAMESPACE.lstm_frozen_layer_check(x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale)
    return reference_frozen.lstm_frozen_layer(x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale)


class FrozenKernels:
    """layer(x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale) -> (y, h_n, c_n)."""

    def __init__(self, name: str):
        self.op_name = name

    def layer(self, *args):
        # looked up at the call: without lstm_fused._C the operator does not exist
        return getattr(NAMESPACE, self.op_name)(*args)


class ReferenceFrozenKernels:
    def layer(self, *args):
        return reference_frozen.lstm_frozen_layer(*args)


def _register_operators() -> None:
    for suffix in ("", "_triton"):
        name = f"lstm_fused::lstm_frozen_layer{suffix}"
        torch.library.register_fake(name)(fake_layer)
        refuse_autograd(name, TO_TRAIN)
    torch.library.register_kernel(
        "lstm_fused::lstm_frozen_layer_triton", ("cpu", "cuda"), portable_layer
    )


def register_like(namespace: str) -> None:
    """The fake kernel and autograd of this family's C++ operator in another library built with
    the same schemas (the emulated CUDA library)."""
    torch.library.register_fake(f"{namespace}::lstm_frozen_layer")(fake_layer)
    refuse_autograd(f"{namespace}::lstm_frozen_layer", TO_TRAIN)


def _register_implementations() -> None:
    registry.register(
        registry.backend_implementation(
            OP,
            "cpu",
            FrozenKernels("lstm_frozen_layer"),
            (torch.float32,),
            native_op="lstm_frozen_layer",
        )
    )
    registry.register(
        registry.backend_implementation(OP, "reference", ReferenceFrozenKernels(), (torch.float32,))
    )


if library.LOAD_ERROR is None:
    _register_operators()
_register_implementations()
