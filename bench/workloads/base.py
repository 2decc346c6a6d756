"""What a workload is: how to make a case's parameters and inputs, its float64 reference, and
its providers (the implementations timed side by side).

A provider builds an Impl for (case, parameters, dtype, device): `call(inputs) -> tuple of
tensors`, `module` (its parameters by name, so gradients are compared by name), for the
"train" mode `train_step(inputs)`, and two optional hooks: `context` (a kernel-path switch
every call runs under) and `before_timing` (e.g. dropout turned on after the check). A provider that cannot be built raises Absent (not
installed / not in this build) or Unsupported (cannot run this case); anything else it raises
is reported as an error of that provider, never a crash of the suite.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..cases import Case

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def itemsize(dtype: str) -> int:
    """Bytes of one element of the case dtype `dtype` ("float32", ...)."""
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


class Absent(Exception):
    """The provider is not installed or not part of this build."""


class Unsupported(Exception):
    """The provider exists but cannot run this case (device, dtype, feature)."""


@dataclass
class Impl:
    call: Callable[[Dict[str, torch.Tensor]], Tuple[torch.Tensor, ...]]
    module: Optional[nn.Module] = None
    train_step: Optional[Callable[[Dict[str, torch.Tensor]], object]] = None
    note: str = ""
    # Every call of the provider, checked or timed, forward and backward, runs inside
    # context() (e.g. lstm_fused.switches.override(cpu_loop=...): the backward picks its
    # loop by the switch too, so it must still be set when autograd runs it).
    context: Callable[[], ContextManager] = contextlib.nullcontext
    # Called once after the check, before the timing: e.g. module.train(), so that the timed
    # calls draw the dropout that the check (in eval mode, against the reference) left off.
    before_timing: Optional[Callable[[], None]] = None
    # The check's tolerance where the provider computes another function on purpose (weights
    # quantized to bfloat16 / int8): the error its docs state; None: the case dtype's.
    tolerance: Optional[float] = None


@dataclass
class Provider:
    name: str
    build: Callable[[Case, Dict[str, torch.Tensor], torch.dtype, torch.device], Impl]
    # Compiles at its first use (minutes: FlashRNN's JIT-built CUDA module, torch.compile):
    # the suite runs such providers after every other provider of every case, so a slow or
    # stuck compile cannot cost the other rows.
    late: bool = False


@dataclass
class Options:
    """Suite-wide switches the workloads read."""

    compile: bool = False  # time torch.compile of the reference LSTM (slow to compile)
    providers: Optional[str] = None  # regex on provider names (applied by the runner)
    extra: dict = field(default_factory=dict)


class Workload:
    family = ""
    baseline = ""  # provider the speedup is measured against
    diff_inputs: Tuple[str, ...] = ()

    def make_state(self, case: Case, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        """Canonical float64 parameters (a state_dict every provider loads)."""
        return {}

    def make_inputs(self, case: Case, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        """One set of float64 (and int64) CPU inputs."""
        raise NotImplementedError

    def reference(self, case: Case, state, device) -> Impl:
        """The float64 ground truth."""
        raise NotImplementedError

    def providers(self, case: Case, device: torch.device, options: Options) -> List[Provider]:
        raise NotImplementedError

    def output_masks(self, case: Case, inputs) -> List[Optional[torch.Tensor]]:
        """Per output, a boolean mask of the elements compared (None: all of them)."""
        return []

    def flops(self, case: Case) -> Optional[float]:
        """Floating-point operations of one forward (None: not meaningful, e.g. softmax)."""
        return None

    def bytes_moved(self, case: Case) -> Optional[float]:
        """Lower bound of bytes one forward moves (inputs, weights, outputs once each)."""
        return None


class UnfusedWorkload(Workload):
    """A workload whose baseline, "torch.unfused", is plain PyTorch written from the
    contract's formulas: run in float64, it is the reference too."""

    baseline = "torch.unfused"

    def unfused(self, case: Case, state, dtype, device) -> Impl:
        raise NotImplementedError

    def reference(self, case, state, device):
        return self.unfused(case, state, torch.float64, device)


def backend_providers(backends: List[str], build) -> List[Provider]:
    """One provider "lstm_fused:<b>" per backend b, built by build(case, state, dtype,
    device, b)."""
    return [
        Provider(f"lstm_fused:{b}", lambda c, s, dt, dev, b=b: build(c, s, dt, dev, b))
        for b in backends
    ]


def module_state(gen: torch.Generator, build: Callable[[], nn.Module]) -> Dict[str, torch.Tensor]:
    """The state_dict of the float64 module build() makes, initialised by nn's own
    initialisers from a seed drawn from `gen` (they draw from torch's global generator)."""
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return build().state_dict()


def padded_batch(case: Case, feature: str, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """x (T, B, <feature>) float64 and lengths (B,) in [1, T] with one full row."""
    d = case.dims
    return {
        "x": torch.randn(d["T"], d["B"], d[feature], generator=gen, dtype=torch.float64),
        "lengths": random_lengths(d["B"], d["T"], gen),
    }


def load_module(module: nn.Module, state, dtype, device) -> nn.Module:
    """module with `state` loaded (strictly: a name mismatch is an error), on dtype/device."""
    module.load_state_dict(state, strict=True)
    return module.to(device=device, dtype=dtype)


def lstm_fused_backends(device: torch.device) -> List[str]:
    """lstm_fused backends worth timing on `device`: available ones, minus triton on the CPU
    (there it runs only under its interpreter, which is for tests) and minus the backends of
    the other device type."""
    import lstm_fused

    names = lstm_fused.available_backends()
    if device.type == "cpu":
        return [n for n in names if n in ("cpu", "reference")]
    return [n for n in names if n in ("cuda", "triton", "reference")]


def attention_backends(device: torch.device) -> List[str]:
    """Backend names to try for the attention ops: an unsupported one is reported, not hidden."""
    return ["cpu", "reference"] if device.type == "cpu" else ["cuda", "triton", "reference"]


def accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def lstm_fused_attr(path: str):
    """lstm_fused.<path> (e.g. 'functional.masked_softmax'), or Absent when not in this build."""
    import lstm_fused

    obj = lstm_fused
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise Absent(f"lstm_fused.{path} is not in this build")
    return obj


def lengths_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) boolean, True where t < lengths[b] (valid positions)."""
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def random_lengths(B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """(B,) int64 in [1, T], one full-length row: a padded batch with no empty row."""
    lengths = torch.randint(1, T + 1, (B,), generator=gen, dtype=torch.int64)
    if B:
        lengths[0] = T
    return lengths
