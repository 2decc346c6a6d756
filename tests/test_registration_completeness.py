"""Every operator of lstm_fused is registered completely (docs/architecture.md, "Adding an op"):
its schema defines the operator, its Triton twin <name>_triton and its check operator
<name>_check (csrc/op_schema.h); each has its fake kernel (torch.compile); every operator but the
backward ones has its autograd (the formulas, or refuse_autograd for an inference-only one); the
C++ CPU kernel (csrc/cpu/kernels.h); the Triton twin its kernels (CPU tensors under the
interpreter, CUDA tensors); the check operator its kernel (csrc/check_ops.cpp); and the CUDA
kernel unless the op family declares the operator in NO_CUDA_KERNEL. Where the CUDA part is not
built here, the CUDA registrations are read from the registration lists of csrc/cuda/*.cpp
(tests/test_cuda_emulated.py checks the same in the emulated CUDA library, where they run)."""

import re
from pathlib import Path

import pytest
import torch

from lstm_fused import ops
from backends import LOAD_ERROR

pytestmark = pytest.mark.skipif(LOAD_ERROR is not None, reason=f"{LOAD_ERROR}")

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = ("_triton", "_check")


def queries():
    """op name -> what it answers: operators that compute nothing on tensors but answer a
    question about a call (which CUDA time loop takes it), with a CUDA kernel only (each family
    module's QUERY_OPERATORS)."""
    out = {}
    for family in ops.FAMILIES:
        out.update(getattr(family, "QUERY_OPERATORS", {}))
    return out


def operators(namespace: str = "lstm_fused"):
    """The operators of `namespace` that have kernels of their own (not twins, not checks, not
    queries)."""
    names = {
        n.split("::", 1)[1]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith(namespace + "::")
    }
    return sorted(
        n for n in names if not n.endswith(SUFFIXES) and n != "set_switch" and n not in queries()
    )


def _has(name: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"lstm_fused::{name}", key)


def no_cuda_kernel():
    """op name -> why it has no CUDA kernel (each family module's NO_CUDA_KERNEL)."""
    out = {}
    for family in ops.FAMILIES:
        out.update(getattr(family, "NO_CUDA_KERNEL", {}))
    return out


def cuda_registration_list():
    """The operators csrc/cuda/*.cpp registers (m.impl("<name>", ...))."""
    names = set()
    for src in (ROOT / "csrc" / "cuda").glob("*.cpp"):
        names |= set(re.findall(r'm\.impl\("(\w+)"', src.read_text()))
    return names


OPS = operators()


def test_queries_are_operators_with_a_cuda_kernel():
    """Each query is an operator of the library, registered by csrc/cuda/*.cpp."""
    all_names = {
        n.split("::", 1)[1]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("lstm_fused::")
    }
    assert queries() and set(queries()) <= all_names
    assert set(queries()) <= cuda_registration_list()


def test_the_library_has_operators():
    assert "lstm_layer_forward" in OPS and "mhsa_forward" in OPS and len(OPS) >= 14


@pytest.mark.parametrize("name", OPS)
def test_operator_is_registered_completely(name):
    all_names = {
        n.split("::", 1)[1]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("lstm_fused::")
    }
    missing = []
    for twin in (name + "_triton", name + "_check"):
        if twin not in all_names:
            missing.append(f"operator {twin}")
    for op in (name, name + "_triton"):
        if not _has(op, "Meta"):
            missing.append(f"fake kernel of {op}")
        if not name.endswith("_backward") and not _has(op, "Autograd"):
            missing.append(f"autograd of {op}")
    if not _has(name, "CPU"):
        missing.append("CPU kernel")
    for key in ("CPU", "CUDA"):
        if not _has(name + "_triton", key):
            missing.append(f"Triton kernel of {name}_triton for {key} tensors")
    if not _has(name + "_check", "CompositeImplicitAutograd"):
        missing.append(f"kernel of {name}_check (csrc/check_ops.cpp)")
    assert not missing, f"lstm_fused::{name} lacks: " + "; ".join(missing)


def test_cuda_kernels_where_the_family_says_so():
    """Every operator has a CUDA kernel in csrc/cuda/*.cpp's registration lists, but those its
    family declares in NO_CUDA_KERNEL (with the reason); and when the CUDA part is built, the
    dispatcher has exactly those."""
    skipped = no_cuda_kernel()
    assert set(skipped) <= set(OPS), set(skipped) - set(OPS)
    assert all(isinstance(why, str) and why for why in skipped.values())
    want = set(OPS) - set(skipped)
    assert cuda_registration_list() == want | set(queries())
    if any(_has(name, "CUDA") for name in OPS):  # built with CUDA
        assert {name for name in OPS if _has(name, "CUDA")} == want


def test_cpu_kernel_list_matches_the_operators():
    """csrc/cpu/kernels.h's list (LSTM_FUSED_CPU_OPS) names every operator once."""
    text = (ROOT / "csrc" / "cpu" / "kernels.h").read_text()
    block = text[text.index("#define LSTM_FUSED_CPU_OPS(X)") :]
    block = block[: block.index("\n\n")]
    listed = re.findall(r"X\(\w+, (\w+)\)", block)
    assert sorted(listed) == OPS


def test_every_family_registers_like_lstm_fused():
    """Each op family module says how its operators are registered in another library with the
    same schemas (register_like: the emulated CUDA library of tests/test_cuda_emulated.py)."""
    for family in ops.FAMILIES:
        assert callable(getattr(family, "register_like", None)), family.__name__
