"""The Triton kernel library (lstm_fused.triton_kernels), imported on first use, so that
`import lstm_fused` works without Triton. Its launchers become the operators
lstm_fused::<name>_triton (schemas in C++, csrc/op_schema.h) in each op family's module.

Triton kernels run on CUDA tensors; on CPU tensors only under Triton's interpreter
(TRITON_INTERPRET=1, set before lstm_fused is imported), which is for tests.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from .. import switches
from . import library

_configured = False


def unavailable_reason() -> Optional[str]:
    """Why the Triton backend cannot run on this machine at all, or None."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc}); pip install triton"
    if library.LOAD_ERROR is not None:  # the operators' schemas are defined by the C++ library
        return library.LOAD_ERROR
    if not torch.cuda.is_available() and not switches.enabled("triton_interpret"):
        return (
            "no CUDA device is available to PyTorch, and Triton runs on CPU tensors only "
            "under Triton's interpreter (TRITON_INTERPRET=1, for tests)"
        )
    return None


def device_reason(device: torch.device) -> Optional[str]:
    """Why Triton kernels cannot run on tensors of `device`, or None."""
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if switches.enabled("triton_interpret"):
            return None
        return (
            "it runs on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1); "
            "got CPU tensors: use backend='cpu', or CUDA tensors"
        )
    return (
        f"Triton kernels run on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), "
        f"got a tensor on {device}"
    )


def kernels(module: str):
    """The kernel module lstm_fused.triton_kernels.<module>; the first import hands the kernel
    library lstm_fused's switches (poison, triton_path)."""
    global _configured
    mod = importlib.import_module(f"lstm_fused.triton_kernels.{module}")
    if not _configured:
        from ..triton_kernels import tuning

        def configure(name, value):
            if name == "poison":
                tuning.configure(poison=value == "1")
            else:
                tuning.configure(path=value or None)

        switches.subscribe(configure, switches.TRITON_SWITCHES)
        _configured = True
    return mod
