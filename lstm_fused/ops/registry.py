"""The one record kind of every implementation, and the choice of the one that runs a call.

Every op family (lstm_fused/ops/lstm_layer.py, attention.py, mhsa.py) registers one
`Implementation` per backend. `resolve` picks the implementation of a call: the one named, or
for "auto" the available one of lowest rank that can run it; a backend asked for by name that
cannot run the call raises a RuntimeError that says why (nothing falls back silently).
Backend names and rules: docs/contract.md, section 4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import torch

from .. import switches
from .autograd import transform_active

# "auto", then the backends: the values of the backend switch
BACKEND_NAMES = tuple(v for v in switches.SWITCHES["backend"][1] if v)


def dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def _always_available() -> Optional[str]:
    return None


@dataclass(frozen=True)
class Implementation:
    """One op family on one backend.

    op: the family ("lstm_layer", "attentive_lstm", "masked_softmax", "attention_pooling",
        "channel_attention", "mhsa"); backend: a name of BACKEND_NAMES.
    rank: "auto" tries the available implementations of lowest rank first.
    devices: device types it runs on (None: any); auto_devices: those on which "auto" may pick
        it (None: devices); dtypes: the dtypes it computes.
    features: the features of a call it implements (None: all); a call passes the ones it
        needs as keywords (proj=True, lengths=True, ...).
    available(): why it cannot run on this machine at all (None: it can).
    call_reason(device, dtype, features): why it cannot run this call beyond device, dtype and
        features (a size that does not fit on chip, ...), or None.
    kernels: the family's entry points (the object each family module defines).
    """

    op: str
    backend: str
    rank: int
    devices: Optional[Tuple[str, ...]]
    dtypes: Tuple[torch.dtype, ...]
    kernels: Any
    features: Optional[FrozenSet[str]] = None
    available: Callable[[], Optional[str]] = _always_available
    call_reason: Optional[Callable[..., Optional[str]]] = None
    auto_devices: Optional[Tuple[str, ...]] = None
    _cache: Dict[str, Optional[str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        """The backend's name (what backend= takes)."""
        return self.backend

    def unavailable_reason(self) -> Optional[str]:
        """available(), asked once (what a machine has does not change while it runs)."""
        if "available" not in self._cache:
            self._cache["available"] = self.available()
        return self._cache["available"]

    def reason(self, device: torch.device, dtype: torch.dtype, **features) -> Optional[str]:
        """Why this call cannot run on this machine, or None: unavailable_reason(), then
        unsupported_reason()."""
        return self.unavailable_reason() or self.unsupported_reason(device, dtype, **features)

    def unsupported_reason(
        self, device: torch.device, dtype: torch.dtype, **features
    ) -> Optional[str]:
        """Why this call cannot run on this implementation, whatever the machine has (its
        device, dtype, features, sizes), or None."""
        if self.devices is not None and device.type not in self.devices:
            return f"it runs on {' or '.join(self.devices)} tensors, got a tensor on {device}"
        if dtype not in self.dtypes:
            return (
                f"dtype {str(dtype).replace('torch.', '')} is not supported (supported: "
                f"{dtype_names(self.dtypes)})"
            )
        if self.features is not None:
            missing = sorted(
                k for k, wanted in features.items() if wanted and k not in self.features
            )
            if missing:
                return (
                    f"the {self.backend} kernels do not implement {', '.join(missing)} "
                    f"(they implement: {', '.join(sorted(self.features))})"
                )
        if self.call_reason is not None:
            return self.call_reason(device, dtype, features)
        return None

    def picked_by_auto_on(self, device_type: str) -> bool:
        allowed = self.auto_devices if self.auto_devices is not None else self.devices
        return allowed is None or device_type in allowed


# op family -> backend name -> implementation
_REGISTRY: Dict[str, Dict[str, Implementation]] = {}
# What resolve found, by its arguments: the choice depends on nothing else (the machine, which
# does not change while it runs, the switches, and the registry, which empty it when they
# change), and making it again costs more than a one-step LSTM kernel.
_RESOLVED: Dict[tuple, Implementation] = {}
_RESOLVED_MAX = 256  # distinct calls (sizes may be features): start over beyond this


def register(impl: Implementation) -> None:
    """Make `impl` the implementation of impl.op on backend impl.backend (once)."""
    check_name(impl.backend)
    family = _REGISTRY.setdefault(impl.op, {})
    if impl.backend in family:
        raise RuntimeError(f"lstm_fused: {impl.op} already has a {impl.backend} implementation")
    family[impl.backend] = impl
    _RESOLVED.clear()


def check_name(name, arg: str = "backend") -> str:
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(
            f"lstm_fused: {arg} must be one of {', '.join(BACKEND_NAMES)}; got {name!r}"
        )
    return name


