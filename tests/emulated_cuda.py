"""The emulated CUDA test library (torch.ops.lstm_fused_emu), built once per process.

Every csrc/cuda/*.cu and *.cpp, built as plain C++ with -DLSTM_FUSED_CUDA_EMULATION
(tests/cuda_emu/cuda_emulation.h), registers the operator schemas of lstm_fused under
lstm_fused_emu with the same fake kernels and autograd (tests/test_cuda_emulated.py describes
what this checks). Several test files use it; a library may be loaded only once per process
(its TORCH_LIBRARY block), hence the cache.
"""

from __future__ import annotations

from pathlib import Path

import torch

from backends import register_like_lstm_fused

ROOT = Path(__file__).resolve().parents[1]
_OPS = []


def emulated_ops(tmp_path_factory):
    """torch.ops.lstm_fused_emu, built into a temporary folder at the first call, with the
    switch poison on (unwritten outputs come out NaN)."""
    if _OPS:
        return _OPS[0]
    from torch.utils.cpp_extension import load

    build = tmp_path_factory.mktemp("cuda_emu_build")
    sources = []
    # load() picks the compiler by extension: wrap the .cu in a .cpp to get the host compiler.
    cuda_dir = ROOT / "csrc" / "cuda"
    # csrc/switches.cpp (the switches the host code reads) and the library's schemas and the
    # operator that sets the switches (it has no Python module for lstm_fused._C.set_switch).
    extra = [ROOT / "csrc" / "switches.cpp", ROOT / "tests" / "cuda_emu" / "emu_library.cpp"]
    for src in sorted(cuda_dir.glob("*.cu")) + sorted(cuda_dir.glob("*.cpp")) + extra:
        wrapper = build / (src.stem + "_emu.cpp")
        wrapper.write_text(f'#include "{src}"\n')
        sources.append(str(wrapper))
    load(
        name="lstm_fused_cuda_emu",
        sources=sources,
        extra_include_paths=[str(ROOT / "csrc"), str(ROOT / "tests" / "cuda_emu")],
        # no -std: load() adds the standard the installed torch's headers need
        extra_cflags=["-O1", "-pthread", "-DLSTM_FUSED_CUDA_EMULATION"],
        extra_ldflags=["-pthread"],
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    register_like_lstm_fused("lstm_fused_emu")
    ops = torch.ops.lstm_fused_emu
    ops.set_switch("poison", "1")  # unwritten outputs come out NaN
    _OPS.append(ops)
    return ops
