"""The CUDA backend's kernels and host code run on the CPU, emulated.

Every csrc/cuda/*.cu (kernels and launchers) and csrc/cuda/*.cpp (host code) is built as plain
C++ with -DLSTM_FUSED_CUDA_EMULATION (tests/cuda_emu/cuda_emulation.h: an ordinary launch runs
one call per (block, thread) in order; a cooperative launch of the tensor-core time loop
(lstm_tc_forward.cuh) runs every CUDA thread as an OS thread, with real barriers for
__syncthreads and the warp-collective mma.sync / ldmatrix / shuffles, and the flags between CTAs
as C++ atomics; a block launch, the attention kernels (mhsa_kernels.cuh, attention_kernels.cuh),
runs the blocks in turn and the threads of each block at once, with their shared memory, the
dynamic part poisoned with NaN) into a test library that
registers the same operator schemas under torch.ops.lstm_fused_emu, with the same fake kernels
and autograd as lstm_fused. So the exact
indexing, masking, vector loads, GEMM sequence, the tensor-core kernel's fragments, work split
and flag exchange (in its tiny emulation configurations, csrc/cuda/lstm_tc_plan.h), and the
weight-gradient code are checked against the float64 reference without a GPU. The emulated
mma/ldmatrix are themselves checked against the PTX ISA's figures (tests/test_tc_emulation.py).
What this cannot check: the device itself (the CUDA memory model's weak orderings, L1
staleness, occupancy, cuBLAS, streams, timings): that needs a GPU and compute-sanitizer.
"""

from __future__ import annotations

import contextlib
import shutil

import pytest
import torch

from lstm_fused import reference, reference_mhsa
from emulated_cuda import emulated_ops
from helpers import assert_close_scaled, float64_cpu, layer_args, layer_configs

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="no host C++ compiler to build the emulated CUDA library",
)

CONFIGS = layer_configs("emulated")


@pytest.fixture(scope="module")
def emu_ops(tmp_path_factory):
    return emulated_ops(tmp_path_factory)  # built once per process (tests/emulated_cuda.py)


@contextlib.contextmanager
def cuda_path(emu_ops, path):
    """The emulated library's switch cuda_path for a block: "gates" (the gate-kernel path
    forced) or "auto" (the tensor-core loop for float16/bfloat16 where it fits)."""
    emu_ops.set_switch("cuda_path", "gates" if path == "gates" else "")
    try:
        yield
    finally:
        emu_ops.set_switch("cuda_path", "")


ARG_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep", "lengths")


def _make_args(cfg, dtype, seed=0, lengths_dtype=torch.int64):
    return layer_args(cfg, dtype, seed=seed, lengths_dtype=lengths_dtype)


_float64 = float64_cpu
_check = assert_close_scaled  # (actual, expected, dtype, what, factor=1.0), tolerances.py


# The configurations the tensor-core loop takes (H a multiple of 8, no projection); the others
# take the gate-kernel path, with the reason lstm_layer_cuda_path reports.
TC_CONFIGS = ("uni", "bi", "bi-lengths", "peephole")
HALF = (torch.float16, torch.bfloat16)

# (kernel path, dtype, config): the gate-kernel path forced for every dtype and config, and the
# automatic choice (the tensor-core loop) for the 16-bit dtypes.
CASES = [("gates", d, c) for d in (torch.float64, torch.float32) + HALF for c in CONFIGS] + [
    ("auto", d, c) for d in HALF for c in TC_CONFIGS
]


@pytest.mark.parametrize(
    "path,dtype,config", CASES, ids=[f"{p}-{str(d).replace('torch.', '')}-{c}" for p, d, c in CASES]
)
def test_forward_backward_match_float64_reference(emu_ops, path, dtype, config):
    with cuda_path(emu_ops, path):
        args = _make_args(CONFIGS[config], dtype)
        want = "tensor_core" if path == "auto" else "gates: "
        assert emu_ops.lstm_layer_cuda_path(args["x"], args["w_hh"], args["w_hr"]).startswith(want)
        _forward_backward_match_float64_reference(emu_ops, dtype, config)


