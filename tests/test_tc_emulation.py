"""The CPU emulation of the tensor-core primitives (csrc/cuda/tc_primitives.cuh, emulated in
tests/cuda_emu/cuda_emulation.h) against the PTX ISA, so that a kernel and the emulator cannot
be wrong together.

The expected answers come from the tables below: a literal transcription of the PTX ISA's
fragment figures ("Matrix Fragments for mma.m16n8k16 with floating point type", figures for
A, B and C/D; "Warp-level matrix load instruction: ldmatrix", the m8n8 .b16 figure), written
as the figures draw them (for every (row, column) of a matrix, the thread and register element
that holds it), independently of the emulator's code. A tiny program
(tests/cuda_emu/tc_selftest.cpp, one emulated warp) runs the primitives on random inputs; the
test multiplies the matrices it rebuilt from the figures in float64 and compares.
Flags: a producer / consumer pair through double-buffered data with acquire/release, and the
bounded spin of a wait that never ends (the emulation aborts with a message, not a hang).

On a machine with a CUDA device (and nvcc) the same program is also built with nvcc for the
device and the same tests run on the GPU: the device's mma/ldmatrix answers against the same
figures, i.e. the check that the emulator and the hardware agree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")

# ---- The PTX ISA figures, as drawn: one line per matrix row, one "T<lane>:<element>" entry
# per column. The elements a0..a7 / b0..b3 / c0..c3 are numbered as in the figures: a_i lives in
# register i // 2 of the fragment, in its low half when i is even, high half when odd.

# Figure "MMA .m16n8k16 fragment layout for matrix A with .f16/.bf16 type" (16 x 16, rows r,
# columns 0..15).
A_FIGURE = """
T0:a0 T0:a1 T1:a0 T1:a1 T2:a0 T2:a1 T3:a0 T3:a1 T0:a4 T0:a5 T1:a4 T1:a5 T2:a4 T2:a5 T3:a4 T3:a5
T4:a0 T4:a1 T5:a0 T5:a1 T6:a0 T6:a1 T7:a0 T7:a1 T4:a4 T4:a5 T5:a4 T5:a5 T6:a4 T6:a5 T7:a4 T7:a5
T8:a0 T8:a1 T9:a0 T9:a1 T10:a0 T10:a1 T11:a0 T11:a1 T8:a4 T8:a5 T9:a4 T9:a5 T10:a4 T10:a5 T11:a4 T11:a5
T12:a0 T12:a1 T13:a0 T13:a1 T14:a0 T14:a1 T15:a0 T15:a1 T12:a4 T12:a5 T13:a4 T13:a5 T14:a4 T14:a5 T15:a4 T15:a5
T16:a0 T16:a1 T17:a0 T17:a1 T18:a0 T18:a1 T19:a0 T19:a1 T16:a4 T16:a5 T17:a4 T17:a5 T18:a4 T18:a5 T19:a4 T19:a5
T20:a0 T20:a1 T21:a0 T21:a1 T22:a0 T22:a1 T23:a0 T23:a1 T20:a4 T20:a5 T21:a4 T21:a5 T22:a4 T22:a5 T23:a4 T23:a5
T24:a0 T24:a1 T25:a0 T25:a1 T26:a0 T26:a1 T27:a0 T27:a1 T24:a4 T24:a5 T25:a4 T25:a5 T26:a4 T26:a5 T27:a4 T27:a5
T28:a0 T28:a1 T29:a0 T29:a1 T30:a0 T30:a1 T31:a0 T31:a1 T28:a4 T28:a5 T29:a4 T29:a5 T30:a4 T30:a5 T31:a4 T31:a5
T0:a2 T0:a3 T1:a2 T1:a3 T2:a2 T2:a3 T3:a2 T3:a3 T0:a6 T0:a7 T1:a6 T1:a7 T2:a6 T2:a7 T3:a6 T3:a7
T4:a2 T4:a3 T5:a2 T5:a3 T6:a2 T6:a3 T7:a2 T7:a3 T4:a6 T4:a7 T5:a6 T5:a7 T6:a6 T6:a7 T7:a6 T7:a7
T8:a2 T8:a3 T9:a2 T9:a3 T10:a2 T10:a3 T11:a2 T11:a3 T8:a6 T8:a7 T9:a6 T9:a7 T10:a6 T10:a7 T11:a6 T11:a7
T12:a2 T12:a3 T13:a2 T13:a3 T14:a2 T14:a3 T15:a2 T15:a3 T12:a6 T12:a7 T13:a6 T13:a7 T14:a6 T14:a7 T15:a6 T15:a7
T16:a2 T16:a3 T17:a2 T17:a3 T18:a2 T18:a3 T19:a2 T19:a3 T16:a6 T16:a7 T17:a6 T17:a7 T18:a6 T18:a7 T19:a6 T19:a7
T20:a2 T20:a3 T21:a2 T21:a3 T22:a2 T22:a3 T23:a2 T23:a3 T20:a6 T20:a7 T21:a6 T21:a7 T22:a6 T22:a7 T23:a6 T23:a7
T24:a2 T24:a3 T25:a2 T25:a3 T26:a2 T26:a3 T27:a2 T27:a3 T24:a6 T24:a7 T25:a6 T25:a7 T26:a6 T26:a7 T27:a6 T27:a7
T28:a2 T28:a3 T29:a2 T29:a3 T30:a2 T30:a3 T31:a2 T31:a3 T28:a6 T28:a7 T29:a6 T29:a7 T30:a6 T30:a7 T31:a6 T31:a7
"""

# Figure "MMA .m16n8k16 fragment layout for matrix B with .f16/.bf16 type" (16 x 8: rows k,
# columns n 0..7).
B_FIGURE = """
T0:b0 T4:b0 T8:b0 T12:b0 T16:b0 T20:b0 T24:b0 T28:b0
T0:b1 T4:b1 T8:b1 T12:b1 T16:b1 T20:b1 T24:b1 T28:b1
T1:b0 T5:b0 T9:b0 T13:b0 T17:b0 T21:b0 T25:b0 T29:b0
T1:b1 T5:b1 T9:b1 T13:b1 T17:b1 T21:b1 T25:b1 T29:b1
T2:b0 T6:b0 T10:b0 T14:b0 T18:b0 T22:b0 T26:b0 T30:b0
T2:b1 T6:b1 T10:b1 T14:b1 T18:b1 T22:b1 T26:b1 T30:b1
T3:b0 T7:b0 T11:b0 T15:b0 T19:b0 T23:b0 T27:b0 T31:b0
T3:b1 T7:b1 T11:b1 T15:b1 T19:b1 T23:b1 T27:b1 T31:b1
T0:b2 T4:b2 T8:b2 T12:b2 T16:b2 T20:b2 T24:b2 T28:b2
T0:b3 T4:b3 T8:b3 T12:b3 T16:b3 T20:b3 T24:b3 T28:b3
T1:b2 T5:b2 T9:b2 T13:b2 T17:b2 T21:b2 T25:b2 T29:b2
T1:b3 T5:b3 T9:b3 T13:b3 T17:b3 T21:b3 T25:b3 T29:b3
T2:b2 T6:b2 T10:b2 T14:b2 T18:b2 T22:b2 T26:b2 T30:b2
T2:b3 T6:b3 T10:b3 T14:b3 T18:b3 T22:b3 T26:b3 T30:b3
T3:b2 T7:b2 T11:b2 T15:b2 T19:b2 T23:b2 T27:b2 T31:b2
T3:b3 T7:b3 T11:b3 T15:b3 T19:b3 T23:b3 T27:b3 T31:b3
"""

# Figure "MMA .m16n8k16 fragment layout for accumulator matrix C/D with .f32 type" (16 x 8).
C_FIGURE = """
T0:c0 T0:c1 T1:c0 T1:c1 T2:c0 T2:c1 T3:c0 T3:c1
T4:c0 T4:c1 T5:c0 T5:c1 T6:c0 T6:c1 T7:c0 T7:c1
T8:c0 T8:c1 T9:c0 T9:c1 T10:c0 T10:c1 T11:c0 T11:c1
T12:c0 T12:c1 T13:c0 T13:c1 T14:c0 T14:c1 T15:c0 T15:c1
T16:c0 T16:c1 T17:c0 T17:c1 T18:c0 T18:c1 T19:c0 T19:c1
T20:c0 T20:c1 T21:c0 T21:c1 T22:c0 T22:c1 T23:c0 T23:c1
T24:c0 T24:c1 T25:c0 T25:c1 T26:c0 T26:c1 T27:c0 T27:c1
T28:c0 T28:c1 T29:c0 T29:c1 T30:c0 T30:c1 T31:c0 T31:c1
T0:c2 T0:c3 T1:c2 T1:c3 T2:c2 T2:c3 T3:c2 T3:c3
T4:c2 T4:c3 T5:c2 T5:c3 T6:c2 T6:c3 T7:c2 T7:c3
T8:c2 T8:c3 T9:c2 T9:c3 T10:c2 T10:c3 T11:c2 T11:c3
T12:c2 T12:c3 T13:c2 T13:c3 T14:c2 T14:c3 T15:c2 T15:c3
T16:c2 T16:c3 T17:c2 T17:c3 T18:c2 T18:c3 T19:c2 T19:c3
T20:c2 T20:c3 T21:c2 T21:c3 T22:c2 T22:c3 T23:c2 T23:c3
T24:c2 T24:c3 T25:c2 T25:c3 T26:c2 T26:c3 T27:c2 T27:c3
T28:c2 T28:c3 T29:c2 T29:c3 T30:c2 T30:c3 T31:c2 T31:c3
"""

# Figure of ldmatrix's fragment for one 8 x 8 matrix of 16-bit elements (without .trans): row r
# of the matrix, as stored at the address thread r (of the 8 threads that address this matrix)
# supplies, goes to these threads; each entry is two consecutive elements (one 32-bit register,
# the first in the low half).
LDMATRIX_FIGURE = """
T0 T1 T2 T3
T4 T5 T6 T7
T8 T9 T10 T11
T12 T13 T14 T15
T16 T17 T18 T19
T20 T21 T22 T23
T24 T25 T26 T27
T28 T29 T30 T31
"""
# .x4: threads 0-7 supply the row addresses of matrix 0, 8-15 of matrix 1, 16-23 of matrix 2,
# 24-31 of matrix 3; matrix j arrives in destination register j. With .trans the matrix is
# delivered transposed: element (row, col) goes where (col, row) goes without it.
LDMATRIX_ADDRESS_THREADS = {0: range(0, 8), 1: range(8, 16), 2: range(16, 24), 3: range(24, 32)}


def _parse(figure, pattern):
    """[(row, col, lane, element)] of a figure."""
    cells = []
    for r, line in enumerate(figure.strip().splitlines()):
        for c, entry in enumerate(line.split()):
            m = re.fullmatch(pattern, entry)
            assert m, entry
            cells.append((r, c, int(m.group(1)), int(m.group(2))))
    return cells


A_CELLS = _parse(A_FIGURE, r"T(\d+):a(\d)")
B_CELLS = _parse(B_FIGURE, r"T(\d+):b(\d)")
C_CELLS = _parse(C_FIGURE, r"T(\d+):c(\d)")


def test_figures_are_complete():
    """Every (lane, element) of each figure appears exactly once."""
    for cells, rows, cols, per_lane in (
        (A_CELLS, 16, 16, 8),
        (B_CELLS, 16, 8, 4),
        (C_CELLS, 16, 8, 4),
    ):
        assert len(cells) == rows * cols
        assert sorted((lane, e) for _, _, lane, e in cells) == [
            (lane, e) for lane in range(32) for e in range(per_lane)
        ]


SELFTEST_SRC = ROOT / "tests" / "cuda_emu" / "tc_selftest.cpp"


def _nvcc():
    import cuda_build_helpers as cb

    return cb.NVCC


def _gpu_arch():
    """sm_XY of the first CUDA device when it can run the self-test, else None."""
    if not torch.cuda.is_available() or _nvcc() is None:
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}" if major >= 8 else None


@pytest.fixture(scope="module", params=["emulated", "gpu"])
def selftest(request, tmp_path_factory):
    exe = tmp_path_factory.mktemp("tc_selftest") / "tc_selftest"
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
            str(SELFTEST_SRC),
            "-o",
            str(exe),
        ]
    else:
        arch = _gpu_arch()
        if arch is None:
            pytest.skip("no CUDA device of compute capability >= 8.0 with nvcc")
        cmd = [
            _nvcc(),
            "-x",
            "cu",
            "-std=c++17",
            f"-arch={arch}",
            f"-I{ROOT / 'csrc'}",
            str(SELFTEST_SRC),
            "-o",
            str(exe),
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def run(text, timeout=60):
        return subprocess.run(
            [str(exe)], input=text, capture_output=True, text=True, timeout=timeout
        )

    run.kind = request.param
    return run


def _halves(values, dtype):
    """float64 array -> uint16 bit patterns of dtype (values must be representable)."""
    t = torch.tensor(values, dtype=torch.float64).to(dtype)
    assert (t.double() == torch.tensor(values, dtype=torch.float64)).all()
    return t.view(torch.int16).numpy().astype(np.uint16)


def _random_matrix(rng, shape, dtype):
    """Random values exactly representable in dtype, of both signs and several magnitudes."""
    x = torch.tensor(rng.standard_normal(shape) * 2.0 ** rng.integers(-3, 3, shape))
    return x.to(dtype).double().numpy()


def _pack(lo, hi):
    return int(lo) | (int(hi) << 16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mma_m16n8k16_matches_the_ptx_figures(selftest, dtype, seed):
    rng = np.random.default_rng(seed)
    A = _random_matrix(rng, (16, 16), dtype)
    B = _random_matrix(rng, (16, 8), dtype)
    C = rng.standard_normal((16, 8)).astype(np.float32).astype(np.float64)
    a_bits, b_bits = _halves(A, dtype), _halves(B, dtype)
    # Registers from the figures: element e of a lane is half e % 2 of register e // 2.
    a_el = np.zeros((32, 8), np.uint16)
    b_el = np.zeros((32, 4), np.uint16)
    c_el = np.zeros((32, 4), np.float32)
    for r, c, lane, e in A_CELLS:
        a_el[lane, e] = a_bits[r, c]
    for r, c, lane, e in B_CELLS:
        b_el[lane, e] = b_bits[r, c]
    for r, c, lane, e in C_CELLS:
        c_el[lane, e] = C[r, c]
    lines = ["mma_bf16" if dtype == torch.bfloat16 else "mma_f16"]
    for lane in range(32):
        words = [_pack(a_el[lane, 2 * i], a_el[lane, 2 * i + 1]) for i in range(4)]
        words += [_pack(b_el[lane, 2 * i], b_el[lane, 2 * i + 1]) for i in range(2)]
        words += [int(c_el[lane, i : i + 1].view(np.uint32)[0]) for i in range(4)]
        lines.append(" ".join(f"{w:x}" for w in words))
    proc = selftest("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    out = np.array(
        [[int(w, 16) for w in line.split()] for line in proc.stdout.split("\n") if line],
        dtype=np.uint32,
    ).view(np.float32)
    assert out.shape == (32, 4)
    D = np.zeros((16, 8))
    for r, c, lane, e in C_CELLS:  # D has C's layout
        D[r, c] = out[lane, e]
    expected = A @ B + C
    # The emulation rounds the exact sum once; the hardware accumulates in float with its own
    # order and rounding (a few float ulps of the largest term).
    tol = 1e-6 if selftest.kind == "emulated" else 2.0**-16
    np.testing.assert_allclose(D, expected, rtol=tol, atol=tol * np.abs(expected).max())
    # and not by accident: the transposed product (a mixed-up layout) is far away
    assert np.abs((A.T @ B + C) - D).max() > 1e-3


def _ldmatrix_expected(image, offsets, trans):
    """{(lane, register): (low, high)} from the ldmatrix figure."""
    want = {}
    for j, threads in LDMATRIX_ADDRESS_THREADS.items():
        rows = [image[offsets[t] : offsets[t] + 8] for t in threads]  # matrix j, row by row
        m = np.array(rows)
        if trans:
            m = m.T
        for r, line in enumerate(LDMATRIX_FIGURE.strip().splitlines()):
            for k, entry in enumerate(line.split()):
                lane = int(entry[1:])
                want[(lane, j)] = (m[r, 2 * k], m[r, 2 * k + 1])
    return want


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_ldmatrix_x4_matches_the_ptx_figure(selftest, trans, seed):
    rng = np.random.default_rng(seed)
    pitch = 24  # a padded row pitch (elements), as the kernels use
    image = rng.integers(0, 1 << 16, size=32 * pitch, dtype=np.uint32).astype(np.uint16)
    # Row addresses in a scrambled order: lane l addresses some row of the image.
    rows = rng.permutation(32)
    offsets = [int(rows[lane] * pitch + 8 * rng.integers(0, 2)) for lane in range(32)]
    text = [
        "ldmatrix_trans" if trans else "ldmatrix",
        f"{len(image):x}",
        " ".join(f"{v:x}" for v in image),
        " ".join(f"{o:x}" for o in offsets),
    ]
    proc = selftest("\n".join(text) + "\n")
    assert proc.returncode == 0, proc.stderr
    got = [[int(w, 16) for w in line.split()] for line in proc.stdout.split("\n") if line]
    assert len(got) == 32
    for (lane, j), (lo, hi) in _ldmatrix_expected(image, offsets, trans).items():
        assert got[lane][j] == _pack(lo, hi), (lane, j)


def test_acquire_release_flags_carry_the_data(selftest):
    proc = selftest("flags 100\n")  # 256 steps
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", str(256 * 32)]


def test_a_wait_that_never_ends_fails_instead_of_hanging(selftest):
    if selftest.kind != "emulated":
        pytest.skip("the bounded spin is the emulation's (a GPU would hang)")
    start = time.monotonic()
    proc = selftest("flag_timeout 12c\n")  # 300 ms
    assert proc.returncode != 0 and "returned" not in proc.stdout
    assert "waited" in proc.stderr and "for a flag to reach 1 (it holds 0)" in proc.stderr
    assert time.monotonic() - start < 30


@pytest.mark.slow_compile
def test_the_selftest_builds_for_the_gpu(tmp_path):
    """The program the GPU runs (same kernels, nvcc, sm_80 and sm_90) compiles here too."""
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
        str(SELFTEST_SRC),
        "-o",
        str(tmp_path / "tc_selftest_gpu"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
