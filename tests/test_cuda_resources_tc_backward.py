"""Registers, spills and shared memory of the tensor-core backward kernel
(csrc/cuda/lstm_tc_backward.cuh), as ptxas reports them for sm_80 and sm_90.

The compile is that of tests/test_cuda_compile.py (the same flags and cache,
tests/cuda_build_helpers.py), of the backward's own .cu files only. Asserts, for every compiled
configuration (tc_backward_kernel<T, WARPS, KSTEPS, MT>) on both archs:
  - no spill stores or loads, no stack frame;
  - one CTA of WARPS * 32 threads fits an SM's 64 K registers with its weight fragments in
    registers (registers * threads <= 65536; with 256 threads: <= 255 registers), printed;
  - every plan the host makes (csrc/cuda/lstm_tc_backward_plan.h, through a tiny program of
    tests/cuda_plan/) for the benchmark grid (B 1-256, H 64-1024, D 1-2; an A100's 108 and an
    H100's 132 SMs) keeps dynamic + static shared memory within the per-block opt-in limit, and
    the headline shape (B = 16, H = 768, D = 1) gets a plan on both.
Run with -s to see the table. Marked slow_compile (run with -m "").
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

import cuda_build_helpers as cb

pytestmark = [
    pytest.mark.slow_compile,
    pytest.mark.skipif(cb.NVCC is None, reason="nvcc (CUDA toolkit) not found"),
]

# Per-block opt-in shared memory and SM count of the devices the archs stand for (A100, H100).
DEVICES = {"sm_80": dict(optin=166_912, sms=108), "sm_90": dict(optin=232_448, sms=132)}
SOURCES = sorted(cb.CSRC.glob("cuda/lstm_tc_backward*.cu"))
NAME = re.compile(r"tc_backward_kernel<(?:c10::)?(\w+), (\d+), (\d+), (\d+)>")


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """[{file, arch, dtype, warps, ksteps, mt, registers, stack, spill_stores, spill_loads, smem}]"""
    assert SOURCES, "no csrc/cuda/lstm_tc_backward*.cu"
    out = tmp_path_factory.mktemp("tc_backward_objs")
    rows = []
    for src in SOURCES:
        rc, output, _cached = cb.compile_cached(src, cb.nvcc_command(src, out / (src.stem + ".o")))
        assert rc == 0, f"nvcc failed on {src.name}:\n{output[-4000:]}"
        found = cb.parse_resource_usage(output)
        for k, name in zip(found, cb.demangle([k["kernel"] for k in found])):
            m = NAME.search(name)
            if m:
                rows.append(
                    dict(
                        k,
                        file=src.name,
                        dtype=m.group(1),
                        warps=int(m.group(2)),
                        ksteps=int(m.group(3)),
                        mt=int(m.group(4)),
                    )
                )
    assert rows, "ptxas reported no tc_backward_kernel"
    return rows


def test_print_table(kernels):
    lines = [
        f"{'arch':6} {'dtype':9} {'warps':>5} {'ksteps':>6} {'mt':>2} {'weights':>7} "
        f"{'regs':>4} {'spill st/ld':>11} {'smem':>5}"
    ]
    for k in sorted(kernels, key=lambda k: (k["arch"], k["dtype"], k["mt"], k["ksteps"])):
        lines.append(
            f"{k['arch']:6} {k['dtype']:9} {k['warps']:5d} {k['ksteps']:6d} {k['mt']:2d} "
            f"{2 * k['ksteps']:7d} {k['registers']:4d} "
            f"{k['spill_stores']:5d}/{k['spill_loads']:<5d} {k['smem']:5d}"
        )
    print("\n" + "\n".join(lines))
    assert {k["arch"] for k in kernels} == set(DEVICES)
    assert {k["dtype"] for k in kernels} == {"BFloat16", "Half"}


def test_no_spills_and_one_cta_per_sm(kernels):
    for k in kernels:
        what = f"{k['dtype']} {k['warps']}x{k['ksteps']}x{k['mt']} on {k['arch']}"
        assert k["spill_stores"] == 0 and k["spill_loads"] == 0 and k["stack"] == 0, (what, k)
        assert k["registers"] * k["warps"] * 32 <= 65536, (what, k["registers"])


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    if cb.CXX is None:
        pytest.skip("no host C++ compiler (g++/c++) to build the planner program")
    exe = tmp_path_factory.mktemp("tc_backward_plan") / "print_tc_backward_plans"
    src = cb.ROOT / "tests" / "cuda_plan" / "print_tc_backward_plans.cpp"
    rc, output = cb.run(
        [cb.CXX, "-std=c++17", "-O1", "-Wall", "-Werror", str(src), f"-I{cb.CSRC}", "-o", str(exe)]
    )
    assert rc == 0, output
    queries = [
        f"{B} {H} {D} 0 2 {dev['sms']} {dev['optin']}"
        for dev in DEVICES.values()
        for B in (1, 16, 32, 64, 256)
        for H in (64, 256, 512, 768, 1024)
        for D in (1, 2)
    ]
    proc = subprocess.run(
        [str(exe)], input="\n".join(queries), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    result = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(result) == len(queries)
    return result


def test_plans_fit_the_device(kernels, plans):
    arch_of = {dev["optin"]: arch for arch, dev in DEVICES.items()}
    for p in plans:
        if p["config"] < 0:
            assert p["refusal"], p
            continue
        arch = arch_of[p["optin"]]
        static = [
            k["smem"]
            for k in kernels
            if k["arch"] == arch
            and k["ksteps"] == p["ksteps"]
            and k["mt"] == p["mt"]
            and k["warps"] == p["warps"]
        ]
        assert static, f"plan {p} names a configuration that is not compiled"
        assert p["smem"] + max(static) <= p["optin"], p
        assert p["D"] * p["ctas"] <= p["sms"] and p["units"] * p["ctas"] >= p["H"], p
        assert 4 * p["units"] * p["ctas"] <= p["k_total"], p
    headline = [p for p in plans if (p["B"], p["H"], p["D"]) == (16, 768, 1)]
    assert len(headline) == 2 and all(p["config"] >= 0 for p in headline), headline
    assert all((p["units"], p["ctas"], p["ksteps"]) == (8, 96, 24) for p in headline), headline
