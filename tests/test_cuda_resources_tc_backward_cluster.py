"""Registers, spills and shared memory of the sm_90 cluster backward kernel
(csrc/cuda/lstm_tc_backward_cluster.cuh), as ptxas reports them for sm_90, and its plan.

The compile is that of tests/test_cuda_compile.py (the same flags and cache,
tests/cuda_build_helpers.py) of the kernel's own .cu files, for sm_90 only (on sm_80 the kernel
is a trap stub the host never launches; the real build compiles both). Asserts, for every
compiled configuration (tc_backward_cluster_kernel<T, CL, WARPS, KSTEPS, NT, MT>):
  - no spill stores or loads, no stack frame;
  - one CTA of WARPS * 32 threads fits an SM's 64 K registers (registers * threads <= 65536),
    printed with the weight registers (2 * KSTEPS * NT);
  - the plan (lstm_tc_backward_cluster_plan.h, through a tiny program) for B 1-64, H 64-1024,
    D 1-2 on an H100 (132 SMs, 232,448 bytes opt-in) keeps dynamic + static shared memory within
    the limit, and the headline (B = 16, H = 768, D = 1) gets 16 clusters of 8 CTAs of 6 units.
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

SMS, OPTIN = 132, 232_448  # an H100 SXM
SOURCES = sorted(cb.CSRC.glob("cuda/lstm_tc_backward_cluster*.cu"))
NAME = re.compile(r"tc_backward_cluster_kernel<(?:c10::)?(\w+), (\d+), (\d+), (\d+), (\d+), (\d+)>")

PLAN_PROGRAM = r"""
#include <cstdio>
#include <iostream>
#include "cuda/lstm_tc_backward_cluster_plan.h"
int main() {
  long long B, H, D, sms, optin;
  while (std::cin >> B >> H >> D >> sms >> optin) {
    const auto p = lstm_fused::cuda::plan_tc_backward_cluster(B, H, D, 0, 2, sms, optin);
    int warps = 0, ksteps = 0, nt = 0, mt = 0;
    if (p.config >= 0) {
      const auto& c = lstm_fused::cuda::kTcClusterConfigs[p.config];
      warps = c.warps; ksteps = c.ksteps; nt = c.nt; mt = c.mt;
    }
    std::printf("{\"B\": %lld, \"H\": %lld, \"D\": %lld, \"config\": %d, \"cluster\": %d, "
                "\"units\": %d, \"clusters\": %d, \"ctas\": %d, \"k_total\": %d, \"smem\": %zu, "
                "\"warps\": %d, \"ksteps\": %d, \"nt\": %d, \"mt\": %d, \"refusal\": \"%s\"}\n",
                B, H, D, p.config, p.cluster, p.units, p.clusters, p.ctas, p.k_total, p.smem,
                warps, ksteps, nt, mt, p.refusal.c_str());
  }
}
"""


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    assert len(SOURCES) == 2, SOURCES
    out = tmp_path_factory.mktemp("tc_backward_cluster_objs")
    rows = []
    for src in SOURCES:
        cmd = cb.nvcc_command(src, out / (src.stem + ".o"), archs=("90",))
        rc, output, _cached = cb.compile_cached(src, cmd)
        assert rc == 0, f"nvcc failed on {src.name}:\n{output[-4000:]}"
        assert "warning" not in output.lower(), output[-4000:]
        found = cb.parse_resource_usage(output)
        for k, name in zip(found, cb.demangle([k["kernel"] for k in found])):
            m = NAME.search(name)
            if m:
                rows.append(
                    dict(
                        k,
                        file=src.name,
                        dtype=m.group(1),
                        **dict(
                            zip(
                                ("cluster", "warps", "ksteps", "nt", "mt"), map(int, m.groups()[1:])
                            )
                        ),
                    )
                )
    assert rows, "ptxas reported no tc_backward_cluster_kernel"
    return rows


def test_no_spills_and_one_cta_per_sm(kernels):
    lines = [
        f"{'dtype':9} {'C':>2} {'warps':>5} {'ksteps':>6} {'nt':>2} {'mt':>2} "
        f"{'weights':>7} {'regs':>4} {'spill st/ld':>11} {'smem':>5}"
    ]
    for k in sorted(kernels, key=lambda k: (k["dtype"], k["mt"], k["nt"], k["ksteps"])):
        lines.append(
            f"{k['dtype']:9} {k['cluster']:2d} {k['warps']:5d} {k['ksteps']:6d} "
            f"{k['nt']:2d} {k['mt']:2d} {2 * k['ksteps'] * k['nt']:7d} "
            f"{k['registers']:4d} {k['spill_stores']:5d}/{k['spill_loads']:<5d} "
            f"{k['smem']:5d}"
        )
    print("\n" + "\n".join(lines))
    assert {k["dtype"] for k in kernels} == {"BFloat16", "Half"}
    assert {k["arch"] for k in kernels} == {"sm_90"}
    for k in kernels:
        assert k["spill_stores"] == 0 and k["spill_loads"] == 0 and k["stack"] == 0, k
        assert k["registers"] * k["warps"] * 32 <= 65536, k


def test_plans_fit_an_h100(kernels, tmp_path):
    if cb.CXX is None:
        pytest.skip("no host C++ compiler (g++/c++) to build the planner program")
    src, exe = tmp_path / "plan.cpp", tmp_path / "plan"
    src.write_text(PLAN_PROGRAM)
    rc, output = cb.run(
        [cb.CXX, "-std=c++17", "-O1", "-Wall", "-Werror", str(src), f"-I{cb.CSRC}", "-o", str(exe)]
    )
    assert rc == 0, output
    queries = [
        f"{B} {H} {D} {SMS} {OPTIN}"
        for B in (1, 16, 32, 64)
        for H in (64, 256, 512, 768, 1024)
        for D in (1, 2)
    ]
    proc = subprocess.run(
        [str(exe)], input="\n".join(queries), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    plans = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(plans) == len(queries)
    for p in plans:
        if p["config"] < 0:
            assert p["refusal"], p
            continue
        static = [
            k["smem"]
            for k in kernels
            if (k["warps"], k["ksteps"], k["nt"], k["mt"])
            == (p["warps"], p["ksteps"], p["nt"], p["mt"])
        ]
        assert static, f"plan {p} names a configuration that is not compiled"
        assert p["smem"] + max(static) <= OPTIN, p
        assert p["D"] * p["ctas"] <= SMS and p["units"] * p["ctas"] >= p["H"], p
        assert 4 * p["units"] * p["clusters"] * p["cluster"] <= p["k_total"], p
    headline = [p for p in plans if (p["B"], p["H"], p["D"]) == (16, 768, 1)]
    assert [(p["config"], p["cluster"], p["units"], p["clusters"]) for p in headline] == [
        (0, 8, 6, 16)
    ], headline