def test_switches_refuse_unknown_names_and_values(emu_ops):
    with pytest.raises(ValueError, match="cuda_path"):
        emu_ops.set_switch("cuda_path", "persistent")
    with pytest.raises(ValueError, match="no C\\+\\+ switch named 'cuda_paths'"):
        emu_ops.set_switch("cuda_paths", "")


def _forward_backward_match_float64_reference(emu_ops, dtype, config):
    args = _make_args(CONFIGS[config], dtype)
    params = {
        k: v.requires_grad_(True) for k, v in args.items() if v is not None and k != "lengths"
    }
    y, h_n, c_n, gates, cells = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES))
    ref_args = _float64(args, requires_grad=True)
    ref_y, ref_h, ref_c = reference.lstm_layer(**ref_args)
    for a, e, what in ((y, ref_y, "y"), (h_n, ref_h, "h_n"), (c_n, ref_c, "c_n")):
        _check(a, e, dtype, what)
    assert torch.isfinite(gates).all() and torch.isfinite(cells).all()

    g = torch.Generator().manual_seed(7)
    gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n))
    torch.autograd.backward((y, h_n, c_n), (gy.to(dtype), gh.to(dtype), gc.to(dtype)))
    torch.autograd.backward((ref_y, ref_h, ref_c), (gy, gh, gc))
    factor = 2.0 if dtype in (torch.float16, torch.bfloat16) else 1.0
    for name, p in params.items():
        assert p.grad is not None, f"no gradient for {name}"
        _check(p.grad, ref_args[name].grad, dtype, f"grad {name}", factor)


@pytest.mark.parametrize("config", ["bi-lengths", "all", "odd-H"])
def test_gradcheck_float64(emu_ops, config):
    T, B, I, H, P, D, peephole, lengths = CONFIGS[config]
    small = (
        3,
        min(B, 3),
        2,
        4 if H % 4 == 0 else 3,
        2 if P else 0,
        D,
        peephole,
        None if lengths is None else [3, 1, 0][: min(B, 3)],
    )
    args = _make_args(small, torch.float64)
    names = [k for k in ARG_NAMES if args[k] is not None and k != "lengths"]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return emu_ops.lstm_layer_forward(*(kw[k] for k in ARG_NAMES))[:3]

    inputs = tuple(args[k].clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_matches_the_cpu_kernels_bit_for_bit_layout(emu_ops):
    """Same saved layout (gates, cells) as the CPU kernels, so one autograd serves both."""
    args = _make_args(CONFIGS["all"], torch.float64)
    ordered = [args[k] for k in ARG_NAMES]
    emu = emu_ops.lstm_layer_forward(*ordered)
    cpu = torch.ops.lstm_fused.lstm_layer_forward(*ordered)
    for a, b, what in zip(emu, cpu, ("y", "h_n", "c_n", "gates", "cells")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m, w=what: f"{w}: {m}")


def test_empty_batch_and_zero_steps(emu_ops):
    for T, B in ((4, 0), (0, 3)):
        args = _make_args((T, B, 3, 8, 0, 2, True, None), torch.float32)
        y, h_n, c_n, gates, cells = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES))
        assert y.shape == (T, B, 16) and gates.shape == (2, T, B, 32)
        torch.testing.assert_close(h_n, args["h0"])
        torch.testing.assert_close(c_n, args["c0"])


