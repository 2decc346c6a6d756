"""Registers, spills and shared memory of every CUDA kernel, as nvcc's ptxas reports them.

The compile is that of tests/test_cuda_compile.py (sm_80 and sm_90, --resource-usage, the same
cache: tests/cuda_build_helpers.py). Asserts:
  - no kernel of csrc/cuda spills registers (spill stores / loads are 0): the time loops
    (gate and persistent kernels), the attention and self-attention kernels, on both archs;
  - every dynamic shared-memory size the host plans, through the planner headers the host code
    uses (csrc/cuda/mhsa_plan.h, csrc/cuda/lstm_persistent_plan.h, built into a tiny program
    from tests/cuda_plan/), plus the kernel's static shared memory, stays within the per-block
    opt-in limit it checks at run time, for the benchmark grid's shapes (B up to 256, H up to
    1024, head sizes 32 / 64 / 128; float32, float16, bfloat16).
Prints a table of every kernel (run with -s to see it). Marked slow_compile.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

import cuda_build_helpers as cb

pytestmark = [pytest.mark.slow_compile,
              pytest.mark.skipif(cb.NVCC is None, reason="nvcc (CUDA toolkit) not found")]

# Per-block opt-in shared memory (cudaDevAttrMaxSharedMemoryPerBlockOptin), bytes.
SMEM_OPTIN = {"sm_80": 166_912, "sm_90": 232_448}
ELEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
BATCHES = (1, 16, 64, 256)
HIDDEN = (64, 256, 512, 768, 1024)
HEAD_DIMS = (32, 64, 128)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """[{file, kernel, name, arch, registers, stack, spill_stores, spill_loads, smem}]."""
    results = cb.compile_all(tmp_path_factory.mktemp("cuda_objs"))
    rows = []
    for src, (rc, output, _cached) in sorted(results.items()):
        if src.suffix != ".cu":
            continue
        assert rc == 0, f"nvcc failed on {src.name}:\n{output[-4000:]}"
        for k in cb.parse_resource_usage(output):
            rows.append(dict(k, file=src.name))
    assert rows, "ptxas reported no kernel: is --resource-usage in the flags?"
    for row, name in zip(rows, cb.demangle([r["kernel"] for r in rows])):
        # "void lstm_fused::cuda::(anonymous namespace)::gate_forward_kernel<float, 4>(...)"
        # -> "gate_forward_kernel<float, 4>"
        short = name.replace("(anonymous namespace)::", "").replace("lstm_fused::cuda::", "")
        short = re.sub(r"^void ", "", short)
        short = re.sub(r"\(.*\)$", "", short) if "(" in short else short
        row["name"] = short.replace("c10::", "")
    return rows


def test_print_resource_table(kernels):
    lines = [f"{'arch':6} {'regs':>4} {'stack':>5} {'spill st/ld':>11} {'smem':>6}  kernel (file)"]
    for k in sorted(kernels, key=lambda k: (k["file"], k["name"], k["arch"])):
        lines.append(f"{k['arch']:6} {k['registers']:4d} {k['stack']:5d} "
                     f"{k['spill_stores']:5d}/{k['spill_loads']:<5d} {k['smem']:6d}  "
                     f"{k['name']} ({k['file']})")
    print("\n" + "\n".join(lines))
    assert {k["arch"] for k in kernels} == set(SMEM_OPTIN)


def test_every_cuda_file_has_kernels_for_both_archs(kernels):
    for src in cb.CU_FILES:
        archs = {k["arch"] for k in kernels if k["file"] == src.name}
        assert archs == set(SMEM_OPTIN), f"{src.name}: kernels for {sorted(archs)}"


def test_no_kernel_spills(kernels):
    spilling = [f"{k['name']} ({k['file']}, {k['arch']}): {k['spill_stores']} bytes spill "
                f"stores, {k['spill_loads']} loads, {k['registers']} registers"
                for k in kernels if k["spill_stores"] or k["spill_loads"]]
    assert not spilling, "kernels that spill:\n" + "\n".join(spilling)


def test_time_loop_kernels_are_checked(kernels):
    """The check above covers the kernels of the time loops and of attention (guards against
    a renamed kernel silently leaving the table)."""
    names = " ".join(k["name"] for k in kernels)
    for kernel in ("gate_forward_kernel", "gate_backward_kernel", "persistent_forward_kernel",
                   "persistent_backward_kernel", "mhsa_forward_kernel", "mhsa_dkdv_kernel",
                   "mhsa_dq_kernel", "attention_pooling_fwd_kernel", "masked_softmax_fwd_kernel"):
        assert kernel in names, kernel


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    """query(lines) -> [plan dicts], from the planner program built of the host's headers."""
    if cb.CXX is None:
        pytest.skip("no host C++ compiler (g++/c++) to build the planner program")
    out = tmp_path_factory.mktemp("cuda_plan") / "print_plans"
    src = cb.ROOT / "tests" / "cuda_plan" / "print_plans.cpp"
    rc, output = cb.run([cb.CXX, "-std=c++17", "-O1", "-Wall", "-Werror", str(src),
                         f"-I{cb.CSRC}", "-o", str(out)])
    assert rc == 0, output

    def query(lines):
        proc = subprocess.run([str(out)], input="\n".join(lines), capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        result = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(result) == len(lines)
        return result

    return query


@pytest.fixture(scope="module")
def plans(planner):
    """{kind: [plan dicts]} for every benchmark shape on both archs."""
    queries = []
    for optin in SMEM_OPTIN.values():
        for dh in HEAD_DIMS:
            queries.append(f"mhsa {dh} 4 {optin}")  # acc: float for float32, float16, bfloat16
        for elem in sorted(set(ELEM_BYTES.values())):
            for B in BATCHES:
                for H in HIDDEN:
                    for D in (1, 2):
                        for backward in (0, 1):
                            queries.append(f"persistent {B} {H} {D} {elem} {backward} {optin}")
    result = {"mhsa": [], "persistent": []}
    for plan in planner(queries):
        result[plan["kind"]].append(plan)
    return result


def _static_smem(kernels, name, arch):
    sizes = [k["smem"] for k in kernels if name in k["name"] and k["arch"] == arch]
    assert sizes, f"no {name} for {arch}"
    return max(sizes)


def test_mhsa_plans_fit_the_device_limit(kernels, plans):
    """Every head size of the grid has a plan, and its shared memory (dynamic + static) fits."""
    arch_of = {v: k for k, v in SMEM_OPTIN.items()}
    for p in plans["mhsa"]:
        arch = arch_of[p["optin"]]
        assert p["refusal"] == "", p
        for kernel, dyn in zip(("mhsa_forward_kernel", "mhsa_dkdv_kernel", "mhsa_dq_kernel"),
                               p["smem"]):
            total = dyn + _static_smem(kernels, kernel, arch)
            assert 0 < total <= p["optin"], (kernel, p)


def test_mhsa_plan_refuses_what_does_not_fit(planner):
    """The reason the host raises (csrc/cuda/mhsa_cuda.cpp, checked_plan) for a device whose
    limit is below the plan's need (float64 at Dh = 128 on a 48 KiB device), and for a head
    size without a kernel."""
    fits, small, too_big = planner(["mhsa 128 8 232448", "mhsa 128 8 49152", "mhsa 129 4 232448"])
    assert fits["refusal"] == "" and max(fits["smem"]) > 49152, fits
    assert "more than the device's opt-in limit of 49152 bytes" in small["refusal"], small
    assert "outside the CUDA kernel's range" in too_big["refusal"], too_big


def test_persistent_plans_fit_the_device_limit(kernels, plans):
    arch_of = {v: k for k, v in SMEM_OPTIN.items()}
    headline = []
    for p in plans["persistent"]:
        arch = arch_of[p["optin"]]
        kernel = "persistent_backward_kernel" if p["backward"] else "persistent_forward_kernel"
        static = _static_smem(kernels, kernel, arch)
        for units, smem, blocks in p["candidates"]:
            assert smem + static <= p["optin"], (units, smem, p)
            assert blocks == p["D"] * -(-p["H"] // units)
        if p["B"] == 16 and p["H"] == 768 and p["elem_bytes"] == 2 and p["D"] == 1:
            headline.append(p)
    # The headline shape (B = 16, H = 768, 16-bit, one direction) has block sizes to try on
    # both archs, forward and backward.
    assert len(headline) == 4 and all(p["candidates"] for p in headline), headline
