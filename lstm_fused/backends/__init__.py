"""Backend choice (SPEC §3): "auto", "cuda", "triton", "cpu", "reference".

Implementations register per op family ("lstm_layer", and the attention ops), so each family
can have its own set of backends. "auto" picks the fastest implementation that can run the
call; the environment variable LSTM_FUSED_BACKEND overrides "auto". A backend asked for by
name that cannot run the call raises an error that names what is missing; nothing falls back
silently.
"""
from __future__ import annotations

import os
from typing import Dict, List

import torch

from .base import Backend, LSTMLayerBackend

BACKEND_NAMES = ("auto", "cuda", "triton", "cpu", "reference")
ENV_VAR = "LSTM_FUSED_BACKEND"

# op family -> backend name -> implementation
_REGISTRY: Dict[str, Dict[str, Backend]] = {}

# Fastest first, per device type. Triton is never picked on the CPU: there it only runs under
# its interpreter (TRITON_INTERPRET=1), which is for tests.
AUTO_ORDER = {
    "cuda": ("cuda", "triton", "reference"),
    "cpu": ("cpu", "reference"),
}


def register(impl: Backend) -> None:
    """Make `impl` the implementation of impl.op on backend impl.name."""
    check_name(impl.name)
    _REGISTRY.setdefault(impl.op, {})[impl.name] = impl


def check_name(name, arg: str = "backend") -> str:
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(f"lstm_fused: {arg} must be one of {', '.join(BACKEND_NAMES)}; "
                         f"got {name!r}")
    return name


def implementations(op: str) -> Dict[str, Backend]:
    return dict(_REGISTRY.get(op, {}))


def available_backends() -> List[str]:
    """Names of the backends that are installed and usable on this machine (for the LSTM)."""
    impls = _REGISTRY.get("lstm_layer", {})
    return [n for n in BACKEND_NAMES[1:] if n in impls and impls[n].unavailable_reason() is None]


def requested(backend: str) -> str:
    """The backend name in force: `backend`, or LSTM_FUSED_BACKEND when it is "auto"."""
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "")
        if env:
            return check_name(env, f"the environment variable {ENV_VAR}")
    return backend


def _reason(impl: Backend, device, dtype, features):
    return impl.unavailable_reason() or impl.unsupported_reason(device, dtype, **features)


def resolve(backend: str, op: str, device: torch.device, dtype: torch.dtype, **features) -> Backend:
    """The implementation that runs this call of `op`, or a RuntimeError that says why none can.

    features: what the call needs beyond device and dtype (e.g. proj=True, lengths=True)."""
    name = requested(check_name(backend))
    impls = _REGISTRY.get(op, {})
    if name != "auto":
        impl = impls.get(name)
        reason = (f"it has no implementation of {op}" if impl is None
                  else _reason(impl, device, dtype, features))
        if reason:
            raise RuntimeError(f"lstm_fused: backend {name!r} cannot run this {op} call: {reason}")
        return impl
    reasons = []
    for candidate in AUTO_ORDER.get(device.type, ("reference",)):
        impl = impls.get(candidate)
        if impl is None:
            continue
        reason = _reason(impl, device, dtype, features)
        if reason is None:
            return impl
        reasons.append(f"{candidate}: {reason}")
    raise RuntimeError(f"lstm_fused: no backend can run this {op} call ({'; '.join(reasons)})")


def _register_builtin() -> None:
    from .native import CPULSTM, CUDALSTM
    from .reference import ReferenceLSTM

    for impl in (ReferenceLSTM(), CPULSTM(), CUDALSTM()):
        register(impl)
    # Optional backends register themselves when their module imports.
    from . import triton  # noqa: F401


_register_builtin()