def test_noncontiguous_inputs(emu_ops):
    args = _make_args(CONFIGS["bi"], torch.float32)
    ref = [args[k] for k in ARG_NAMES]
    x_t = args["x"].transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    w_hh_t = args["w_hh"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_t.is_contiguous() and not w_hh_t.is_contiguous()
    other = [x_t if k == "x" else w_hh_t if k == "w_hh" else args[k] for k in ARG_NAMES]
    for a, b in zip(emu_ops.lstm_layer_forward(*other), emu_ops.lstm_layer_forward(*ref)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_every_operator_has_its_cuda_kernel(emu_ops):
    """The CUDA host code registers a kernel for every operator of the schemas but those its op
    family declares in NO_CUDA_KERNEL (tests/test_registration_completeness.py reads the same
    from the registration lists where the CUDA part is not built)."""
    from test_registration_completeness import no_cuda_kernel, operators

    names = operators("lstm_fused_emu")
    assert names == operators("lstm_fused")
    have = {
        n
        for n in names
        if torch._C._dispatch_has_kernel_for_dispatch_key(f"lstm_fused_emu::{n}", "CPU")
    }
    assert have == set(names) - set(no_cuda_kernel())


@pytest.mark.parametrize("path,dtype", [("gates", torch.float32), ("auto", torch.bfloat16)])
def test_out_of_range_lengths_act_as_clamped(emu_ops, path, dtype):
    """The CUDA host code does not check the values of lengths (a device synchronisation; that
    is lstm_fused.functional's job, on the host): a length past T acts as T and one below 0 as
    0, forward and backward, and nothing is read or written out of bounds."""
    args = _make_args(CONFIGS["bi-lengths"], dtype)
    bad = dict(args, lengths=torch.tensor([7, -2, 0, 1]))
    clamped = dict(args, lengths=torch.tensor([6, 0, 0, 1]))
    with cuda_path(emu_ops, path):
        got = emu_ops.lstm_layer_forward(*(bad[k] for k in ARG_NAMES))
        want = emu_ops.lstm_layer_forward(*(clamped[k] for k in ARG_NAMES))
        for a, e, what in zip(got, want, ("y", "h_n", "c_n", "gates", "cells")):
            torch.testing.assert_close(a, e, rtol=0, atol=0, msg=lambda m, w=what: f"{w}: {m}")
        g = torch.Generator().manual_seed(5)
        grads = [torch.randn(t.shape, generator=g).to(dtype) for t in got[:3]]
        saved = [got[0], got[3], got[4]]
        back = [
            emu_ops.lstm_layer_backward(
                *grads, *(kw[k] for k in ARG_NAMES if k != "bias"), None, *saved
            )
            for kw in (bad, clamped)
        ]
        for a, e in zip(*back):
            torch.testing.assert_close(a, e, rtol=0, atol=0)


def _resets(T, B, seed=11):
    """(T, B) bool with a reset at the first and the last step among random ones."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(T, B, generator=g) < 0.4
    r[0, 0] = r[T - 1, B - 1] = True
    return r


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("config", ["bi-lengths", "proj", "all", "odd-H"])
def test_resets_match_float64_reference(emu_ops, dtype, config):
    """resets (docs/contract.md, "Resets") on the gate path: forward and every gradient
    against reference.lstm_layer with the same resets."""
    args = _make_args(CONFIGS[config], dtype, seed=3)
    T, B = args["x"].shape[:2]
    resets = _resets(T, B)
    params = {
        k: v.requires_grad_(True) for k, v in args.items() if v is not None and k != "lengths"
    }
    y, h_n, c_n, gates, cells = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES), resets)
    ref_args = _float64(args, requires_grad=True)
    ref = reference.lstm_layer(**ref_args, resets=resets)
    for a, e, what in zip((y, h_n, c_n), ref, ("y", "h_n", "c_n")):
        _check(a, e, dtype, what)
    g = torch.Generator().manual_seed(7)
    grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n)]
    torch.autograd.backward((y, h_n, c_n), [gr.to(dtype) for gr in grads])
    torch.autograd.backward(ref, grads)
    factor = 2.0 if dtype in (torch.float16, torch.bfloat16) else 1.0
    for name, p in params.items():
        _check(p.grad, ref_args[name].grad, dtype, f"grad {name}", factor)


def test_resets_gradcheck_float64(emu_ops):
    args = _make_args((4, 3, 2, 4, 2, 2, True, [4, 1, 3]), torch.float64, seed=2)
    resets = _resets(4, 3, seed=4)
    names = [k for k in ARG_NAMES if args[k] is not None and k != "lengths"]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return emu_ops.lstm_layer_forward(*(kw[k] for k in ARG_NAMES), resets)[:3]

    inputs = tuple(args[k].clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_resets_all_false_change_nothing(emu_ops):
    args = _make_args(CONFIGS["all"], torch.float32)
    ordered = [args[k] for k in ARG_NAMES]
    never = torch.zeros(args["x"].shape[:2], dtype=torch.bool)
    for a, b in zip(
        emu_ops.lstm_layer_forward(*ordered, never), emu_ops.lstm_layer_forward(*ordered)
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dtype_errors(emu_ops):
    args = _make_args(CONFIGS["uni"], torch.float32)
    args = {
        k: (v.to(torch.int32) if v is not None and k != "lengths" else v) for k, v in args.items()
    }
    with pytest.raises(TypeError, match="dtype Int is not supported"):
        emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES))


# ------------------------------------ the tensor-core loop (lstm_tc_forward.cuh), emulated

# (T, B, I, H, D, peephole, lengths): B = 20 takes two m16 tiles; H = 24 gives six CTAs of
# four units per direction and a second warp with half a K-slice; H = 32 the full K of the
# emulation configurations (2 warps x 16).
TC_SHAPES = {
    "two-m-tiles": (5, 20, 3, 8, 1, False, None),
    "partial-k-slice": (6, 3, 4, 24, 2, True, [6, 0, 3]),
    "full-k": (4, 5, 6, 32, 2, False, [1, 4, 0, 2, 3]),
}


def _reference_outputs(args):
    ref = _float64(args)
    return reference.lstm_layer(**ref)


@pytest.mark.parametrize("dtype", HALF, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("shape", list(TC_SHAPES))
def test_tensor_core_loop_shapes(emu_ops, dtype, shape):
    """Against the float64 reference (y, h_n, c_n), and its saved gates and cells against the
    gate-kernel path's (the layout the backward reads)."""
    T, B, I, H, D, peephole, lengths = TC_SHAPES[shape]
    args = _make_args((T, B, I, H, 0, D, peephole, lengths), dtype, seed=3)
    ordered = [args[k] for k in ARG_NAMES]
    assert emu_ops.lstm_layer_cuda_path(args["x"], args["w_hh"], None) == "tensor_core"
    got = emu_ops.lstm_layer_forward(*ordered)
    for a, e, what in zip(got, _reference_outputs(args), ("y", "h_n", "c_n")):
        _check(a, e, dtype, what)
    with cuda_path(emu_ops, "gates"):
        gate_path = emu_ops.lstm_layer_forward(*ordered)
    for a, e, what in zip(got[3:], gate_path[3:], ("gates", "cells")):
        _check(a, e.double(), dtype, what)
    inference = emu_ops.lstm_layer_inference(*ordered)
    for a, e in zip(inference, got[:3]):  # the same kernel without the saved tensors
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_tensor_core_loop_h0_at_an_unaligned_offset(emu_ops):
    """h0 as a contiguous view at an odd storage offset (its data not 16-byte aligned): the
    kernel reads h0 with 16-byte cp.async, which the host must not hand a misaligned address
    (on a GPU a sticky "misaligned address" error; the emulation reports it)."""
    dtype = torch.bfloat16
    args = _make_args((4, 3, 4, 8, 0, 2, False, [4, 2, 3]), dtype, seed=6)
    h0 = args["h0"]
    buf = torch.empty(h0.numel() + 1, dtype=dtype)
    args["h0"] = buf[1:].view(h0.shape).copy_(h0)
    assert args["h0"].is_contiguous() and args["h0"].data_ptr() % 16 != 0
    assert emu_ops.lstm_layer_cuda_path(args["x"], args["w_hh"], None) == "tensor_core"
    got = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES))
    for a, e, what in zip(got, _reference_outputs(args), ("y", "h_n", "c_n")):
        _check(a, e, dtype, what)


