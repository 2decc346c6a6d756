"""Which backends can run here, and the op x backend x dtype cases the test files draw from.

This is the one module of tests/ that reaches into lstm_fused's internals: its backend registry
(resolve, implementations), the loader of the C++ library (LOAD_ERROR, has_kernel) and the
names of the Triton operators. Test files ask here, so a change of those internals is an edit
of this file only.

    @pytest.mark.parametrize("backend,dtype", cases("masked_softmax", ["cpu", "cuda"], DTYPES))
    @pytest.mark.parametrize("backend", cases("lstm_layer", ["cpu", "reference"]))
    pytestmark = needs("mhsa", "cpu")

A case is skipped only where this machine lacks what the backend needs (a GPU, Triton, its
interpreter, a build of lstm_fused._C with those kernels), with that reason. What a backend
cannot compute (a dtype, a feature) is not a skip: a test that lists it fails.
"""

from __future__ import annotations

import importlib.util
from typing import Optional, Sequence

import pytest
import torch

import lstm_fused
from lstm_fused.ops import library as _library  # loads lstm_fused._C
from lstm_fused.ops import registry as _registry  # op family -> backend -> implementation
from lstm_fused import switches

BACKENDS = ("cuda", "triton", "cpu", "reference")
GPU = torch.cuda.is_available()


def _has_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # sys.modules["triton"] = None: a process that hides Triton
        return False


HAS_TRITON = _has_triton()

# Why lstm_fused._C could not be loaded, or None.
LOAD_ERROR: Optional[str] = _library.LOAD_ERROR


def has_kernel(op_name: str, dispatch_key: str) -> bool:
    """Whether lstm_fused::op_name has a kernel for dispatch_key ("CPU", "CUDA")."""
    return _library.has_kernel(op_name, dispatch_key)


def resolve(backend: str, op: str, device, dtype: torch.dtype, **features):
    """The implementation lstm_fused picks for this call (RuntimeError when none can run it)."""
    return _registry.resolve(backend, op, torch.device(device), dtype, **features)


def implementations(op: str) -> dict:
    """backend name -> implementation of op family `op`."""
    return _registry.implementations(op)


def implementation(op: str, backend: str):
    impl = implementations(op).get(backend)
    if impl is None:
        raise LookupError(f"lstm_fused has no {backend!r} implementation of {op!r}")
    return impl


def available_backends() -> list:
    return lstm_fused.available_backends()


def interpreting() -> bool:
    """Whether Triton runs its kernels in its interpreter (tests/conftest.py sets it without a
    GPU)."""
    return switches.enabled("triton_interpret")


def device_of(backend: str) -> str:
    """Where the tests of `backend` put their tensors: "cuda" for cuda (and triton with a GPU),
    "cpu" otherwise (triton without a GPU runs under its interpreter)."""
    name = backend.partition(":")[0]
    if name == "cuda" or (name == "triton" and GPU):
        return "cuda"
    return "cpu"


def skip_reason(op: str, backend: str) -> Optional[str]:
    """Why `backend` cannot run op family `op` on this machine at all, or None.

    backend may carry a variant after a colon ("cpu:rows"): the part before it is the backend."""
    name = backend.partition(":")[0]
    if name == "triton" and not HAS_TRITON:
        return "Triton is not installed"
    if name == "cuda" and not GPU:
        return "no CUDA device is available to PyTorch"
    if name == "triton" and not GPU and not interpreting():
        return "no GPU, and TRITON_INTERPRET is not 1 (Triton's interpreter runs on the CPU)"
    reason = implementation(op, name).unavailable_reason()
    return None if reason is None else f"backend {name!r} cannot run {op} here: {reason}"


def runs_here(op: str, backend: str) -> bool:
    return skip_reason(op, backend) is None


def needs(op: str, backend: str):
    """A skip mark for a test that needs `backend` to run `op` here."""
    reason = skip_reason(op, backend)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def require(op: str, backend: str) -> str:
    """Inside a test: skip it (with the reason) unless `backend` runs `op` here; returns the
    device of its tensors."""
    reason = skip_reason(op, backend)
    if reason is not None:
        pytest.skip(reason)
    return device_of(backend)


def triton_device(op: str = "masked_softmax") -> str:
    """Where the Triton kernels run: "cuda", or "cpu" under Triton's interpreter; skips the
    test (with the reason) when they cannot run here."""
    return require(op, "triton")


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def case(op: str, backend: str, *values, id: str = None, cpu_tensors: bool = False):
    """pytest.param(backend, *values) with `id` (default: backend), marked skip with the reason
    where `backend` cannot run `op` on this machine (see skip_reason). cpu_tensors=True: the
    test runs on CPU tensors, so a backend that runs on the GPU here (triton with a GPU, cuda)
    is skipped too."""
    reason = skip_reason(op, backend)
    if reason is None and cpu_tensors and device_of(backend) != "cpu":
        reason = f"the test runs on CPU tensors; {backend} runs on the GPU here"
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return pytest.param(backend, *values, id=id or backend, marks=marks)


def cases(
    op: str,
    backends: Sequence[str] = BACKENDS,
    dtypes: Sequence[torch.dtype] = None,
    cpu_tensors: bool = False,
):
    """case() per backend, or per (backend, dtype) when dtypes are given, with ids like "cpu" /
    "cpu-float32"."""
    if dtypes is None:
        return [case(op, b, cpu_tensors=cpu_tensors) for b in backends]
    return [
        case(op, b, dt, id=f"{b}-{dtype_id(dt)}", cpu_tensors=cpu_tensors)
        for b in backends
        for dt in dtypes
    ]


def call_reason(op: str, backend: str, device, dtype: torch.dtype, **features) -> Optional[str]:
    """Why `backend` cannot run this call of `op` (device, dtype, features such as head_dim),
    whatever this machine has, or None."""
    return implementation(op, backend).unsupported_reason(torch.device(device), dtype, **features)


def triton_op(name: str):
    """The Triton twin lstm_fused::<name>_triton of C++ operator `name` (e.g.
    "attentive_lstm_inference", "mhsa_forward")."""
    return getattr(torch.ops.lstm_fused, f"{name}_triton")


def register_like_lstm_fused(namespace: str) -> None:
    """Give the operators of another build of the kernels, registered with lstm_fused's schemas
    under torch.ops.<namespace> (tests/test_cuda_emulated.py builds csrc/cuda that way), the
    fake kernels and autograd of lstm_fused's own."""
    from lstm_fused import ops

    for family in ops.FAMILIES:  # each family module's register_like
        family.register_like(namespace)