def implementations(op: str) -> Dict[str, Implementation]:
    """backend name -> Implementation of op family `op`."""
    return dict(_REGISTRY.get(op, {}))


def available_backends(op: str = "lstm_layer") -> List[str]:
    """Names of the backends that are installed and usable on this machine (for `op`)."""
    impls = _REGISTRY.get(op, {})
    return [n for n in BACKEND_NAMES[1:] if n in impls and impls[n].unavailable_reason() is None]


def requested(backend: str) -> str:
    """The backend name in force: `backend`, or the backend switch when it is "auto"."""
    if backend == "auto":
        forced = switches.get("backend")
        if forced:
            return forced
    return backend


def resolve(
    backend: str, op: str, device: torch.device, dtype: torch.dtype, **features
) -> Implementation:
    """The implementation that runs this call of `op`, or a RuntimeError that says why none can.

    features: what the call needs beyond device and dtype (e.g. proj=True, lengths=True).
    The answer is remembered (_RESOLVED); a call that raises is not."""
    if not isinstance(backend, str):
        check_name(backend)  # raises
    key = (backend, op, device, dtype, *features.items())
    impl = _RESOLVED.get(key)
    if impl is None:
        impl = _resolve(backend, op, device, dtype, features)
        if len(_RESOLVED) >= _RESOLVED_MAX:
            _RESOLVED.clear()
        _RESOLVED[key] = impl
    return impl


def _resolve(
    backend: str, op: str, device: torch.device, dtype: torch.dtype, features: dict
) -> Implementation:
    name = requested(check_name(backend))
    impls = _REGISTRY.get(op, {})
    if name != "auto":
        impl = impls.get(name)
        reason = (
            f"it has no implementation of {op}"
            if impl is None
            else impl.reason(device, dtype, **features)
        )
        if reason:
            raise RuntimeError(f"lstm_fused: backend {name!r} cannot run this {op} call: {reason}")
        return impl
    reasons = []
    for impl in sorted(impls.values(), key=lambda i: i.rank):
        if not impl.picked_by_auto_on(device.type):
            continue
        reason = impl.reason(device, dtype, **features)
        if reason is None:
            return impl
        reasons.append(f"{impl.backend}: {reason}")
    raise RuntimeError(f"lstm_fused: no backend can run this {op} call ({'; '.join(reasons)})")


def for_inputs(impl: Implementation, tensors) -> Implementation:
    """The implementation that runs a call of impl's family on `tensors`: impl, or, under
    forward-mode AD or a torch.func transform (ops/autograd.py, transform_active), the family's
    reference implementation, after impl's own checks passed. The operators have neither
    tangent nor batching rules; plain PyTorch has both, to any order. The one place where
    every op makes this choice (a backward recorded by autograd, create_graph=True, is the
    operators' autograd's: ops/autograd.py, differentiable_vjp)."""
    if impl.backend != "reference" and transform_active(tensors):
        return _REGISTRY[impl.op]["reference"]
    return impl


# A switch (the backend switch, Triton's interpreter) may change what resolve picks.
switches.subscribe(lambda _name, _value: _RESOLVED.clear(), switches.SWITCHES)


# Where each backend runs and how "auto" ranks it: the same for every op family.
_BACKEND_PLACES = {
    # backend: (rank, devices, auto_devices)
    "cuda": (0, ("cuda",), None),
    "triton": (1, ("cuda", "cpu"), ("cuda",)),  # the CPU only under Triton's interpreter
    "cpu": (2, ("cpu",), None),
    "reference": (3, None, None),
}


def backend_implementation(
    op: str,
    backend: str,
    kernels,
    dtypes,
    *,
    native_op: str = "",
    features: Optional[FrozenSet[str]] = None,
    call_reason: Optional[Callable[..., Optional[str]]] = None,
) -> Implementation:
    """The Implementation of family `op` on `backend`, with that backend's rank, devices and
    availability: "cuda" / "cpu" need the C++ kernels of `native_op` for their dispatch key,
    "triton" needs Triton (and CUDA tensors, or CPU tensors under its interpreter).
    call_reason: the family's own per-call reason, asked after those."""
    from . import library
    from . import triton_library

    rank, devices, auto_devices = _BACKEND_PLACES[backend]
    available = _always_available
    reason = call_reason
    if backend in ("cuda", "cpu"):
        key = backend.upper()

        def available():
            return library.native_reason(native_op, key)
    elif backend == "triton":
        available = triton_library.unavailable_reason

        def reason(device, dtype, call_features):
            why = triton_library.device_reason(device)
            if why is None and call_reason is not None:
                why = call_reason(device, dtype, call_features)
            return why

    return Implementation(
        op=op,
        backend=backend,
        rank=rank,
        devices=devices,
        auto_devices=auto_devices,
        dtypes=tuple(dtypes),
        kernels=kernels,
        features=features,
        available=available,
        call_reason=reason,
    )