def test_tensor_core_loop_two_layers(emu_ops):
    """Two bidirectional layers, the second fed the first's output (what lstm_fused.functional
    does per layer), against the float64 reference chained the same way."""
    dtype, T, B, H, D = torch.bfloat16, 5, 3, 8, 2
    lengths = [5, 2, 4]
    first = _make_args((T, B, 4, H, 0, D, False, lengths), dtype, seed=4)
    second = _make_args((T, B, D * H, H, 0, D, False, lengths), dtype, seed=5)
    y1 = emu_ops.lstm_layer_forward(*(first[k] for k in ARG_NAMES))[0]
    second["x"] = y1
    y2, h2, c2 = emu_ops.lstm_layer_forward(*(second[k] for k in ARG_NAMES))[:3]
    ref1 = _reference_outputs(first)[0]
    ref2 = reference.lstm_layer(**dict(_float64(second), x=ref1))
    for a, e, what in zip((y2, h2, c2), ref2, ("y", "h_n", "c_n")):
        _check(a, e, dtype, what)


@pytest.mark.parametrize("dtype", HALF, ids=["float16", "bfloat16"])
@pytest.mark.parametrize(
    "cfg",
    [CONFIGS["bi-lengths"], (6, 3, 4, 24, 0, 2, True, [6, 0, 3])],
    ids=["bi-lengths", "partial-k-slice"],
)
def test_tensor_core_loop_resets(emu_ops, dtype, cfg):
    """resets (docs/contract.md) in the tensor-core loop: forward against the reference, the
    saved gates and cells against the gate-kernel path's, and the gradients (the gate-kernel
    backward from what the tensor-core forward saved)."""
    args = _make_args(cfg, dtype, seed=6)
    T, B = args["x"].shape[:2]
    resets = _resets(T, B, seed=12)
    assert emu_ops.lstm_layer_cuda_path(args["x"], args["w_hh"], None) == "tensor_core"
    params = {
        k: v.requires_grad_(True) for k, v in args.items() if v is not None and k != "lengths"
    }
    got = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES), resets)
    ref_args = _float64(args, requires_grad=True)
    ref = reference.lstm_layer(**ref_args, resets=resets)
    for a, e, what in zip(got, ref, ("y", "h_n", "c_n")):
        _check(a, e, dtype, what)
    with cuda_path(emu_ops, "gates"), torch.no_grad():
        gate_path = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES), resets)
    for a, e, what in zip(got[3:], gate_path[3:], ("gates", "cells")):
        _check(a, e.double(), dtype, what)
    g = torch.Generator().manual_seed(8)
    grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in got[:3]]
    torch.autograd.backward(got[:3], [gr.to(dtype) for gr in grads])
    torch.autograd.backward(ref, grads)
    for name, p in params.items():
        _check(p.grad, ref_args[name].grad, dtype, f"grad {name}", 2.0)


