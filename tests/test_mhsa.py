"""lstm_fused.MultiheadSelfAttention and its fused attention core.

Checked against nn.MultiheadAttention with key_padding_mask (weights loaded both ways), the
float64 reference (lstm_fused/reference_mhsa.py), gradcheck, opcheck, the Triton kernels under
TRITON_INTERPRET=1 (tests/conftest.py), padding poisoned with NaN / huge values, and bad input.
Fresh kernel outputs are poisoned with NaN: torch's deterministic mode fills every new tensor
(also the at::empty of the C++ kernels) with NaN, so an element a kernel forgets to write fails.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lstm_fused import reference_mhsa, switches
from lstm_fused.mhsa import MultiheadSelfAttention, multihead_self_attention
from backends import call_reason, cases, implementations, needs, resolve, triton_op
from tolerances import tol

needs_triton = needs("mhsa", "triton")
needs_cpp = needs("mhsa", "cpu")
F64 = tol("mhsa", torch.float64)


@pytest.fixture
def poison_new_tensors():
    """Every new tensor (torch.empty, at::empty in C++) starts filled with NaN."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    assert torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(before)


def random_lengths(B, T, gen):
    """Lengths covering 0, 1 and T, the rest random."""
    fixed = [0, 1, T][:B]
    rest = torch.randint(0, T + 1, (max(0, B - len(fixed)),), generator=gen).tolist()
    return torch.tensor(fixed + rest, dtype=torch.int64)


def qkv(B, N, T, Dh, dtype, gen, requires_grad=False):
    return tuple(
        torch.randn(B, N, T, Dh, generator=gen, dtype=dtype).requires_grad_(requires_grad)
        for _ in range(3)
    )


def padding_of(lengths, T):
    return torch.arange(T)[None, :] >= lengths[:, None]


