"""The tensor-core backward time loop (csrc/cuda/lstm_tc_backward.cuh) run on the CPU, emulated.

Three levels:
  - the layer operator lstm_layer_backward of the emulated CUDA library (tests/emulated_cuda.py),
    which takes this loop for bfloat16 / float16 where it fits: every gradient (x, h0, c0,
    w_ih, w_hh, bias, peepholes) against autograd through the float64 reference, with the
    forward of either path, and the reason it reports where it does not take the call;
  - the loop alone (dz of every step, grad_h0, grad_c0), through test-only operators built with
    the kernel into a small library of its own (tests/cuda_emu/tc_backward_test_ops.cpp,
    namespace lstm_fused_tcbwd_emu): against autograd through a float64 forward written here,
    with lengths, both directions, resets (a kernel argument the layer operators do not pass
    yet), peepholes, one and two m16 batch tiles, bfloat16 and float16, outputs NaN-filled;
  - the plan: which configuration a shape gets, and the reason it is refused otherwise.
The emulation runs every CUDA thread as an OS thread; mma.sync, ldmatrix, cp.async and the
acquire/release flags come from csrc/cuda/tc_primitives.cuh's emulation (a flag wait that
never ends fails the test instead of hanging). What it cannot check: the GPU's memory model,
timing, registers (tests/test_cuda_resources_tc_backward.py has the ptxas side).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from emulated_cuda import emulated_ops
from helpers import assert_close_scaled, float64_cpu, layer_args
from lstm_fused import reference

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="no host C++ compiler to build the emulated CUDA library",
)

DTYPES = (torch.bfloat16, torch.float16)


@pytest.fixture(scope="module")
def tc_ops(tmp_path_factory):
    from torch.utils.cpp_extension import load

    build = tmp_path_factory.mktemp("tc_backward_emu_build")
    sources = []
    for src in sorted((ROOT / "csrc" / "cuda").glob("lstm_tc_backward*.cu")) + [
        ROOT / "tests" / "cuda_emu" / "tc_backward_test_ops.cpp"
    ]:
        wrapper = build / (src.stem + "_emu.cpp")  # load() picks the host compiler by extension
        wrapper.write_text(f'#include "{src}"\n')
        sources.append(str(wrapper))
    load(
        name="lstm_fused_tcbwd_emu",
        sources=sources,
        extra_include_paths=[str(ROOT / "csrc"), str(ROOT / "tests" / "cuda_emu")],
        extra_cflags=["-O1", "-pthread", "-DLSTM_FUSED_CUDA_EMULATION"],
        extra_ldflags=["-pthread"],
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.lstm_fused_tcbwd_emu


def forward_float64(gx, h0, c0, w_hh, w_peep, lengths, resets):
    """The layer's forward from the input projections, float64, with lengths and resets
    (INTERFACES of the resets: direction 0 replaces the state by (h0, c0) before step t where
    resets[t, b]; direction 1 before step t - 1, i.e. when step t runs where resets[t + 1, b];
    only inside the length). gx (T, B, D, G); returns y (T, B, D*H), h_n, c_n (D, B, H) and
    the saved gates (D, T, B, G) (zero at padded steps) and cells (D, T, B, H) (carried)."""
    T, B, D, G = gx.shape
    steps = torch.arange(T).unsqueeze(1)
    valid = (
        (steps < lengths.unsqueeze(0))
        if lengths is not None
        else torch.ones(T, B, dtype=torch.bool)
    )
    ys, h_ns, c_ns, gates_d, cells_d = [], [], [], [], []
    for d in range(D):
        h, c = h0[d], c0[d]
        outs, gts, cls = [None] * T, [None] * T, [None] * T
        for t in range(T) if d == 0 else range(T - 1, -1, -1):
            if resets is not None:
                if d == 0:
                    cut = resets[t] & valid[t]
                else:
                    cut = (
                        resets[t + 1] & valid[t + 1]
                        if t + 1 < T
                        else torch.zeros(B, dtype=torch.bool)
                    )
                h = torch.where(cut[:, None], h0[d], h)
                c = torch.where(cut[:, None], c0[d], c)
            z_i, z_f, z_g, z_o = (gx[t, :, d] + h @ w_hh[d].t()).chunk(4, dim=-1)
            if w_peep is not None:
                z_i = z_i + w_peep[d, 0] * c
                z_f = z_f + w_peep[d, 1] * c
            i, f, g = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g)
            c_new = f * c + i * g
            if w_peep is not None:
                z_o = z_o + w_peep[d, 2] * c_new
            o = torch.sigmoid(z_o)
            h_new = o * torch.tanh(c_new)
            v = valid[t][:, None]
            h, c = torch.where(v, h_new, h), torch.where(v, c_new, c)
            outs[t] = torch.where(v, h_new, torch.zeros_like(h_new))
            gts[t] = torch.where(
                v, torch.cat([i, f, g, o], dim=-1), torch.zeros(B, G, dtype=gx.dtype)
            )
            cls[t] = c
        ys.append(torch.stack(outs))
        h_ns.append(h)
        c_ns.append(c)
        gates_d.append(torch.stack(gts))
        cells_d.append(torch.stack(cls))
    return (
        torch.cat(ys, dim=2),
        torch.stack(h_ns),
        torch.stack(c_ns),
        torch.stack(gates_d),
        torch.stack(cells_d),
    )


def _case(T, B, H, D, peephole, lengths, resets_p, dtype, seed=0):
    """Inputs rounded to dtype, the kernel's arguments and the float64 reference gradients."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).double()

    gx, h0, c0 = rnd(T, B, D, 4 * H, scale=1.0), rnd(D, B, H), rnd(D, B, H)
    w_hh = rnd(D, 4 * H, H)
    w_peep = rnd(D, 3, H) if peephole else None
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    resets = None if resets_p is None else torch.rand(T, B, generator=g) < resets_p
    leaves = [t.clone().requires_grad_(True) for t in (gx, h0, c0)]
    y, h_n, c_n, gates, cells = forward_float64(*leaves, w_hh, w_peep, lengths, resets)
    gy, gh, gc = (rnd(*t.shape, scale=1.0) for t in (y, h_n, c_n))
    want = torch.autograd.grad((y, h_n, c_n), leaves, (gy, gh, gc))
    kernel_args = [t.detach().to(dtype) for t in (gates, cells, c0, w_hh)]
    kernel_args += [None if w_peep is None else w_peep.to(dtype), lengths, resets]
    kernel_args += [t.to(dtype) for t in (gy, gh, gc)]
    return kernel_args, want


