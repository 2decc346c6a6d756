"""Every lstm_fused op with a CUDA kernel in csrc/ is registered for the CUDA dispatch key.

Runs wherever lstm_fused was built with CUDA against a CUDA build of torch (no GPU needed: the
dispatcher's table is filled when lstm_fused._C loads), e.g. in the environment that
tools/check_cuda_build.sh builds; skips, saying why, elsewhere (the CPU builds of CI).
The ops are read from the sources: every m.impl("name", ...) of a file of csrc/ that has a
TORCH_LIBRARY_IMPL(lstm_fused, CUDA, m) block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CUDA_IMPL = "TORCH_LIBRARY_IMPL(lstm_fused, CUDA, m)"


def cuda_ops_in_sources():
    """{op name: source file} of the ops that csrc/ registers a CUDA kernel for."""
    ops = {}
    for src in sorted((ROOT / "csrc").rglob("*")):
        if src.suffix not in (".cpp", ".cu", ".h", ".cuh"):
            continue
        text = src.read_text()
        if CUDA_IMPL not in text:
            continue
        block = text[text.index(CUDA_IMPL) :]
        block = block[: block.index("\n}")]  # the registration block, to its closing brace
        for name in re.findall(r'm\.impl\("([a-z_0-9]+)"', block):
            ops[name] = src.relative_to(ROOT).as_posix()
    return ops


def _lstm_fused_build():
    """(lstm_fused._C loaded, linked against torch's CUDA libraries), or the skip reason."""
    if torch.version.cuda is None:
        return None, f"torch {torch.__version__} is a CPU build (torch.version.cuda is None)"
    from backends import LOAD_ERROR

    if LOAD_ERROR is not None:
        pytest.fail(LOAD_ERROR)  # a CUDA torch that cannot load lstm_fused is a failure
    from lstm_fused import _C

    # A CUDA build links libc10_cuda (CUDAExtension); its name sits in the .so's dynamic table.
    if b"libc10_cuda.so" not in Path(_C.__file__).read_bytes():
        return None, (
            f"lstm_fused._C ({_C.__file__}) was built without CUDA "
            "(build with FORCE_CUDA=1: tools/check_cuda_build.sh)"
        )
    return _C, None


def test_the_sources_register_cuda_kernels():
    ops = cuda_ops_in_sources()
    assert "lstm_layer_forward" in ops and "mhsa_forward" in ops, ops


def test_every_cuda_op_is_registered_for_cuda():
    _C, reason = _lstm_fused_build()
    if _C is None:
        pytest.skip(reason)
    ops = cuda_ops_in_sources()
    missing = [
        f"{name} ({src})"
        for name, src in sorted(ops.items())
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"lstm_fused::{name}", "CUDA")
    ]
    assert not missing, "no CUDA kernel registered for: " + ", ".join(missing)
    print(f"{len(ops)} ops registered for CUDA: {', '.join(sorted(ops))}")