def nn_pair(E, N, bias=True, batch_first=False, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ours = MultiheadSelfAttention(E, N, bias=bias, batch_first=batch_first).to(dtype).eval()
    theirs = nn.MultiheadAttention(E, N, bias=bias, batch_first=batch_first).to(dtype).eval()
    return ours, theirs


# ---------------------------------------------------------------- against nn.MultiheadAttention


@needs_cpp
@pytest.mark.parametrize("backend", cases("mhsa", ["cpu", "reference"]))
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_nn_multihead_attention(backend, batch_first):
    gen = torch.Generator().manual_seed(1)
    E, N, T, B = 12, 3, 13, 5
    ours, theirs = nn_pair(E, N, batch_first=batch_first)
    ours.backend = backend
    theirs.load_state_dict(ours.state_dict())  # ours -> nn
    with torch.no_grad():  # and a fresh nn -> ours
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    ours.load_state_dict(theirs.state_dict())
    lengths = random_lengths(B, T, gen)
    x = torch.randn((B, T, E) if batch_first else (T, B, E), generator=gen, dtype=torch.float64)

    out, weights = ours(x, lengths, need_weights=True)
    ref_out, ref_weights = theirs(x, x, x, key_padding_mask=padding_of(lengths, T))
    keep = lengths >= 1  # nn gives NaN for length 0
    bdim = 0 if batch_first else 1
    torch.testing.assert_close(
        out.index_select(bdim, keep.nonzero()[:, 0]),
        ref_out.index_select(bdim, keep.nonzero()[:, 0]),
        **F64,
    )
    torch.testing.assert_close(weights[keep], ref_weights[keep], **F64)
    # Length 0: zero weights, zero context, so the output is out_proj.bias; never NaN.
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    empty = out.select(bdim, int((~keep).nonzero()[0, 0]))
    torch.testing.assert_close(empty, theirs.out_proj.bias.expand_as(empty), rtol=0, atol=0)
    assert (weights[~keep] == 0).all()
    # Padded keys get exactly zero weight.
    assert (weights.masked_select(padding_of(lengths, T)[:, None, :].expand_as(weights)) == 0).all()


@needs_cpp
def test_gradients_match_nn():
    gen = torch.Generator().manual_seed(2)
    E, N, T, B = 8, 2, 11, 4
    ours, theirs = nn_pair(E, N)
    ours.backend = "cpu"
    theirs.load_state_dict(ours.state_dict())
    lengths = torch.tensor([1, 11, 6, 3])  # >= 1: nn has no NaN to back-propagate
    x = torch.randn(T, B, E, generator=gen, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(T, B, E, generator=gen, dtype=torch.float64)
    ours(x1, lengths)[0].backward(grad)
    theirs(x2, x2, x2, key_padding_mask=padding_of(lengths, T))[0].backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-11, atol=1e-11)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-11, atol=1e-11, msg=name)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_loads_both_ways(bias):
    ours, theirs = nn_pair(10, 2, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in ours.state_dict().items():
        assert value.shape == theirs.state_dict()[key].shape, key
    theirs.load_state_dict(ours.state_dict())
    ours2 = MultiheadSelfAttention(10, 2, bias=bias).double()
    ours2.load_state_dict(theirs.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(ours2.state_dict()[key], value), key


def test_unbatched_and_empty_batch_and_non_contiguous():
    ours, theirs = nn_pair(6, 2)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(7, 6, dtype=torch.float64)
    out, w = ours(x, torch.tensor([5]), need_weights=True)
    ref_out, ref_w = theirs(x, x, x, key_padding_mask=torch.arange(7) >= 5)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    empty, w0 = ours(
        torch.randn(7, 0, 6, dtype=torch.float64),
        torch.zeros(0, dtype=torch.long),
        need_weights=True,
    )
    assert empty.shape == (7, 0, 6) and w0.shape == (0, 7, 7)
    xs = torch.randn(3, 7, 6, dtype=torch.float64).transpose(0, 1)  # (T, B, E), not contiguous
    assert not xs.is_contiguous()
    torch.testing.assert_close(ours(xs)[0], theirs(xs, xs, xs)[0])


# ---------------------------------------------------------------- the core operators


def check_core(forward, dtype, B, N, T, Dh, seed, lengths=None):
    """forward(q, k, v, lengths, scale) -> (out, lse) against the float64 reference, forward
    and backward (through autograd of the operator)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = qkv(B, N, T, Dh, dtype, gen, requires_grad=True)
    if lengths is None:
        lengths = random_lengths(B, T, gen)
    scale = Dh**-0.5
    out, lse = forward(q, k, v, lengths, scale)
    grad = torch.randn(out.shape, generator=gen, dtype=dtype)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, weights = reference_mhsa.attention_core(q64, k64, v64, lengths, scale)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad.double())
    t = tol("mhsa", dtype)
    torch.testing.assert_close(out.double(), ref, **t)
    for name, got, want in zip("qkv", (dq, dk, dv), ref_grads):
        torch.testing.assert_close(got.double(), want, **t, msg=f"d{name}")
    # lse: log-sum-exp of the valid scaled scores, -inf for length 0.
    scores = torch.matmul(q64, k64.transpose(-1, -2)).detach() * scale
    scores = scores.masked_fill(padding_of(lengths, T)[:, None, None, :], float("-inf"))
    torch.testing.assert_close(lse.double(), torch.logsumexp(scores, -1), **t)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in (dq, dk, dv))
    # Rows of length 0: zero context, zero gradients for the keys and values of padding.
    pad = padding_of(lengths, T)[:, None, :, None].expand_as(dk)
    assert (dk[pad] == 0).all() and (dv[pad] == 0).all()


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 37, 70])  # 70 > one key tile (64) and two query tiles
def test_cpu_core_vs_reference(poison_new_tensors, dtype, T):
    check_core(torch.ops.lstm_fused.mhsa_forward, dtype, B=4, N=2, T=T, Dh=5, seed=T)


@needs_cpp
@pytest.mark.parametrize("gemm", ["", "aten"], ids=["blas", "aten"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_core_row_blocks_gemm_paths_and_poisoned_keys(poison_new_tensors, gemm, dtype):
    """T = 300 > 256 query rows per block (csrc/cpu/mhsa_cpu.cpp kRowBlock), so dK and dV sum
    over two blocks; both GEMM paths (BLAS, and at::addmm_ with the switch cpu_gemm="aten"); keys
    and values of padding hold NaN / inf, which must not reach any result."""
    B, N, T, Dh = 3, 2, 300, 5
    gen = torch.Generator().manual_seed(11)
    q, k, v = qkv(B, N, T, Dh, dtype, gen)
    lengths = torch.tensor([0, 257, 123])
    pad = padding_of(lengths, T)[:, None, :, None]
    k_bad = k.masked_fill(pad, float("nan")).requires_grad_()
    v_bad = v.masked_fill(pad, float("inf")).requires_grad_()
    q_in = q.clone().requires_grad_()
    scale = Dh**-0.5
    with switches.override(cpu_gemm=gemm):
        out, _ = torch.ops.lstm_fused.mhsa_forward(q_in, k_bad, v_bad, lengths, scale)
    grad = torch.randn(out.shape, generator=gen, dtype=dtype)
    got = torch.autograd.grad(out, (q_in, k_bad, v_bad), grad)

    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = reference_mhsa.attention_core(q64, k64, v64, lengths, scale)[0]
    want = torch.autograd.grad(ref, (q64, k64, v64), grad.double())
    t = tol("mhsa", dtype)
    torch.testing.assert_close(out.double(), ref, **t)
    for name, g, w in zip("qkv", got, want):
        torch.testing.assert_close(g.double(), w, **t, msg=f"d{name}")
    assert (got[1].masked_select(pad.expand_as(k)) == 0).all()


@needs_cpp
@pytest.mark.parametrize("layout", ["head_dim_strided", "time_expanded", "heads_expanded"])
def test_cpu_core_reads_any_strides(poison_new_tensors, layout):
    """The kernel reads q, k, v through their strides where it can (unit last stride, rows not
    overlapping) and copies them otherwise: both roads against the float64 reference."""
    gen = torch.Generator().manual_seed(12)
    B, N, T, Dh = 2, 3, 6, 4
    if layout == "head_dim_strided":  # last stride T, not 1: copied
        make = lambda: torch.randn(B, N, Dh, T, generator=gen, dtype=torch.float64).transpose(2, 3)
    elif layout == "time_expanded":  # T stride 0: rows overlap, copied
        make = lambda: torch.randn(B, N, 1, Dh, generator=gen, dtype=torch.float64).expand(
            B, N, T, Dh
        )
    else:  # N stride 0: read in place
        make = lambda: torch.randn(B, 1, T, Dh, generator=gen, dtype=torch.float64).expand(
            B, N, T, Dh
        )
    q, k, v = make(), make(), make()
    lengths = torch.tensor([T, 2])
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    out, lse = torch.ops.lstm_fused.mhsa_forward(q, k, v, lengths, 0.6)
    ref = reference_mhsa.attention_core(qq, kk, vv, lengths, 0.6)[0]
    torch.testing.assert_close(out, ref, **F64)
    grad = torch.randn(B, N, T, Dh, generator=gen, dtype=torch.float64)
    got = torch.ops.lstm_fused.mhsa_backward(grad, q, k, v, lengths, 0.6, 0.0, None, out, lse)
    for g, w in zip(got, torch.autograd.grad(ref, (qq, kk, vv), grad)):
        torch.testing.assert_close(g, w, **F64)


@needs_cpp
def test_cpu_core_without_lengths_and_non_contiguous(poison_new_tensors):
    gen = torch.Generator().manual_seed(3)
    packed = torch.randn(9, 2, 3, 2, 4, generator=gen, dtype=torch.float64)  # (T, B, 3, N, Dh)
    q, k, v = packed.permute(2, 1, 3, 0, 4).unbind(0)  # (B, N, T, Dh)
    assert not q.is_contiguous()
    out, _ = torch.ops.lstm_fused.mhsa_forward(q, k, v, None, 0.7)
    torch.testing.assert_close(out, reference_mhsa.attention_core(q, k, v, None, 0.7)[0], **F64)


@needs_cpp
def test_gradcheck_cpu_core_and_module():
    gen = torch.Generator().manual_seed(4)
    q, k, v = qkv(3, 2, 6, 3, torch.float64, gen, requires_grad=True)
    lengths = torch.tensor([0, 6, 2])
    assert torch.autograd.gradcheck(
        lambda q, k, v: torch.ops.lstm_fused.mhsa_forward(q, k, v, lengths, 0.6)[0], (q, k, v)
    )
    module = MultiheadSelfAttention(4, 2, backend="cpu").double()
    x = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    params = tuple(module.parameters())
    names = [n for n, _ in module.named_parameters()]

    def run(x, *ps):
        return torch.func.functional_call(
            module, dict(zip(names, ps)), (x, torch.tensor([5, 0, 1]))
        )[0]

    assert torch.autograd.gradcheck(run, (x, *params))


@needs_cpp
def test_opcheck_cpu_ops():
    gen = torch.Generator().manual_seed(5)
    q, k, v = qkv(2, 2, 5, 3, torch.float32, gen, requires_grad=True)
    for lengths in (torch.tensor([3, 0]), None):
        torch.library.opcheck(torch.ops.lstm_fused.mhsa_forward.default, (q, k, v, lengths, 0.5))
    out, lse = torch.ops.lstm_fused.mhsa_forward(q, k, v, torch.tensor([3, 0]), 0.5)
    torch.library.opcheck(
        torch.ops.lstm_fused.mhsa_backward.default,
        (
            torch.randn_like(out),
            q.detach(),
            k.detach(),
            v.detach(),
            torch.tensor([3, 0]),
            0.5,
            0.0,
            None,
            out.detach(),
            lse,
        ),
    )


# ---------------------------------------------------------------- Triton (interpreter on CPU)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_core_vs_reference(poison_new_tensors, dtype):
    # T = 19 spans two 16-wide tiles; Dh = 5 is padded to a 16-wide tile.
    check_core(triton_op("mhsa_forward"), dtype, B=3, N=2, T=19, Dh=5, seed=6)


@needs_triton
def test_triton_opcheck_and_module():
    gen = torch.Generator().manual_seed(7)
    q, k, v = qkv(2, 1, 4, 2, torch.float32, gen, requires_grad=True)
    torch.library.opcheck(
        triton_op("mhsa_forward").default,
        (q, k, v, torch.tensor([4, 0]), 0.5),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )
    ours, theirs = nn_pair(8, 2, dtype=torch.float32)
    ours.backend = "triton"
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(6, 3, 8, generator=gen)
    lengths = torch.tensor([6, 2, 1])
    torch.testing.assert_close(
        ours(x, lengths)[0],
        theirs(x, x, x, key_padding_mask=padding_of(lengths, 6))[0],
        rtol=1e-5,
        atol=1e-5,
    )


# Compiles the Triton kernels for a real GPU (sm_80) without one, in a process where the
# interpreter is off: the interpreter runs Python, this checks what the GPU compiler accepts.
AOT_COMPILE = """
import sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lstm_fused.triton_kernels import mhsa as fa
common = dict(s_b="i32", s_n="i32", s_t="i32", s_d="i32")
# the launcher passes the seed words as signed int32 values, never specialised (a value of 1
# would otherwise become a constant)
sizes = dict(N="i32", T="i32", Dh="i32", scale="fp32", seed_lo="i32", seed_hi="i32",
             threshold="i32", keep_scale="fp32")
P = "*fp16"
kernels = [
    (fa._forward_kernel, dict(Q=P, K=P, V=P, O=P, LSE="*fp32", LEN="*i64", **common,
                              o_b="i32", o_n="i32", o_t="i32", o_d="i32", **sizes)),
    (fa._dkdv_kernel, dict(Q=P, K=P, V=P, DO=P, LSE="*fp32", DELTA="*fp32", DK=P, DV=P,
                           LEN="*i64", **common, **sizes)),
    (fa._dq_kernel, dict(Q=P, K=P, V=P, DO=P, LSE="*fp32", DELTA="*fp32", DQ=P, LEN="*i64",
                         **common, **sizes)),
]
for fn, _ in kernels:
    flags = {p.name: p.do_not_specialize for p in fn.params}
    assert all(flags[n] for n in ("seed_lo", "seed_hi", "threshold")), fn.__name__
for drop in (False, True):  # with and without attention dropout
    meta = dict(HAS_LEN=True, DROP=drop, PRECISION="tf32", BLOCK_M=64, BLOCK_N=64, BLOCK_D=64)
    for fn, sig in kernels:
        sig = {**sig, **{k: "constexpr" for k in meta}}
        kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=meta),
                                target=GPUTarget("cuda", 80, 32))
        assert "mma" in kernel.asm["ptx"], fn.__name__ + ": no tensor-core instruction"
        print(fn.__name__, drop, "compiled")
