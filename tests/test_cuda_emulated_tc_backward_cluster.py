"""The sm_90 cluster backward time loop (csrc/cuda/lstm_tc_backward_cluster.cuh) run on the CPU,
emulated: the loop alone (dz of every step, grad_h0, grad_c0) through test-only operators built
with the kernel into a small library of its own (tests/cuda_emu/tc_backward_cluster_test_ops.cpp,
namespace lstm_fused_tccluster_emu), against autograd through the float64 forward of
tests/test_cuda_emulated_tc_backward.py, with lengths, both directions, resets, peepholes, one
and two m16 batch tiles, padded units, bfloat16 and float16, outputs NaN-filled; and the plan.

The emulated configurations are clusters of 2 CTAs of 2 warps (lstm_tc_backward_cluster_plan.h):
H = 32 is 2 clusters (unit groups) x 2 ranks (row groups) of 8 units; H = 18 has padded units
in the last CTA; H = 16 one cluster; H = 40 three clusters of 7-unit CTAs with a K slice of 84 of 96. The cluster
barrier and distributed shared memory come from tests/cuda_emu/cuda_emulation.h's
launch_cluster (tests/test_tc_cluster_emulation.py checks them). What it cannot check: the
GPU's memory model, timing, registers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from helpers import assert_close_scaled
from test_cuda_emulated_tc_backward import _case

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="no host C++ compiler to build the emulated CUDA library",
)

DTYPES = (torch.bfloat16, torch.float16)


@pytest.fixture(scope="module")
def cl_ops(tmp_path_factory):
    from torch.utils.cpp_extension import load

    build = tmp_path_factory.mktemp("tc_backward_cluster_emu_build")
    src = ROOT / "tests" / "cuda_emu" / "tc_backward_cluster_test_ops.cpp"
    wrapper = build / (src.stem + "_emu.cpp")
    wrapper.write_text(f'#include "{src}"\n')
    load(
        name="lstm_fused_tccluster_emu",
        sources=[str(wrapper)],
        extra_include_paths=[str(ROOT / "csrc"), str(ROOT / "tests" / "cuda_emu")],
        extra_cflags=["-O1", "-pthread", "-DLSTM_FUSED_CUDA_EMULATION"],
        extra_ldflags=["-pthread"],
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.lstm_fused_tccluster_emu


# (T, B, H, D, peephole, lengths, reset probability), (units, clusters) the plan must give
LOOP_CASES = {
    "uni-2x2": ((5, 3, 32, 1, False, None, None), (8, 2)),
    "bi-lengths": ((5, 4, 32, 2, False, [5, 1, 0, 3], None), (8, 2)),
    "bi-resets-padded-units": ((6, 4, 18, 2, False, None, 0.3), (5, 2)),
    "bi-lengths-resets-peephole": ((5, 3, 16, 2, True, [5, 2, 0], 0.35), (8, 1)),
    "two-m-tiles": ((3, 20, 24, 1, False, [3, 2, 1, 0, 3] * 4, 0.2), (6, 2)),
    "three-clusters-wide-k": ((3, 2, 40, 1, False, None, None), (7, 3)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", list(LOOP_CASES))
def test_cluster_loop_matches_float64_autograd(cl_ops, name, dtype):
    (T, B, H, D, peephole, lengths, resets_p), (units, clusters) = LOOP_CASES[name]
    config, got_units, got_clusters, cluster, refusal = cl_ops.plan(B, H, D, 0, dtype)
    assert config >= 0 and refusal == "", refusal
    assert (got_units, got_clusters, cluster) == (units, clusters, 2)
    args, (d_gx, d_h0, d_c0) = _case(T, B, H, D, peephole, lengths, resets_p, dtype, seed=len(name))
    if resets_p is not None:
        assert args[6].any(), "the case draws no reset"
    dz, gh0, gc0 = cl_ops.loop(*args)
    for got, want, what in ((dz, d_gx, "dz"), (gh0, d_h0, "grad_h0"), (gc0, d_c0, "grad_c0")):
        assert_close_scaled(got, want, dtype, what, factor=2.0)


def test_cluster_plan_picks_and_refuses(cl_ops):
    bf16 = torch.bfloat16
    assert cl_ops.plan(16, 32, 2, 0, bf16)[:4] == (0, 8, 2, 2)  # K 64: capacity 64
    assert cl_ops.plan(4, 40, 1, 0, bf16)[:4] == (1, 7, 3, 2)  # K 84: capacity 96
    assert cl_ops.plan(17, 16, 1, 0, bf16)[:4] == (2, 8, 1, 2)  # two m16 tiles
    refusals = {
        "proj_size > 0": cl_ops.plan(4, 8, 1, 4, bf16),
        "bfloat16 and float16 only": cl_ops.plan(4, 8, 1, 0, torch.float32),
        "batch 33 > 32 rows": cl_ops.plan(33, 8, 1, 0, bf16),
        "exceed the register capacity": cl_ops.plan(4, 64, 1, 0, bf16),
    }
    for why, (config, _, _, _, refusal) in refusals.items():
        assert config == -1 and why in refusal, (why, refusal)
