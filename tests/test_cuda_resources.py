"""Registers, spills and shared memory of every CUDA kernel, as nvcc's ptxas reports them.

The compile is that of tests/test_cuda_compile.py (sm_80 and sm_90, --resource-usage, the same
cache: tests/cuda_build_helpers.py). Asserts:
  - no kernel of csrc/cuda spills registers (spill stores / loads are 0): the time loops
    (gate kernels and the tensor-core loop), the attention and self-attention kernels, on both
    archs;
  - every configuration of the tensor-core loop (lstm_tc_forward.cuh) fits one CTA of 256
    threads per SM with its W_hh fragments in registers (registers x threads <= 64 K) and
    within the SM's shared memory; the registers of each are printed;
  - every dynamic shared-memory size the host plans, through the planner headers the host code
    uses (csrc/cuda/mhsa_plan.h, csrc/cuda/lstm_tc_plan.h, built into a tiny program from
    tests/cuda_plan/), plus the kernel's static shared memory, stays within the per-block
    opt-in limit it checks at run time, for the benchmark grid's shapes (B up to 256, H up to
    1024, head sizes 32 / 64 / 128; float32, float16, bfloat16), and a shape no
    configuration takes is refused with the reason the host reports.
Prints a table of every kernel (run with -s to see it). Marked slow_compile.
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

# Per-block opt-in shared memory (cudaDevAttrMaxSharedMemoryPerBlockOptin), bytes.
SMEM_OPTIN = {"sm_80": 166_912, "sm_90": 232_448}
REGISTERS_PER_SM = 65_536
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
        lines.append(
            f"{k['arch']:6} {k['registers']:4d} {k['stack']:5d} "
            f"{k['spill_stores']:5d}/{k['spill_loads']:<5d} {k['smem']:6d}  "
            f"{k['name']} ({k['file']})"
        )
    print("\n" + "\n".join(lines))
    assert {k["arch"] for k in kernels} == set(SMEM_OPTIN)


def test_every_cuda_file_has_kernels_for_both_archs(kernels):
    for src in cb.CU_FILES:
        archs = {k["arch"] for k in kernels if k["file"] == src.name}
        assert archs == set(SMEM_OPTIN), f"{src.name}: kernels for {sorted(archs)}"


def test_no_kernel_spills(kernels):
    spilling = [
        f"{k['name']} ({k['file']}, {k['arch']}): {k['spill_stores']} bytes spill "
        f"stores, {k['spill_loads']} loads, {k['registers']} registers"
        for k in kernels
        if k["spill_stores"] or k["spill_loads"]
    ]
    assert not spilling, "kernels that spill:\n" + "\n".join(spilling)


def test_time_loop_kernels_are_checked(kernels):
    """The check above covers the kernels of the time loops and of attention (guards against
    a renamed kernel silently leaving the table)."""
    names = " ".join(k["name"] for k in kernels)
    for kernel in (
        "gate_forward_kernel",
        "gate_backward_kernel",
        "tc_forward_kernel",
        "mhsa_forward_kernel",
        "mhsa_dkdv_kernel",
        "mhsa_dq_kernel",
        "attention_pooling_fwd_kernel",
        "masked_softmax_fwd_kernel",
    ):
        assert kernel in names, kernel


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    """query(lines) -> [plan dicts], from the planner program built of the host's headers."""
    if cb.CXX is None:
        pytest.skip("no host C++ compiler (g++/c++) to build the planner program")
    out = tmp_path_factory.mktemp("cuda_plan") / "print_plans"
    src = cb.ROOT / "tests" / "cuda_plan" / "print_plans.cpp"
    rc, output = cb.run(
        [cb.CXX, "-std=c++17", "-O1", "-Wall", "-Werror", str(src), f"-I{cb.CSRC}", "-o", str(out)]
    )
    assert rc == 0, output

    def query(lines):
        proc = subprocess.run(
            [str(out)], input="\n".join(lines), capture_output=True, text=True, timeout=60
        )
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
        for B in BATCHES:  # the tensor-core loop: 16-bit storage only
            for H in HIDDEN:
                for D in (1, 2):
                    queries.append(f"tc_forward {B} {H} {D} 0 {optin}")
    result = {"mhsa": [], "tc_forward": []}
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
        for kernel, dyn in zip(
            ("mhsa_forward_kernel", "mhsa_dkdv_kernel", "mhsa_dq_kernel"), p["smem"]
        ):
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