@pytest.mark.parametrize(
    "cfg,dtype,reason",
    [
        ((3, 2, 3, 5, 0, 1, False, None), torch.bfloat16, "H = 5 is not a multiple of 8"),
        ((3, 2, 3, 8, 4, 1, False, None), torch.float16, "proj_size > 0"),
        ((3, 40, 3, 8, 0, 1, False, None), torch.bfloat16, "batch B = 40 is above"),
        ((3, 2, 3, 40, 0, 1, False, None), torch.bfloat16, "hidden_size H = 40 is above"),
        ((3, 2, 3, 8, 0, 1, False, None), torch.float32, "float32 keeps the gate-kernel path"),
        ((3, 2, 3, 8, 0, 1, False, None), torch.float64, "float64 takes the gate-kernel path"),
    ],
)
def test_shapes_the_tensor_core_loop_does_not_take_say_why(emu_ops, cfg, dtype, reason):
    args = _make_args(cfg, dtype)
    path = emu_ops.lstm_layer_cuda_path(args["x"], args["w_hh"], args["w_hr"])
    assert path.startswith("gates: ") and reason in path, path
    T, B, I, H, P, D, _, _ = cfg
    y, h_n, c_n = emu_ops.lstm_layer_inference(*(args[k] for k in ARG_NAMES))
    for a, e, what in zip((y, h_n, c_n), _reference_outputs(args), ("y", "h_n", "c_n")):
        _check(a, e, dtype, what)


# ------------------------------------------------- self-attention (mhsa_cuda.cpp, mhsa_kernels.cuh)

