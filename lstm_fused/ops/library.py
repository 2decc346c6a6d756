"""The C++ library lstm_fused._C: loading it, which kernels it registered, and its switches.

Loading _C runs its TORCH_LIBRARY registrations: every operator schema (csrc/ops.cpp,
csrc/attention_schemas.h, csrc/check_ops.cpp) and the CPU / CUDA kernels built. Without it the
package still works through backend="reference".
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from .. import switches

try:
    from .. import _C

    LOAD_ERROR: Optional[str] = None
except ImportError as exc:
    _C = None
    LOAD_ERROR = f"the C++ extension lstm_fused._C could not be loaded ({exc})"

# Which C++ kernels the library registered, read once at import: a dict lookup is what
# torch.compile can trace through, the dispatcher query itself is not.
_KERNELS = {}
if LOAD_ERROR is None:
    for _name in torch._C._dispatch_get_all_op_names():
        if _name.startswith("lstm_fused::"):
            for _key in ("CPU", "CUDA"):
                _KERNELS[(_name[len("lstm_fused::") :], _key)] = (
                    torch._C._dispatch_has_kernel_for_dispatch_key(_name, _key)
                )
    # The C++ kernels read their switches (lstm_fused/switches.py) from the library
    # (csrc/switches.h), which reads no environment variable itself.
    switches.subscribe(_C.set_switch, switches.CPP_SWITCHES)


def has_kernel(op_name: str, dispatch_key: str) -> bool:
    """Whether the C++ library registered a kernel of `lstm_fused::op_name` for dispatch_key."""
    return _KERNELS.get((op_name, dispatch_key), False)


def native_reason(op_name: str, dispatch_key: str) -> Optional[str]:
    """Why the C++ kernels of op_name for dispatch_key ("CPU", "CUDA") cannot run on this
    machine, or None."""
    if LOAD_ERROR is not None:
        return LOAD_ERROR
    if not has_kernel(op_name, dispatch_key):
        return (
            f"lstm_fused._C was built without {dispatch_key} kernels of {op_name} "
            f"(see README: building with CUDA)"
        )
    if dispatch_key == "CUDA" and not torch.cuda.is_available():
        return "no CUDA device is available to PyTorch"
    return None


def one_thread_if_busy(fn):
    """Decorates a public entry point (a module's forward, a functional call) so that, while
    more threads are runnable than there are CPUs, the whole call runs its parallel regions on
    one thread: the kernels (which hold the same guard themselves, csrc/cpu/parallel_time_loop.h)
    and the aten ops between them, whose parallel regions (torch.stack of the weights, torch.cat
    of the states, dropout) would otherwise each wait for a thread the OS took off its core.
    The switch cpu_threads="all" turns it off. Gradients are computed later, outside the call:
    only the kernels' own guard covers the backward."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _C is None or torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        saved = _C.one_thread_if_busy()
        if saved is None:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        finally:
            _C.one_thread_if_busy_end(saved)

    return call
