"""The CPU kernels' instruction-set variants (csrc/cpu/capability.h, csrc/cpu/dispatch.cpp).

The kernel sources of csrc/cpu are compiled once per capability (default, AVX2, AVX-512) and
the variant the CPU can run is picked at the first call. Checked here: the pick matches what
/proc/cpuinfo says and ATen's cap (ATEN_CPU_CAPABILITY), a variant can be forced at run time,
every variant this CPU runs computes every op family (LSTM layer forward + backward in each
time loop, masked softmax, attention pooling, self-attention) as the float64 reference does,
and no code outside a variant's namespace, nor any code run when the library loads, uses
AVX instructions (objdump of the built library).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch

from lstm_fused import reference, reference_mhsa, switches

from backends import LOAD_ERROR
from tolerances import tol

pytestmark = pytest.mark.skipif(LOAD_ERROR is not None, reason="the C++ extension is not built")

X86 = platform.machine().lower() in ("x86_64", "amd64")
ORDER = ("default", "avx2", "avx512")
# The CPU flags (/proc/cpuinfo names) each variant is compiled for (setup.py _CPU_VARIANTS).
NEEDS = {
    "default": set(),
    "avx2": {"avx2", "fma", "f16c"},
    "avx512": {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq"},
}


def _C():
    from lstm_fused import _C

    return _C


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def aten_capability():
    """ATen's capability as a variant name (torch says 'DEFAULT', 'NO AVX', 'AVX2', 'AVX512')."""
    name = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(name, "default")


def test_variants_built_for_the_architecture():
    built = _C().cpu_capabilities_built()
    assert built == ORDER[: len(built)], built  # ascending, default always there
    if not X86:
        assert built == ("default",)


@pytest.mark.skipif(not X86 or cpu_flags() is None, reason="needs an x86-64 /proc/cpuinfo")
def test_picks_the_best_variant_the_cpu_has():
    flags = cpu_flags()
    built = _C().cpu_capabilities_built()
    runnable = tuple(v for v in built if NEEDS[v] <= flags)
    assert _C().cpu_capabilities() == runnable
    cap = ORDER.index(aten_capability())
    expected = [v for v in runnable if ORDER.index(v) <= cap][-1]
    _C().set_cpu_capability("auto")
    assert _C().cpu_capability() == expected


def _capability_in_subprocess(env_value):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=env_value)
    code = "import lstm_fused; from lstm_fused import _C; print(_C.cpu_capability())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("lower", ["default", "avx2"])
def test_aten_cpu_capability_lowers_the_variant(lower):
    runnable = _C().cpu_capabilities()
    if lower not in runnable or runnable[-1] == lower:
        pytest.skip(f"this CPU / build has no variant above {lower} to lower from: {runnable}")
    assert _capability_in_subprocess(lower) == lower


def test_set_cpu_capability_checks_the_name():
    with pytest.raises(ValueError, match="'auto', 'default', 'avx2' or 'avx512'"):
        _C().set_cpu_capability("sse9")
    with pytest.raises(TypeError):
        _C().set_cpu_capability(2)
    for name in ORDER:
        if name not in _C().cpu_capabilities():
            with pytest.raises(ValueError, match=name):
                _C().set_cpu_capability(name)
    _C().set_cpu_capability("auto")


@pytest.fixture(params=ORDER)
def variant(request):
    """Runs the test with the CPU kernels' variant request.param (skipped where the build or
    the CPU lacks it), the automatic choice again after it."""
    name = request.param
    if name not in _C().cpu_capabilities():
        pytest.skip(f"the {name} CPU kernels are not built or this CPU cannot run them")
    _C().set_cpu_capability(name)
    assert _C().cpu_capability() == name
    yield name
    _C().set_cpu_capability("auto")


def _close(got, expected, dtype, what):
    torch.testing.assert_close(
        got, expected.to(got.dtype), **tol("lstm", dtype), msg=lambda m: f"{what}: {m}"
    )


def _leaves(gen, dtype, *shapes):
    return [
        torch.randn(*s, generator=gen, dtype=torch.float64).mul_(0.5).to(dtype).requires_grad_()
        for s in shapes
    ]


