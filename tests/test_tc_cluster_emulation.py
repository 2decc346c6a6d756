"""The thread-block-cluster primitives of csrc/cuda/tc_primitives.cuh (cluster_ctarank,
cluster_arrive / cluster_wait / cluster_sync, map_shared_rank, map_shared_cluster with
ld/st_shared_cluster) and their CPU emulation (launch_cluster in tests/cuda_emu/cuda_emulation.h).

A small program (tests/cuda_emu/tc_cluster_selftest.cpp) runs two cluster kernels: an exchange
(each block stores into a neighbour's shared memory, cluster barrier, reads back; then loads from
another rank's shared memory) and the double-buffered reduce-scatter of partial sums that the
sm_90 2-D backward does once per step. The expected answers are computed here from the rules
(rank = block % cluster size, which rank each block talks to), not by the program. On a machine
with an sm_90 device and nvcc the same program runs on the GPU with a real cluster launch.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")

SRC = ROOT / "tests" / "cuda_emu" / "tc_cluster_selftest.cpp"
N = 64  # values per block and message (kN in the program)


def _nvcc():
    import cuda_build_helpers as cb

    return cb.NVCC


@pytest.fixture(scope="module", params=["emulated", "gpu"])
def selftest(request, tmp_path_factory):
    exe = tmp_path_factory.mktemp("tc_cluster_selftest") / "tc_cluster_selftest"
    if request.param == "emulated":
        cmd = [
            CXX,
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Werror",
            "-pthread",
            "-DLSTM_FUSED_CUDA_EMULATION",
            f"-I{ROOT / 'csrc'}",
            f"-I{ROOT / 'tests' / 'cuda_emu'}",
            str(SRC),
            "-o",
            str(exe),
        ]
    else:
        if (
            not torch.cuda.is_available()
            or _nvcc() is None
            or torch.cuda.get_device_capability(0)[0] < 9
        ):
            pytest.skip("no CUDA device of compute capability >= 9.0 with nvcc")
        cmd = [
            _nvcc(),
            "-x",
            "cu",
            "-std=c++17",
            "-arch=sm_90",
            f"-I{ROOT / 'csrc'}",
            str(SRC),
            "-o",
            str(exe),
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def run(text, timeout=120):
        return subprocess.run(
            [str(exe)], input=text, capture_output=True, text=True, timeout=timeout
        )

    run.kind = request.param
    return run


def _rows(stdout):
    return [[float(v) for v in line.split()] for line in stdout.splitlines() if line]


def _sent(block):
    """What block `block` sends: block * 1000 + i (the program's sent())."""
    return block * 1000.0 + np.arange(N)


@pytest.mark.parametrize("clusters,size", [(1, 2), (2, 2), (2, 4), (1, 8)])
def test_neighbours_exchange_through_distributed_shared_memory(selftest, clusters, size):
    proc = selftest(f"exchange {clusters} {size}\n")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert len(rows) == clusters * size
    for b, row in enumerate(rows):
        assert row[0] == b
        rank = b % size
        first = b - rank  # the block of rank 0 in b's cluster
        assert (row[1], row[2]) == (rank, size)
        received, loaded = np.array(row[3 : 3 + N]), np.array(row[3 + N :])
        # stored into b by the rank whose next is b, i.e. rank - 1
        np.testing.assert_array_equal(received, _sent(first + (rank - 1) % size))
        # loaded by b from rank + 2
        np.testing.assert_array_equal(loaded, _sent(first + (rank + 2) % size))


@pytest.mark.parametrize("clusters,size,steps", [(2, 2, 5), (2, 4, 4), (1, 8, 3)])
def test_double_buffered_reduce_scatter(selftest, clusters, size, steps):
    proc = selftest(f"reduce_scatter {clusters} {size} {steps}\n")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert len(rows) == steps * clusters * size
    i = np.arange(N)
    for row in rows:
        s, b = int(row[0]), int(row[1])
        rank, first = b % size, b - b % size
        # partial(s, src, dest, i) = s*100000 + src*1000 + dest*100 + i, summed over the
        # cluster's blocks src for dest = b's rank
        want = sum(
            s * 100000.0 + src * 1000.0 + rank * 100.0 + i for src in range(first, first + size)
        )
        np.testing.assert_array_equal(np.array(row[2:]), want, err_msg=f"step {s} block {b}")


def test_a_rank_outside_the_cluster_fails(selftest):
    if selftest.kind != "emulated":
        pytest.skip("the emulation's check (a GPU's behaviour is undefined)")
    proc = selftest("bad_rank\n")
    assert proc.returncode != 0 and "returned" not in proc.stdout
    assert "map_shared_rank to rank 2 of a cluster of 2" in proc.stderr


@pytest.mark.slow_compile
def test_the_cluster_selftest_builds_for_the_gpu(tmp_path):
    """The inline PTX (mapa, ld/st.shared::cluster, barrier.cluster, %cluster_ctarank) passes
    ptxas for sm_90, and the guarded kernels still build for sm_80."""
    if _nvcc() is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    cmd = [
        _nvcc(),
        "-x",
        "cu",
        "-std=c++17",
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=sm_90",
        f"-I{ROOT / 'csrc'}",
        str(SRC),
        "-o",
        str(tmp_path / "tc_cluster_selftest_gpu"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