MHSA_CASES = [
    # (B, N, T, Dh, dtype): T = 70 spans two 64-row blocks (MAX_D = 32: 2 threads a row) and
    # three 32-key tiles
    (3, 2, 70, 5, torch.float64),
    (3, 2, 70, 5, torch.float32),
    (2, 2, 19, 40, torch.float32),  # the MAX_D = 64 instantiation (4 threads a row)
    (2, 1, 40, 100, torch.float64),  # MAX_D = 128 (8 threads a row, 16-row blocks)
    (3, 1, 33, 8, torch.float16),
]


@pytest.mark.parametrize("B,N,T,Dh,dtype", MHSA_CASES)
def test_mhsa_matches_float64_reference(emu_ops, B, N, T, Dh, dtype):
    g = torch.Generator().manual_seed(T + Dh)
    lengths = torch.tensor([0, 1, T, 17, 5][:B])
    q, k, v = (torch.randn(B, N, T, Dh, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (k, v):  # padded keys and values hold NaN: never read
        for b, n in enumerate(lengths.tolist()):
            t[b, :, n:] = float("nan")
    scale = Dh**-0.5
    inputs = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
    out, lse = emu_ops.mhsa_forward(*inputs, lengths, scale)
    ref_in = [t.detach().double().nan_to_num(0.0).requires_grad_(True) for t in inputs]
    ref_out = reference_mhsa.attention_core(*ref_in, lengths, scale)[0]
    _check(out, ref_out, dtype, "out")
    assert torch.isinf(lse[0]).all() and torch.isfinite(lse[1:]).all()
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    want = torch.autograd.grad(ref_out, ref_in, grad)
    factor = 2.0 if dtype == torch.float16 else 1.0
    for name, a, e in zip("qkv", got, want):
        _check(a, e, dtype, f"grad {name}", factor)


def test_mhsa_refuses_a_head_size_without_kernel(emu_ops):
    q = torch.randn(1, 1, 3, 129)
    with pytest.raises(ValueError, match=r"head size Dh = 129 is outside"):
        emu_ops.mhsa_forward(q, q, q, None, 1.0)


def test_mhsa_gradcheck_float64(emu_ops):
    # Small: every emulated block runs 128 OS threads, and gradcheck calls the forward twice
    # per input element.
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(2, 1, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    lengths = torch.tensor([4, 2])
    assert torch.autograd.gradcheck(
        lambda q, k, v: emu_ops.mhsa_forward(q, k, v, lengths, 0.6)[0], (q, k, v)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mhsa_dropout_matches_reference_mask(emu_ops, dtype):
    """Attention dropout in the CUDA kernels: the mask of csrc/attention_dropout.h, the one the
    reference applies for the same seed (two query blocks, so rows past the first block)."""
    B, N, T, Dh, p, seed = 3, 2, 70, 5, 0.3, torch.tensor(-0x1234_5678_9ABC_DEF1)
    g = torch.Generator().manual_seed(11)
    lengths = torch.tensor([0, 1, T])
    inputs = [
        torch.randn(B, N, T, Dh, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
        for _ in range(3)
    ]
    out, _ = emu_ops.mhsa_forward(*inputs, lengths, 0.4, p, seed)
    ref_in = [t.detach().double().requires_grad_(True) for t in inputs]
    ref_out = reference_mhsa.attention_core(*ref_in, lengths, 0.4, p, True, seed=seed)[0]
    _check(out, ref_out, dtype, "out")
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    want = torch.autograd.grad(ref_out, ref_in, grad)
    for name, a, e in zip("qkv", got, want):
        _check(a, e, dtype, f"grad {name}")


# ---------------------------- masked softmax, pooling, channel (attention_cuda.cpp, *.cuh)


def _lengths(B, T):
    return torch.tensor([0, 1, T, 3, T - 2][:B])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_masked_softmax_matches_reference(emu_ops, dtype):
    """N = 300 > 256 threads: a thread takes several columns; lengths and a mask together."""
    g = torch.Generator().manual_seed(21)
    R, N = 4, 300
    lengths = torch.tensor([0, 1, N, 123])
    mask = torch.rand(R, N, generator=g) > 0.3
    scores = torch.randn(R, N, generator=g, dtype=torch.float64) * 3
    for r, n in enumerate(lengths.tolist()):
        scores[r, n:] = float("nan")  # never read
    x = scores.to(dtype).requires_grad_(True)
    probs = emu_ops.masked_softmax_forward(x, lengths, mask, 0.7)
    keep = mask & (torch.arange(N)[None, :] < lengths[:, None])
    ref_x = scores.nan_to_num(0.0).requires_grad_(True)
    want = reference.masked_softmax(ref_x, keep, 0.7)
    _check(probs, want, dtype, "probs")
    grad = torch.randn(R, N, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad(probs, x, grad.to(dtype))
    (exp,) = torch.autograd.grad(want, ref_x, grad)
    _check(got, exp, dtype, "grad scores")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("query", [False, True])
def test_attention_pooling_matches_reference(emu_ops, dtype, query):
    """T = 21 steps over tiles of 8 (one per warp), D = 300 > 256 threads: two feature blocks."""
    g = torch.Generator().manual_seed(22)
    B, T, D, A = 5, 21, 300, 7
    lengths = _lengths(B, T)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    proj = torch.randn(B, T, A, generator=g, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = float("nan")
        proj[b, n:] = float("nan")
    v = torch.randn(A, generator=g, dtype=torch.float64)
    q = torch.randn(B, A, generator=g, dtype=torch.float64) if query else None
    inputs = [t.to(dtype).requires_grad_(True) for t in (x, proj, v)]
    q_in = q.to(dtype).requires_grad_(True) if query else None
    context, alpha, lse = emu_ops.attention_pooling_forward(*inputs, q_in, lengths)
    ref = [t.nan_to_num(0.0).requires_grad_(True) for t in (x, proj, v)]
    q_ref = q.clone().requires_grad_(True) if query else None
    want = reference.attention_pooling(*ref, q_ref, lengths)
    for a, e, what in zip((context, alpha), want[:2], ("context", "alpha")):
        _check(a, e, dtype, what)
    assert torch.isinf(lse[0]) and torch.allclose(lse[1:].double(), want[2][1:], rtol=1e-4)
    gc = torch.randn(B, D, generator=g, dtype=torch.float64)
    ga = torch.randn(B, T, generator=g, dtype=torch.float64)
    diff = inputs + ([q_in] if query else [])
    got = torch.autograd.grad((context, alpha), diff, (gc.to(dtype), ga.to(dtype)))
    exp = torch.autograd.grad(want[:2], ref + ([q_ref] if query else []), (gc, ga))
    for a, e, what in zip(got, exp, ("x", "proj", "v", "qproj")):
        _check(a, e, dtype, f"grad {what}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_channel_mean_and_rescale_match_reference(emu_ops, dtype):
    g = torch.Generator().manual_seed(23)
    B, T, C = 4, 9, 300
    lengths = _lengths(B, T)
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = float("nan")
    w = torch.rand(B, C, generator=g, dtype=torch.float64)
    xd, wd = x.to(dtype).requires_grad_(True), w.to(dtype).requires_grad_(True)
    mean = emu_ops.channel_masked_mean_forward(xd, lengths)
    y = emu_ops.channel_rescale_forward(xd, wd, lengths)
    xr, wr = x.nan_to_num(0.0).requires_grad_(True), w.clone().requires_grad_(True)
    mean_ref = reference.masked_mean(xr, lengths)
    y_ref = reference.channel_rescale(xr, wr, lengths)
    _check(mean, mean_ref, dtype, "mean")
    _check(y, y_ref, dtype, "rescaled")
    gm = torch.randn(B, C, generator=g, dtype=torch.float64)
    gy = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((mean, y), (xd, wd), (gm.to(dtype), gy.to(dtype)))
    exp = torch.autograd.grad((mean_ref, y_ref), (xr, wr), (gm, gy))
    for a, e, what in zip(got, exp, ("x", "w")):
        _check(a, e, dtype, f"grad {what}")