def _tc_kernels(kernels):
    """{(dtype, units, warps, ksteps, mtiles, arch): row} of the tensor-core loop's kernels."""
    found = {}
    for k in kernels:
        m = re.search(r"tc_forward_kernel<(\w+), (\d+), (\d+), (\d+), (\d+)>", k["name"])
        if m:
            found[(m.group(1),) + tuple(int(v) for v in m.group(2, 3, 4, 5)) + (k["arch"],)] = k
    return found


def test_tensor_core_loop_fits_one_cta_per_sm(kernels, plans):
    """Every compiled configuration: its registers (W_hh fragments included) leave one CTA of
    kWarps x 32 threads per SM, no spills, and its shared memory (what the plan asks plus the
    static part) within the opt-in limit; printed with -s."""
    tc = _tc_kernels(kernels)
    assert {key[0] for key in tc} == {"BFloat16", "Half"}, sorted(tc)
    lines = []
    for (dtype, units, warps, ksteps, mtiles, arch), k in sorted(tc.items()):
        threads = 32 * warps
        weight_regs = ksteps * -(-4 * units // 8) * 2
        regs = -(-k["registers"] // 8) * 8  # allocated per thread in steps of 8
        assert regs * threads <= REGISTERS_PER_SM, k
        assert k["spill_stores"] == 0 and k["spill_loads"] == 0, k
        lines.append(
            f"{arch} {dtype:9} units {units:2} warps {warps} ksteps {ksteps} mtiles "
            f"{mtiles}: {k['registers']:3d} registers ({weight_regs} of W_hh "
            f"fragments), {REGISTERS_PER_SM // (regs * threads)} CTA/SM by registers"
        )
    print("\n" + "\n".join(lines))
    headline = [k for key, k in tc.items() if key[1:5] == (6, 8, 6, 1)]
    assert len(headline) == 4, "the headline configuration (6 units, 8 warps) for both dtypes"


def test_tensor_core_plans_fit_the_device_limit(kernels, plans):
    arch_of = {v: k for k, v in SMEM_OPTIN.items()}
    tc = _tc_kernels(kernels)
    for p in plans["tc_forward"]:
        arch = arch_of[p["optin"]]
        for _index, units, warps, ksteps, mtiles, ctas, smem in p["candidates"]:
            for dtype in ("BFloat16", "Half"):
                k = tc[(dtype, units, warps, ksteps, mtiles, arch)]
                assert smem + k["smem"] <= p["optin"], (p, k)
            assert ctas == p["D"] * -(-p["H"] // units)
            assert p["B"] <= 16 * mtiles and p["H"] <= 16 * ksteps * warps
        if p["B"] <= 64 and (p["H"] <= 768 or arch == "sm_90"):
            assert p["candidates"], p
        elif p["B"] > 64:
            assert not p["candidates"] and f"batch B = {p['B']} is above" in p["reason"], p
    # The headline shape (B = 16, H = 768, one direction) tries 128 CTAs of 6 units first
    # (an H100 has 132 SMs; an A100's 108 take the next: 96 CTAs of 8 units).
    for optin in SMEM_OPTIN.values():
        (p,) = [
            p
            for p in plans["tc_forward"]
            if (p["B"], p["H"], p["D"], p["optin"]) == (16, 768, 1, optin)
        ]
        assert [c[1:6] for c in p["candidates"][:2]] == [[6, 8, 6, 1, 128], [8, 8, 8, 1, 96]], p


def test_tensor_core_plan_refuses_what_does_not_fit(planner):
    """The reasons the host reports (lstm_layer_cuda_path) for shapes no configuration takes."""
    proj, odd, big_h, small_smem = planner(
        [
            "tc_forward 16 768 1 256 232448",
            "tc_forward 16 100 1 0 232448",
            "tc_forward 16 2048 1 0 232448",
            "tc_forward 64 1024 1 0 166912",
        ]
    )
    assert "proj_size > 0" in proj["reason"] and not proj["candidates"]
    assert "H = 100 is not a multiple of 8" in odd["reason"]
    assert "H = 2048 is above the largest compiled configuration (H <= 1024)" in big_h["reason"]
    assert "above the device's per-block limit of 166912" in small_smem["reason"]