# (T, B, H, D, peephole, lengths, reset probability): H = 8 is three CTAs of 3, 3, 2 units
# (emulated plan: at most 3 units a CTA); B = 20 and 40 take the three-m16-tile configuration
# (two or three tiles used); H = 40 the one with 96 K values a warp.
LOOP_CASES = {
    "uni": (5, 3, 8, 1, False, None, None),
    "bi-lengths": (6, 4, 8, 2, False, [6, 1, 0, 4], None),
    "bi-resets": (7, 4, 8, 2, False, None, 0.3),
    "bi-lengths-resets": (7, 4, 7, 2, False, [7, 5, 0, 3], 0.35),
    "peephole-resets": (5, 3, 5, 2, True, [2, 5, 0], 0.3),
    "two-m-tiles": (4, 20, 6, 2, False, [4, 3, 1, 0, 2] * 4, 0.2),
    "three-m-tiles": (3, 40, 5, 1, False, [3, 2, 1, 0, 3] * 8, 0.2),
    "wide-k": (3, 2, 40, 1, True, None, None),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", list(LOOP_CASES))
def test_loop_matches_float64_autograd(tc_ops, name, dtype):
    T, B, H, D, peephole, lengths, resets_p = LOOP_CASES[name]
    config, units, ctas, refusal = tc_ops.plan(B, H, D, 0, dtype)
    assert config >= 0 and refusal == "", refusal
    assert units * ctas >= H and units <= 3
    args, (d_gx, d_h0, d_c0) = _case(T, B, H, D, peephole, lengths, resets_p, dtype, seed=len(name))
    if resets_p is not None:
        assert args[6].any(), "the case draws no reset"
    dz, gh0, gc0 = tc_ops.loop(*args)
    for got, want, what in ((dz, d_gx, "dz"), (gh0, d_h0, "grad_h0"), (gc0, d_c0, "grad_c0")):
        assert_close_scaled(got, want, dtype, what, factor=2.0)


def test_resets_change_the_gradients(tc_ops):
    """The resets argument is read: the same inputs without it give other gradients."""
    args, _ = _case(*LOOP_CASES["bi-resets"], torch.float16, seed=3)
    with_resets = tc_ops.loop(*args)
    without = tc_ops.loop(*(args[:6] + [None] + args[7:]))
    assert not torch.equal(with_resets[1], without[1])


def test_out_of_range_lengths_act_as_clamped(tc_ops):
    args, _ = _case(6, 4, 8, 2, False, [6, 1, 0, 4], 0.3, torch.bfloat16, seed=5)
    bad = list(args)
    bad[5] = torch.tensor([9, -2, 0, 4])
    clamped = list(args)
    clamped[5] = torch.tensor([6, 0, 0, 4])
    for a, e in zip(tc_ops.loop(*bad), tc_ops.loop(*clamped)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_plan_picks_and_refuses(tc_ops):
    bf16 = torch.bfloat16
    assert tc_ops.plan(16, 8, 2, 0, bf16)[:3] == (0, 3, 3)  # B <= 16: one m16 tile
    assert tc_ops.plan(17, 8, 2, 0, bf16)[:3] == (1, 3, 3)  # up to three m16 tiles
    assert tc_ops.plan(4, 40, 1, 0, bf16)[:3] == (2, 3, 14)  # K = 168: 96 a warp
    refusals = {
        "proj_size > 0": tc_ops.plan(4, 8, 1, 4, bf16),
        "bfloat16 and float16 only": tc_ops.plan(4, 8, 1, 0, torch.float32),
        "batch 49 > 48 rows": tc_ops.plan(49, 8, 1, 0, bf16),
        "exceed the register capacity": tc_ops.plan(4, 60, 1, 0, bf16),
        "needs 134 CTAs": tc_ops.plan(4, 200, 2, 0, bf16),
    }
    for why, (config, _, _, refusal) in refusals.items():
        assert config == -1 and why in refusal, (why, refusal)


# ------------------------------------------------ the layer operator (lstm_layer_cuda.cpp)

ARG_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep", "lengths", "resets")
GRAD_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep")


@pytest.fixture(scope="module")
def emu_ops(tmp_path_factory):
    return emulated_ops(tmp_path_factory)


# (T, B, I, H, P, D, peephole, lengths), reset probability: "odd-H" has a forward on the
# gate-kernel path (H not a multiple of 8) and a backward on the tensor-core loop;
# "two-m-tiles" B = 20.
OP_CASES = {
    "uni": ((5, 3, 5, 8, 0, 1, False, None), None),
    "bi-lengths": ((6, 4, 5, 8, 0, 2, False, [6, 1, 0, 4]), None),
    "bi-lengths-resets": ((6, 4, 5, 8, 0, 2, False, [6, 1, 0, 4]), 0.3),
    "peephole-resets": ((5, 3, 4, 8, 0, 2, True, [2, 5, 0]), 0.4),
    "odd-H": ((4, 2, 3, 5, 0, 2, True, None), None),
    "two-m-tiles": ((4, 20, 3, 6, 0, 1, False, [4, 3, 1, 0, 2] * 4), 0.2),
}


def _layer_grads_against_reference(emu_ops, cfg, dtype, path_prefix, resets_p=None):
    args = layer_args(cfg, dtype, seed=11)
    args["resets"] = None
    if resets_p is not None:
        g = torch.Generator().manual_seed(13)
        args["resets"] = torch.rand(cfg[0], cfg[1], generator=g) < resets_p
        assert args["resets"][1:].any(), "the case draws no reset"
    path = emu_ops.lstm_layer_cuda_backward_path(args["x"], args["w_hh"], args["w_hr"])
    assert path.startswith(path_prefix), path
    y, h_n, c_n, gates, cells = emu_ops.lstm_layer_forward(*(args[k] for k in ARG_NAMES))
    g = torch.Generator().manual_seed(7)
    gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n))
    got = emu_ops.lstm_layer_backward(
        gy.to(dtype),
        gh.to(dtype),
        gc.to(dtype),
        *(args[k] for k in ARG_NAMES if k != "bias"),
        y,
        gates,
        cells,
    )
    ref = float64_cpu({k: v for k, v in args.items() if k != "resets"}, requires_grad=True)
    ref["resets"] = args["resets"]
    outs = reference.lstm_layer(**ref)
    names = [k for k in GRAD_NAMES if ref[k] is not None]
    want = torch.autograd.grad(outs, [ref[k] for k in names], (gy, gh, gc))
    got = dict(zip(GRAD_NAMES, got))
    for name, w in zip(names, want):
        assert_close_scaled(got[name], w, dtype, f"grad {name}", factor=2.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", list(OP_CASES))
def test_layer_backward_matches_float64_reference(emu_ops, name, dtype):
    cfg, resets_p = OP_CASES[name]
    _layer_grads_against_reference(emu_ops, cfg, dtype, "tensor_core", resets_p)


@pytest.mark.parametrize(
    "cfg,dtype,reason",
    [
        ((3, 2, 3, 8, 4, 1, False, None), torch.bfloat16, "proj_size > 0"),
        ((3, 49, 3, 8, 0, 1, False, None), torch.float16, "batch 49 > 48 rows"),
        ((2, 2, 3, 60, 0, 1, False, None), torch.bfloat16, "exceed the register capacity"),
        ((3, 2, 3, 8, 0, 2, False, None), torch.float32, "float32 keeps the gate-kernel path"),
    ],
)
def test_calls_the_loop_does_not_take_say_why(emu_ops, cfg, dtype, reason):
    """The gate-kernel backward runs them (checked against the reference) and the reason is
    the one lstm_layer_cuda_backward_path reports."""
    args = layer_args(cfg, dtype)
    path = emu_ops.lstm_layer_cuda_backward_path(args["x"], args["w_hh"], args["w_hr"])
    assert path.startswith("gates: ") and reason in path, path
    _layer_grads_against_reference(emu_ops, cfg, dtype, "gates: ")


def test_switch_gates_forces_the_gate_path(emu_ops):
    args = layer_args(OP_CASES["uni"][0], torch.bfloat16)
    query = (args["x"], args["w_hh"], args["w_hr"])
    assert emu_ops.lstm_layer_cuda_backward_path(*query) == "tensor_core"
    emu_ops.set_switch("cuda_path", "gates")
    try:
        path = emu_ops.lstm_layer_cuda_backward_path(*query)
    finally:
        emu_ops.set_switch("cuda_path", "")
    assert path == "gates: the switch cuda_path is 'gates'", path