def _backward_both(outs, ref_outs, gen):
    """Back-propagates the same random weighting of outs and of ref_outs."""
    loss = ref_loss = 0
    for o, r in zip(outs, ref_outs):
        w = torch.randn(r.shape, generator=gen, dtype=torch.float64)
        loss = loss + (o * w.to(o.dtype)).sum()
        ref_loss = ref_loss + (r * w).sum()
    loss.backward()
    ref_loss.backward()


def _check_grads(leaves, ref_leaves, dtype, what):
    for i, (a, r) in enumerate(zip(leaves, ref_leaves)):
        _close(a.grad, r.grad, dtype, f"{what}: grad of input {i}")


# (time loop forced by the switch cpu_loop, projection size P, peephole, lengths)
LSTM_CASES = [
    ("fused", 0, True, True),
    ("fused_gemm", 0, False, False),
    ("rows", 0, True, True),
    ("rows", 5, False, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loop,P,peep,with_lengths", LSTM_CASES)
def test_lstm_layer_matches_reference(variant, dtype, loop, P, peep, with_lengths):
    with switches.override(cpu_loop=loop):
        # H = 21: whole vectors and a remainder for every vector width (8 / 16 floats, 4 / 8 doubles)
        T, B, I, H, D = 7, 3, 6, 21, 2
        R = P or H
        gen = torch.Generator().manual_seed(7)
        shapes = [(T, B, I), (D, B, R), (D, B, H), (D, 4 * H, I), (D, 4 * H, R), (D, 4 * H)]
        shapes += [(D, P, H)] if P else []
        shapes += [(D, 3, H)] if peep else []
        leaves = _leaves(gen, dtype, *shapes)
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        lengths = torch.tensor([T, 1, 4]) if with_lengths else None

        def args(ts):
            x, h0, c0, w_ih, w_hh, bias = ts[:6]
            rest = ts[6:]
            w_hr = rest.pop(0) if P else None
            w_peep = rest.pop(0) if peep else None
            return x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths

        y, h_n, c_n = torch.ops.lstm_fused.lstm_layer_forward(*args(leaves))[:3]
        ref = reference.lstm_layer(*args(ref_leaves))
        what = f"{variant} lstm_layer ({loop} loop, P={P}, peephole={peep})"
        for got, exp, name in zip((y, h_n, c_n), ref, ("y", "h_n", "c_n")):
            _close(got, exp, dtype, f"{what}: {name}")
        _backward_both((y, h_n, c_n), ref, gen)
        _check_grads(leaves, ref_leaves, dtype, what)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_softmax_matches_reference(variant, dtype):
    gen = torch.Generator().manual_seed(3)
    B, T, N = 4, 5, 37  # N: whole vectors and a remainder
    (scores,) = _leaves(gen, dtype, (B * T, N))
    ref_scores = scores.detach().double().requires_grad_()
    lengths = torch.tensor([N, 0, 1, 20]).repeat_interleave(T)
    keep = torch.arange(N)[None, :] < lengths[:, None]
    probs = torch.ops.lstm_fused.masked_softmax_forward(scores, lengths, None, 0.7)
    ref = reference.masked_softmax(ref_scores, keep, scale=0.7)
    _close(probs, ref, dtype, f"{variant} masked_softmax")
    _backward_both((probs,), (ref,), gen)
    _check_grads([scores], [ref_scores], dtype, f"{variant} masked_softmax")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_pooling_matches_reference(variant, dtype):
    gen = torch.Generator().manual_seed(5)
    B, T, Dm, A = 3, 6, 19, 13  # D and A: whole vectors and a remainder
    leaves = _leaves(gen, dtype, (B, T, Dm), (B, T, A), (A,), (B, A))
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    lengths = torch.tensor([T, 0, 2])
    outs = torch.ops.lstm_fused.attention_pooling_forward(*leaves, lengths)
    ref = reference.attention_pooling(*ref_leaves, lengths=lengths)
    what = f"{variant} attention_pooling"
    for got, exp, name in zip(outs[:2], ref[:2], ("context", "alpha")):
        _close(got, exp, dtype, f"{what}: {name}")
    _backward_both(outs[:2], ref[:2], gen)  # lse is -inf for the empty row: not weighted
    _check_grads(leaves, ref_leaves, dtype, what)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mhsa_matches_reference(variant, dtype):
    gen = torch.Generator().manual_seed(11)
    B, N, T, Dh = 3, 2, 9, 20  # Dh: whole vectors and a remainder
    leaves = _leaves(gen, dtype, *[(B, N, T, Dh)] * 3)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    lengths = torch.tensor([T, 1, 5])
    out, _ = torch.ops.lstm_fused.mhsa_forward(*leaves, lengths, 0.4, 0.0, None)
    ref, _ = reference_mhsa.attention_core(*ref_leaves, lengths, 0.4)
    _close(out, ref, dtype, f"{variant} mhsa")
    _backward_both((out,), (ref,), gen)
    _check_grads(leaves, ref_leaves, dtype, f"{variant} mhsa")


# ------------------------------------------------------------------ what the library's code uses

# A variant's code: lstm_fused::cpu::AVX2 / AVX512 (and at::vec's), demangled, or mangled where
# objdump cannot demangle a name (OpenMP's outlined ._omp_fn parts).
VARIANT_NS = re.compile(r"::(AVX2|AVX512)::|\dAVX2|\dAVX512")
AVX512_NS = re.compile(r"::AVX512::|\dAVX512")
FUNCTION = re.compile(r"^([0-9a-f]+) <(.+)>:$")
TARGET = re.compile(r"\s([0-9a-f]+) <(.+)>$")


def _disassembly(path):
    """{address: (demangled name, {'vex', 'ymm', 'zmm'} it uses, addresses it calls / jumps to)}"""
    listing = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    functions, current = {}, None
    for line in listing.splitlines():
        m = FUNCTION.match(line)
        if m:
            current = functions.setdefault(int(m.group(1), 16), (m.group(2), set(), set()))
            continue
        parts = line.split("\t")
        if current is None or len(parts) < 2 or not parts[1]:
            continue
        insn = parts[1]
        if insn.startswith("v"):
            current[1].add("vex")
        if "%ymm" in insn:
            current[1].add("ymm")
        if "%zmm" in insn or re.search(r"%k[0-7]", insn):
            current[1].add("zmm")
        t = TARGET.search(insn)
        if t and insn.split()[0].startswith(("call", "jmp", "j")):
            current[2].add(int(t.group(1), 16))
    # A call through the PLT (an exported inline function) reaches the function of that name.
    by_name = {}
    for addr, (name, _, _) in functions.items():
        by_name.setdefault(name, []).append(addr)
    for name, _, targets in list(functions.values()):
        if name.endswith("@plt"):
            targets.update(by_name.get(name[: -len("@plt")], ()))
    return functions


def _only_reached_from(functions, namespace):
    """Addresses of the functions that only code of the variants namespace matches can reach:
    in such a namespace, or called / jumped to only from such functions (the compiler's local clones,
    .constprop / .isra / .cold, of inline functions a variant's translation unit uses)."""
    callers = {}
    for addr, (_, _, targets) in functions.items():
        for t in targets:
            if t != addr:
                callers.setdefault(t, set()).add(addr)
    ok = {a for a, (name, _, _) in functions.items() if namespace.search(name)}
    changed = True
    while changed:
        changed = False
        for addr in functions:
            if addr not in ok and callers.get(addr) and callers[addr] <= ok:
                ok.add(addr)
                changed = True
    return ok


@pytest.mark.skipif(not X86, reason="AVX is an x86-64 instruction set")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_vector_code_only_in_its_variant():
    """Every function of the library that uses AVX instructions is reached only from a
    variant's code (so it runs only after the dispatch checked the CPU), and no AVX2 code uses
    AVX-512. Static initialisers, run at load on any CPU, are reached from no code: they must
    use none."""
    functions = _disassembly(_C().__file__)
    vector = {a: f for a, f in functions.items() if f[1]}
    reached = _only_reached_from(functions, VARIANT_NS)
    outside = sorted(name for a, (name, _, _) in vector.items() if a not in reached)
    assert not outside, f"AVX code reachable outside the AVX2 / AVX512 variants: {outside[:20]}"
    reached = _only_reached_from(functions, AVX512_NS)
    outside = sorted(
        name for a, (name, kinds, _) in vector.items() if "zmm" in kinds and a not in reached
    )
    assert not outside, f"AVX-512 code reachable outside the AVX512 variant: {outside[:20]}"
    if "avx512" in _C().cpu_capabilities_built():  # the check sees the variants at all
        names = [name for name, _, _ in vector.values()]
        assert any("::AVX512::" in n for n in names) and any("::AVX2::" in n for n in names)
