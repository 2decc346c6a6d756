"""What a launcher launches, as data: kernel, constexprs, warps, stages, and the GPU it is for.

Every launcher of this package gets its KernelConfig from a pure choice function
(shape, dtype, target) -> KernelConfig, and launches exactly that (KernelConfig.launch). The
ahead-of-time compile test (tests/test_triton_aot.py) calls the same functions with target
80 or 90 and compiles what they return with Triton's real compiler, so what it checks (it
compiles, its shared memory fits, no register spills) is what runs.

target: the CUDA compute capability as an int, major * 10 + minor (80 = A100, 90 = H100), or
None for Triton's interpreter (TRITON_INTERPRET=1, CPU tensors: no GPU limit applies).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

# Shared memory one program (thread block) may use, opt-in maximum, bytes (CUDA programming
# guide, "Technical Specifications per Compute Capability").
SHARED_MEMORY_LIMIT = {
    70: 98304,
    75: 65536,
    80: 166912,
    86: 101376,
    87: 166912,
    89: 101376,
    90: 232448,
    100: 232448,
    103: 232448,
    120: 101376,
}
# The two targets the ahead-of-time test compiles for.
AOT_TARGETS = (80, 90)

# torch dtype -> Triton's name of the element type in a kernel signature.
ELEMENT_TYPE = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.uint8: "u8",
}


def device_target(device) -> Optional[int]:
    """The target of a call on `device`: its compute capability, or None under the
    interpreter (CPU tensors) and where torch has no CUDA (no launch can happen there; the
    backend's other reasons still apply)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return major * 10 + minor


def shared_memory_limit(target: Optional[int]) -> Optional[int]:
    """Bytes of shared memory a program may use on `target` (None: no limit, interpreter).
    A capability missing from the table gets the limit of the nearest lower one."""
    if target is None:
        return None
    known = [t for t in SHARED_MEMORY_LIMIT if t <= target]
    return SHARED_MEMORY_LIMIT[max(known)] if known else min(SHARED_MEMORY_LIMIT.values())


@dataclass(frozen=True)
class KernelConfig:
    """One compiled variant of a kernel. constexprs: the tl.constexpr arguments (name, value);
    types: the element type of every pointer argument and the type of every scalar one
    ("*fp16", "i32", "fp32"), which the ahead-of-time compile needs (a launch infers them)."""

    kernel: object
    constexprs: Tuple[Tuple[str, object], ...]
    num_warps: int
    num_stages: int
    types: Tuple[Tuple[str, str], ...]
    # ptxas's register budget per thread (None: its own choice). Without it, ptxas on some
    # small kernels stops short of the 255 it may use (e.g. 168 or 80) and spills.
    maxnreg: Optional[int] = None

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def meta(self) -> Dict[str, object]:
        return dict(self.constexprs)

    def options(self) -> Dict[str, object]:
        """The compile options of this config (what triton.compile and a launch take)."""
        out = dict(num_warps=self.num_warps, num_stages=self.num_stages)
        # Triton's interpreter (an InterpretedFunction, without .params) takes no maxnreg.
        if self.maxnreg is not None and hasattr(self.kernel, "params"):
            out["maxnreg"] = self.maxnreg
        return out

    def launch(self, grid, *args):
        """Run the kernel on `grid` with the runtime arguments `args` (in signature order)."""
        return self.kernel[grid](*args, **self.meta(), **self.options())

    def signature(self) -> Dict[str, str]:
        """Every parameter's type for triton.compile: its runtime type, or "constexpr"."""
        types = dict(self.types)
        consts = dict(self.constexprs)
        return {p: "constexpr" if p in consts else types[p] for p in constexpr_params(self.kernel)}


def constexpr_params(kernel) -> Dict[str, bool]:
    """Parameter name -> whether it is a tl.constexpr, in signature order, for a JITFunction
    or (under TRITON_INTERPRET=1) an InterpretedFunction, which has no .params."""
    if hasattr(kernel, "params"):
        return {p.name: bool(p.is_constexpr) for p in kernel.params}
    sig = inspect.signature(kernel.fn)
    return {name: "constexpr" in str(p.annotation) for name, p in sig.parameters.items()}


def full_register_budget(num_warps: int) -> int:
    """The most registers a thread of a program of num_warps may use with the program alone
    on an SM (65,536 registers; at most 255 a thread)."""
    return min(255, 65536 // (32 * num_warps))


def kernel_config(
    kernel,
    constexprs: Dict[str, object],
    num_warps: int,
    num_stages: int,
    dtype: torch.dtype,
    pointers: Dict[str, torch.dtype] = None,
    floats: Sequence[str] = (),
    maxnreg: Optional[int] = None,
) -> KernelConfig:
    """A KernelConfig whose pointer arguments (names ending in _ptr, plus the keys of
    `pointers`) hold `dtype` unless `pointers` says otherwise; the scalars named in `floats`
    are fp32, every other scalar i32. Every constexpr parameter must be given."""
    pointers = dict(pointers or {})
    is_constexpr = constexpr_params(kernel)
    names = list(is_constexpr)
    missing = [n for n in names if is_constexpr[n] and n not in constexprs]
    extra = [n for n in constexprs if n not in names]
    if missing or extra:
        raise ValueError(f"{kernel.__name__}: constexprs missing {missing}, unknown {extra}")
    types = []
    for n in names:
        if is_constexpr[n]:
            continue
        if n in pointers or n.endswith("_ptr"):
            types.append((n, "*" + ELEMENT_TYPE[pointers.get(n, dtype)]))
        else:
            types.append((n, "fp32" if n in floats else "i32"))
    return KernelConfig(
        kernel, tuple(sorted(constexprs.items())), num_warps, num_stages, tuple(types), maxnreg
    )
