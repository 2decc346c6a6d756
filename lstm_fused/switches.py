"""Every switch of lstm_fused: read from the environment once, at import, and nowhere else.

The table of switches is SWITCHES below (name, environment variable, values; "" means the
automatic choice) with EFFECTS (what each does); docs/contract.md shows it as `markdown_table()`
writes it, and the C++ library holds the values of its own switches (CPP_SWITCHES) in
csrc/switches.cpp: tests/test_switch_tables.py checks that the three agree, and that the
Triton kernel library's paths (triton_kernels/tuning.py, PATHS) are triton_path's values.

The kernels themselves read no environment: the C++ switches are handed to the library
(lstm_fused._C.set_switch), the Triton ones to the kernel library (triton_kernels/tuning.py)
when it is loaded. Tests and benchmarks change a switch for a block with
`override(name=value)`. TRITON_INTERPRET is Triton's own variable: Triton reads it when a
kernel is defined, so overriding triton_interpret changes only which tensors lstm_fused hands
to the Triton backend (tests of its reasons), not Triton.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Dict, List

# name -> (environment variable, allowed values; "" = the automatic choice)
SWITCHES: Dict[str, tuple] = {
    "backend": ("LSTM_FUSED_BACKEND", ("", "auto", "cuda", "triton", "cpu", "reference")),
    "poison": ("LSTM_FUSED_POISON", ("", "0", "1")),
    "cpu_loop": ("LSTM_FUSED_CPU_LOOP", ("", "rows", "fused", "fused_gemm", "fused_input")),
    "cpu_gemm": ("LSTM_FUSED_CPU_GEMM", ("", "aten")),
    "cuda_path": ("LSTM_FUSED_CUDA_PATH", ("", "gates")),
    "cpu_threads": ("LSTM_FUSED_CPU_THREADS", ("", "all")),
    "triton_path": ("LSTM_FUSED_TRITON_PATH", ("", "sequence", "step")),
    "triton_interpret": ("TRITON_INTERPRET", ("", "0", "1")),
}
EFFECTS: Dict[str, str] = {
    "backend": "replaces `auto`",
    "poison": "kernel outputs start as NaN (tests: an unwritten element fails)",
    "cpu_loop": "forces one CPU time loop",
    "cpu_gemm": "CPU kernels multiply with ATen's matmul (no oneDNN packing, no BLAS call)",
    "cuda_path": "the CUDA LSTM forward and backward take the gate-kernel path even where the tensor-core loops fit",
    "cpu_threads": "`all`: the CPU kernels, and the aten ops of a module's forward or a functional call around them, use torch's thread count even while more threads are runnable than CPUs (else such a call runs on one thread)",
    "triton_path": "forces one Triton LSTM path",
    "triton_interpret": "Triton's interpreter: the Triton backend on CPU tensors (tests)",
}
# Switches the C++ library reads (csrc/switches.h) and the Triton kernel library reads.
CPP_SWITCHES = ("poison", "cpu_loop", "cpu_gemm", "cuda_path", "cpu_threads")
TRITON_SWITCHES = ("poison", "triton_path")

_values: Dict[str, str] = {}
# Called with (name, value) whenever a switch is set: the C++ library and the Triton kernel
# library subscribe when they load (lstm_fused/ops/library.py, lstm_fused/ops/triton_library.py).
_listeners: List[Callable[[str, str], None]] = []


def _checked(name: str, value: str, source: str) -> str:
    if name not in SWITCHES:
        raise ValueError(
            f"lstm_fused: no switch named {name!r}; the switches are {', '.join(SWITCHES)}"
        )
    env, allowed = SWITCHES[name]
    value = "" if value is None else str(value)
    if value not in allowed:
        shown = ", ".join(repr(v) for v in allowed if v)
        raise ValueError(
            f"lstm_fused: {source}{env}={value} is not a valid {name} switch; "
            f"expected one of {shown} (or unset)"
        )
    return value


def markdown_table() -> str:
    """The table of switches as docs/contract.md shows it (the values but "", "0" and "auto")."""
    rows = ["| switch | variable | values | effect |", "| --- | --- | --- | --- |"]
    for name, (env, allowed) in SWITCHES.items():
        shown = ", ".join(f"`{v}`" for v in allowed if v not in ("", "0", "auto"))
        rows.append(f"| {name} | `{env}` | {shown} | {EFFECTS[name]} |")
    return "\n".join(rows)


def _read_environment() -> None:
    for name, (env, _allowed) in SWITCHES.items():
        _values[name] = _checked(name, os.environ.get(env, ""), "the environment variable ")


def get(name: str) -> str:
    """The value of switch `name` ("" = the automatic choice)."""
    if name not in _values:
        _checked(name, "", "")
    return _values[name]


def enabled(name: str) -> bool:
    """Whether an on/off switch (poison, triton_interpret) is on."""
    return get(name) == "1"


def subscribe(listener: Callable[[str, str], None], names) -> None:
    """Call listener(name, value) now for each of `names`, and again whenever one is set."""
    names = tuple(names)

    def filtered(name, value):
        if name in names:
            listener(name, value)

    _listeners.append(filtered)
    for name in names:
        listener(name, _values[name])


def _set(name: str, value: str) -> None:
    _values[name] = value
    for listener in _listeners:
        listener(name, value)


@contextlib.contextmanager
def override(**values):
    """Within the block, switch name=value (e.g. override(cpu_loop="rows", poison="1"))."""
    checked = {n: _checked(n, v, "") for n, v in values.items()}
    old = {n: _values[n] for n in checked}
    try:
        for n, v in checked.items():
            _set(n, v)
        yield
    finally:
        for n, v in old.items():
            _set(n, v)


_read_environment()