"""


@pytest.mark.slow_compile
@needs_triton
def test_triton_kernels_compile_for_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", AOT_COMPILE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 6


# ---------------------------------------------------------------- padding is never read


@pytest.mark.parametrize("backend", cases("mhsa", ["cpu", "reference", "triton"], cpu_tensors=True))
def test_padding_poison_gets_no_weight(backend):
    gen = torch.Generator().manual_seed(8)
    dtype = torch.float32 if backend == "triton" else torch.float64
    E, N, T, B = 8, 2, 9, 4
    module = MultiheadSelfAttention(E, N, backend=backend, batch_first=True).to(dtype).eval()
    lengths = torch.tensor([9, 1, 4, 0])
    x = torch.randn(B, T, E, generator=gen, dtype=dtype)
    pad = padding_of(lengths, T)
    valid = ~pad
    clean, _ = module(x, lengths)
    big = x.masked_fill(pad[..., None], 1e4)  # huge but finite: everything stays finite
    out_big, w_big = module(big, lengths, need_weights=True)
    assert torch.isfinite(out_big).all() and torch.isfinite(w_big).all()
    torch.testing.assert_close(out_big[valid], clean[valid], rtol=0, atol=0)
    for poison in (float("nan"), float("inf")):  # outputs at valid positions untouched
        out_p, _ = module(x.masked_fill(pad[..., None], poison), lengths)
        torch.testing.assert_close(out_p[valid], clean[valid], rtol=0, atol=0)


# ---------------------------------------------------------------- dropout


def test_dropout_eval_matches_and_training_drops_weights():
    gen = torch.Generator().manual_seed(9)
    ours, theirs = nn_pair(8, 2)
    theirs.load_state_dict(ours.state_dict())
    ours.dropout = theirs.dropout = 0.5
    x = torch.randn(10, 3, 8, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([10, 4, 7])
    pad = padding_of(lengths, 10)
    torch.testing.assert_close(ours(x, lengths)[0], theirs(x, x, x, key_padding_mask=pad)[0])

    ours.train()
    projected = torch.nn.functional.linear(x, ours.in_proj_weight, ours.in_proj_bias)
    q, k, _ = (reference_mhsa.split_heads(p, 2) for p in projected.chunk(3, -1))
    per_head = reference_mhsa.attention_weights(q, k, lengths, 4**-0.5)  # (B, N, T, T)
    torch.manual_seed(10)
    out, w = ours(x, lengths, need_weights=True)
    # Head-averaged dropped weights: each head's weight is 0 or 2 w, so the average over the
    # two heads takes one of four values per entry; the kept fraction is about 1/2.
    choices = torch.stack(
        [
            torch.zeros_like(per_head[:, 0]),
            per_head[:, 0],
            per_head[:, 1],
            per_head[:, 0] + per_head[:, 1],
        ]
    )
    assert torch.isclose(w[None], choices, rtol=1e-12, atol=1e-15).any(0).all()
    valid = ~pad[:, None, :].expand_as(w)
    kept = (w[valid] > 0).double().mean()
    assert 0.6 < kept < 0.9  # P(kept by at least one head) = 3/4
    assert torch.isfinite(out).all()
    ours.dropout = 1.0  # every weight dropped: out = bias
    out1, _ = ours(x, lengths)
    torch.testing.assert_close(out1, ours.out_proj.bias.expand_as(out1), rtol=0, atol=0)


# ---------------------------------------------------------------- backends and bad input


def test_backend_choice():
    with pytest.raises(RuntimeError, match="cuda"):
        MultiheadSelfAttention(4, 2, backend="cuda")(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="backend"):
        MultiheadSelfAttention(4, 2, backend="fast")
    with switches.override(backend="reference"):
        assert resolve("auto", "mhsa", "cpu", torch.float32).name == "reference"
    with switches.override(backend="cuda"):  # asked for, cannot run: no fallback
        with pytest.raises(RuntimeError, match="backend 'cuda' cannot run"):
            MultiheadSelfAttention(4, 2)(torch.randn(3, 2, 4))


def test_backends_say_what_they_cannot_run():
    assert set(implementations("mhsa")) == {"reference", "cpu", "cuda", "triton"}
    op = "mhsa"
    assert "exceeds 128" in call_reason(op, "cuda", "cuda", torch.float32, head_dim=256)
    assert call_reason(op, "cuda", "cuda", torch.float32, head_dim=128) is None
    assert "float64" in call_reason(op, "triton", "cuda", torch.float64)
    assert call_reason(op, "triton", "cuda", torch.float16, dropout=True) is None
    assert call_reason(op, "cuda", "cuda", torch.float16, dropout=True) is None
    assert "runs on cpu" in call_reason(op, "cpu", "cuda", torch.float32)


@pytest.mark.parametrize(
    "make_call, error, words",
    [
        (lambda m: m(torch.randn(3, 2)), ValueError, "x has feature size 2"),
        (lambda m: m(torch.randn(3)), ValueError, "x must be 3-D"),
        (lambda m: m(torch.randn(3, 2, 4, dtype=torch.float64)), RuntimeError, "x has dtype"),
        (lambda m: m(torch.randn(3, 2, 4).long()), RuntimeError, "x must be a floating"),
        (lambda m: m([[1.0]]), TypeError, "x must be a torch.Tensor"),
        (
            lambda m: m(torch.randn(3, 2, 4), torch.tensor([1, 4])),
            ValueError,
            r"lengths\[1\] = 4 is out of range, expected 0 <= lengths\[b\] <= T = 3",
        ),
        (
            lambda m: m(torch.randn(3, 2, 4), torch.tensor([1, -1])),
            ValueError,
            r"lengths\[1\] = -1 is out of range",
        ),
        (
            lambda m: m(torch.randn(3, 2, 4), torch.tensor([1, 2, 3])),
            ValueError,
            "lengths has shape",
        ),
        (
            lambda m: m(torch.randn(3, 2, 4), torch.tensor([1.0, 2.0])),
            TypeError,
            "lengths has dtype torch.float32, expected an integer dtype",
        ),
        (lambda m: m(torch.randn(3, 2, 4), need_weights=1), TypeError, "need_weights"),
    ],
)
def test_bad_input_names_the_argument(make_call, error, words):
    """The exception types are nn.MultiheadAttention's where it raises for the same input
    (RuntimeError for a dtype; a shape error is also an AssertionError, what nn's asserts raise)."""
    with pytest.raises(error, match=words):
        make_call(MultiheadSelfAttention(4, 2))


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((6, 4), {}, ValueError, "divisible by num_heads"),
        ((0, 1), {}, ValueError, "embed_dim must be greater than zero"),
        ((4, 0), {}, ValueError, "num_heads must be greater than zero"),
        ((4.0, 2), {}, TypeError, "embed_dim must be an int"),
        ((4, 2), {"dropout": 1.5}, ValueError, "dropout must be a number"),
    ],
)
def test_bad_constructor_arguments(args, kwargs, error, words):
    with pytest.raises(error, match=words):
        MultiheadSelfAttention(*args, **kwargs)


@pytest.mark.parametrize(
    "make_call",
    [
        lambda M, x: M(6, 4),
        lambda M, x: x(M(4, 2), torch.randn(3)),
        lambda M, x: x(M(4, 2), torch.randn(3, 2, 4, 4)),
        lambda M, x: x(M(4, 2), torch.randn(3, 2, 5)),
        lambda M, x: x(M(4, 2), torch.randn(3, 2, 4, dtype=torch.float64)),
        lambda M, x: x(M(4, 2), torch.randn(3, 2, 4).long()),
    ],
    ids=["not-divisible", "1-D", "4-D", "embed-dim", "float64", "int64"],
)
def test_bad_input_raises_the_exception_type_of_nn_multihead_attention(make_call):
    def nn_call(m, x):
        return m(x, x, x)

    with pytest.raises(Exception) as expected:
        make_call(nn.MultiheadAttention, nn_call)
    with pytest.raises(type(expected.value)):
        make_call(MultiheadSelfAttention, lambda m, x: m(x))


def test_functional_entry_point_checks_num_heads():
    w = torch.randn(12, 4)
    with pytest.raises(ValueError, match="num_heads"):
        multihead_self_attention(torch.randn(3, 2, 4), None, w, None, torch.randn(4, 4), None, 3)
