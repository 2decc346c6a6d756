"""Tests of the Triton LSTM kernels (lstm_fused.triton_kernels, backend="triton").

Without a GPU they run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
which is slow: the shapes are tiny (T <= 5, B <= 3, H <= 6). On a GPU the same tests run at
real sizes. Every kernel output is NaN before the kernel runs (switch poison), so an element a
kernel forgets fails the comparison.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_fused
from lstm_fused import reference, switches
from backends import GPU as ON_GPU
from backends import call_reason, device_of, skip_reason, triton_op
from tolerances import tol

if skip_reason("lstm_layer", "triton"):
    pytest.skip(skip_reason("lstm_layer", "triton"), allow_module_level=True)

# The path rule and its override of the kernel library itself (no lstm_fused operator).
from lstm_fused.triton_kernels.tuning import choose_path, force_path  # noqa: E402

DEVICE = torch.device(device_of("triton"))
FWD = triton_op("lstm_layer_forward").default
INFER = triton_op("lstm_layer_inference").default
BWD = triton_op("lstm_layer_backward").default

# (T, B, I, H, P): tiny under the interpreter; on a GPU, B not a multiple of the 16-row block
# and H, P not powers of two, so every mask is exercised.
if ON_GPU:
    SIZES = dict(T=40, B=37, I=40, H=48, P=24)
else:
    SIZES = dict(T=4, B=3, I=3, H=6, P=3)

# Max abs error allowed, relative to max(1, max |reference|) (tests/tolerances.py).
KIND = "triton_lstm_gpu" if ON_GPU else "triton_lstm"
TOL = {
    dt: tol(KIND, dt)["atol"]
    for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
}


@pytest.fixture(autouse=True)
def _poisoned_outputs():
    with switches.override(poison="1"):
        yield


def assert_close(actual, expected, tol, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    assert not torch.isnan(actual).any(), f"{what}: NaN in the result (an unwritten element?)"
    err = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol * scale:.3e}"


def layer_inputs(T, B, I, H, P, D, peephole, lengths, dtype=torch.float64, seed=0):
    """Random float64 arguments of one layer call (csrc/lstm_layer_args.h), as a dict."""
    gen = torch.Generator().manual_seed(seed)
    R = P or H

    def rnd(*shape, scale=0.5):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(
            device=DEVICE, dtype=dtype
        )

    return dict(
        x=rnd(T, B, I),
        h0=rnd(D, B, R),
        c0=rnd(D, B, H),
        w_ih=rnd(D, 4 * H, I, scale=0.5 / I**0.5),
        w_hh=rnd(D, 4 * H, R, scale=0.5 / R**0.5),
        bias=rnd(D, 4 * H, scale=0.2),
        w_hr=rnd(D, P, H, scale=1 / H**0.5) if P else None,
        w_peep=rnd(D, 3, H) if peephole else None,
        lengths=None if lengths is None else torch.tensor(lengths, device=DEVICE),
    )


def some_lengths(T, B):
    """Lengths covering 0, T and values in between (B >= 3)."""
    return [T, 0] + [max(1, (T * (k + 1)) // (B - 1)) % (T + 1) for k in range(B - 2)]


CONFIGS = {
    "one_direction": dict(D=1, P=False, peephole=False, lengths=False),
    "bidirectional_lengths": dict(D=2, P=False, peephole=False, lengths=True),
    "bidirectional_proj_peephole_lengths": dict(D=2, P=True, peephole=True, lengths=True),
}


def config_inputs(name, dtype=torch.float64, seed=0):
    c, s = CONFIGS[name], SIZES
    lengths = some_lengths(s["T"], s["B"]) if c["lengths"] else None
    return layer_inputs(
        s["T"],
        s["B"],
        s["I"],
        s["H"],
        s["P"] if c["P"] else 0,
        c["D"],
        c["peephole"],
        lengths,
        dtype,
        seed,
    )


ORDER = ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep", "lengths")


PATH_CONFIGS = [(p, c) for p in ("sequence", "step") for c in CONFIGS]


@pytest.mark.parametrize("path,config", PATH_CONFIGS, ids=[f"{p}-{c}" for p, c in PATH_CONFIGS])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["float32", "float16", "bfloat16"]
)
def test_layer_forward_backward_match_float64_reference(dtype, path, config):
    ref_in = config_inputs(config)
    ref_in = {
        k: (v.requires_grad_() if v is not None and v.is_floating_point() else v)
        for k, v in ref_in.items()
    }
    ref = reference.lstm_layer(*(ref_in[k] for k in ORDER))
    grads = [torch.randn_like(r) for r in ref]
    torch.autograd.backward(ref, grads)

    ins = {
        k: (v.detach().to(dtype).requires_grad_() if v is not None and v.is_floating_point() else v)
        for k, v in ref_in.items()
    }
    with switches.override(triton_path=path):
        out = FWD(*(ins[k] for k in ORDER))
        torch.autograd.backward(out[:3], [g.to(dtype) for g in grads])
    for name, a, e in zip(("y", "h_n", "c_n"), out, ref):
        assert a.dtype == dtype
        assert_close(a, e, TOL[dtype], name)
    for k in ORDER[:-1]:
        if ins[k] is not None:
            assert_close(ins[k].grad, ref_in[k].grad, TOL[dtype], f"grad {k}")
    # The saved tensors keep the layout of the C++ operators: gates zero at padded steps.
    gates, cells = out[3], out[4]
    assert gates.shape[:3] == (ins["w_ih"].shape[0], ins["x"].shape[0], ins["x"].shape[1])
    assert cells.shape == gates.shape[:3] + (gates.shape[3] // 4,)
    if ins["lengths"] is not None:
        steps = torch.arange(gates.shape[1], device=DEVICE).unsqueeze(1)
        padded = steps >= ins["lengths"].unsqueeze(0)  # (T, B)
        assert (gates[:, padded] == 0).all()


@pytest.mark.parametrize("path", ["sequence", "step"])
def test_gradcheck_float64(path):
    T, B = (3, 3) if not ON_GPU else (6, 5)
    ins = layer_inputs(T, B, 2, 3, 2, 2, True, [T, 1, 0][:B] + [2] * (B - 3), seed=1)
    names = [k for k in ORDER[:-1] if ins[k] is not None]
    args = [ins[k].requires_grad_() for k in names]

    def fn(*tensors):
        kw = dict(zip(names, tensors))
        kw["lengths"] = ins["lengths"]
        return FWD(*(kw.get(k) for k in ORDER))[:3]

    with switches.override(triton_path=path):
        assert torch.autograd.gradcheck(fn, args, fast_mode=True, atol=1e-7, rtol=1e-6)


def test_opcheck():
    """Schema, fake kernels, autograd registration and AOT dispatch of both operators (the
    path inside does not change any of them; the sequence path is the cheapest to trace)."""
    path = "sequence"
    ins = config_inputs("bidirectional_proj_peephole_lengths", torch.float32, seed=2)
    args = [
        ins[k].requires_grad_() if ins[k] is not None and k != "lengths" else ins[k] for k in ORDER
    ]
    with switches.override(triton_path=path):
        torch.library.opcheck(FWD, tuple(args))
        torch.library.opcheck(INFER, tuple(a.detach() if a is not None else a for a in args))
        out = FWD(*[a.detach() if a is not None else a for a in args])
        grads = [torch.randn_like(t) for t in out[:3]]
        bargs = (
            *grads,
            ins["x"],
            ins["h0"],
            ins["c0"],
            ins["w_ih"],
            ins["w_hh"],
            ins["w_hr"],
            ins["w_peep"],
            ins["lengths"],
            None,
            out[0],
            out[3],
            out[4],
        )
        torch.library.opcheck(BWD, tuple(t.detach() if t is not None else t for t in bargs))


@pytest.mark.parametrize("path", ["sequence", "step"])
def test_inference_op_matches_forward(path):
    """The no_grad operator (no gates, cells written) gives the forward's y, h_n, c_n exactly;
    the module takes it under torch.no_grad()."""
    ins = config_inputs("bidirectional_lengths", torch.float32, seed=7)
    args = [ins[k] for k in ORDER]
    with switches.override(triton_path=path):
        full = FWD(*args)
        light = INFER(*args)
        for a, b in zip(light, full[:3]):
            assert torch.equal(a, b)
        s = SIZES
        model = lstm_fused.LSTM(s["I"], s["H"], backend="triton", device=DEVICE)
        x = torch.randn(s["T"], s["B"], s["I"], device=DEVICE)
        with torch.no_grad():
            y0, (h0, c0) = model(x)
        y1, (h1, c1) = model(x)
        assert torch.equal(y0, y1) and torch.equal(h0, h1) and torch.equal(c0, c1)


def test_rule_picks_the_path_by_shape():
    f16, f32, f64 = torch.float16, torch.float32, torch.float64
    assert choose_path(T=100, H=128, R=128, proj=False, dtype=f16) == "sequence"
    assert choose_path(T=100, H=64, R=64, proj=False, dtype=f32) == "sequence"
    assert choose_path(T=100, H=64, R=32, proj=True, dtype=f32) == "sequence"
    assert choose_path(T=100, H=32, R=32, proj=False, dtype=f64) == "sequence"
    # W_hh too big for one SM's shared memory
    assert choose_path(T=100, H=256, R=256, proj=False, dtype=f16) == "step"
    assert choose_path(T=100, H=128, R=128, proj=False, dtype=f32) == "step"
    assert choose_path(T=100, H=64, R=32, proj=True, dtype=f64) == "step"
    assert choose_path(T=1, H=32, R=32, proj=False, dtype=f32) == "step"  # LSTMCell: one step
    with force_path("step"):
        assert choose_path(T=100, H=16, R=16, proj=False, dtype=f32) == "step"
    with pytest.raises(ValueError, match="path must be"):
        with force_path("fast"):
            pass


def _modules(dtype=torch.float32, **kw):
    torch.manual_seed(3)
    ours = lstm_fused.LSTM(backend="triton", device=DEVICE, dtype=dtype, **kw)
    theirs = nn.LSTM(
        device=DEVICE, dtype=torch.float64, **{k: v for k, v in kw.items() if k != "peephole"}
    )
    theirs.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    return ours, theirs


def _compare_grads(ours, theirs, tol):
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(p.grad, q.grad, tol, f"grad {name}")


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(num_layers=2, bidirectional=True, proj_size=3 if not ON_GPU else 24),
    ],
    ids=["two_layers_bidirectional_batch_first", "two_layers_bidirectional_proj"],
)
def test_module_matches_nn_lstm(kw):
    s = SIZES
    ours, theirs = _modules(input_size=s["I"], hidden_size=s["H"], **kw)
    R = kw.get("proj_size", 0) or s["H"]
    shape = (s["B"], s["T"], s["I"]) if kw.get("batch_first") else (s["T"], s["B"], s["I"])
    x64 = torch.randn(*shape, dtype=torch.float64, device=DEVICE)
    h0 = torch.randn(4, s["B"], R, dtype=torch.float64, device=DEVICE)
    c0 = torch.randn(4, s["B"], s["H"], dtype=torch.float64, device=DEVICE)
    x = x64.float().requires_grad_()
    x64.requires_grad_()
    out, (h, c) = ours(x, (h0.float(), c0.float()))
    ref, (rh, rc) = theirs(x64, (h0, c0))
    for a, e, n in ((out, ref, "output"), (h, rh, "h_n"), (c, rc, "c_n")):
        assert_close(a, e, TOL[torch.float32], n)
    g = torch.randn_like(ref)
    (out * g.float()).sum().backward()
    (ref * g).sum().backward()
    assert_close(x.grad, x64.grad, TOL[torch.float32], "grad input")
    _compare_grads(ours, theirs, TOL[torch.float32])


def test_module_packed_sequence_matches_nn_lstm():
    s = SIZES
    ours, theirs = _modules(input_size=s["I"], hidden_size=s["H"], bidirectional=True)
    lengths = torch.tensor([2, s["T"], 1] + [s["T"] - 1] * (s["B"] - 3))
    x64 = torch.randn(s["T"], s["B"], s["I"], dtype=torch.float64, device=DEVICE)
    x = x64.float().requires_grad_()
    x64.requires_grad_()
    out, (h, c) = ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    ref, (rh, rc) = theirs(pack_padded_sequence(x64, lengths, enforce_sorted=False))
    assert torch.equal(out.batch_sizes, ref.batch_sizes)
    for a, e, n in ((out.data, ref.data, "output"), (h, rh, "h_n"), (c, rc, "c_n")):
        assert_close(a, e, TOL[torch.float32], n)
    y, _ = pad_packed_sequence(out)
    y64, _ = pad_packed_sequence(ref)
    g = torch.randn_like(y64)
    ((y * g.float()).sum() + h.sum() + c.sum()).backward()
    ((y64 * g).sum() + rh.sum() + rc.sum()).backward()
    assert_close(x.grad, x64.grad, TOL[torch.float32], "grad input")
    _compare_grads(ours, theirs, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_module_peephole_matches_reference_backend(dtype):
    s = SIZES
    torch.manual_seed(4)
    kw = dict(input_size=s["I"], hidden_size=s["H"], bidirectional=True, peephole=True)
    ours = lstm_fused.LSTM(backend="triton", device=DEVICE, dtype=dtype, **kw)
    with torch.no_grad():  # peephole weights start at zero: make them count
        for name, p in ours.named_parameters():
            if name.startswith(("weight_ci", "weight_cf", "weight_co")):
                p.uniform_(-0.5, 0.5)
    theirs = lstm_fused.LSTM(backend="reference", device=DEVICE, dtype=torch.float64, **kw)
    theirs.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x64 = torch.randn(s["T"], s["B"], s["I"], dtype=torch.float64, device=DEVICE)
    out, (h, c) = ours(x64.to(dtype))
    ref, (rh, rc) = theirs(x64)
    for a, e, n in ((out, ref, "output"), (h, rh, "h_n"), (c, rc, "c_n")):
        assert_close(a, e, TOL[dtype], n)
    (out.sum() + c.sum()).backward()
    (ref.sum() + rc.sum()).backward()
    _compare_grads(ours, theirs, TOL[dtype])


def test_lstm_cell_matches_nn_lstm_cell():
    s = SIZES
    torch.manual_seed(5)
    ours = lstm_fused.LSTMCell(s["I"], s["H"], backend="triton", device=DEVICE)
    theirs = nn.LSTMCell(s["I"], s["H"], device=DEVICE, dtype=torch.float64)
    theirs.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x64 = torch.randn(s["B"], s["I"], dtype=torch.float64, device=DEVICE)
    h64 = torch.randn(s["B"], s["H"], dtype=torch.float64, device=DEVICE)
    c64 = torch.randn(s["B"], s["H"], dtype=torch.float64, device=DEVICE)
    h, c = ours(x64.float(), (h64.float(), c64.float()))
    rh, rc = theirs(x64, (h64, c64))
    assert_close(h, rh, TOL[torch.float32], "h")
    assert_close(c, rc, TOL[torch.float32], "c")
    (h.sum() + 2 * c.sum()).backward()
    (rh.sum() + 2 * rc.sum()).backward()
    _compare_grads(ours, theirs, TOL[torch.float32])


def test_empty_batch_and_empty_sequence():
    for T, B in ((3, 0), (0, 2)):
        ins = layer_inputs(T, B, 2, 4, 0, 2, False, None)
        y, h_n, c_n, gates, cells = FWD(*(ins[k] for k in ORDER))
        assert y.shape == (T, B, 8) and gates.shape == (2, T, B, 16)
        assert torch.equal(h_n, ins["h0"]) and torch.equal(c_n, ins["c0"])


def test_non_contiguous_input():
    s = SIZES
    ins = layer_inputs(s["T"], s["B"], s["I"], s["H"], 0, 1, False, None)
    x_nc = ins["x"].transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not x_nc.is_contiguous()
    a = FWD(*(ins[k] for k in ORDER))[0]
    b = FWD(x_nc, *(ins[k] for k in ORDER[1:]))[0]
    assert torch.equal(a, b)


def test_bad_input_raises_clear_errors():
    ins = layer_inputs(3, 2, 2, 4, 0, 1, False, [3, 1])
    args = lambda **kw: [kw.get(k, ins[k]) for k in ORDER]  # noqa: E731
    with pytest.raises(ValueError, match=r"lengths\[0\] = 4 is out of range"):
        FWD(*args(lengths=torch.tensor([4, 1])))  # lengths on the host: checked there
    with pytest.raises(ValueError, match=r"lengths has shape \(1,\), expected \(2,\)"):
        FWD(*args(lengths=torch.tensor([1], device=DEVICE)))
    with pytest.raises(TypeError, match="lengths has dtype torch.int32, expected torch.int64"):
        FWD(*args(lengths=torch.tensor([1, 1], dtype=torch.int32, device=DEVICE)))
    with pytest.raises(ValueError, match="h0 has shape"):
        FWD(*args(h0=ins["h0"][:, :1]))
    with pytest.raises(TypeError, match="c0 has dtype"):
        FWD(*args(c0=ins["c0"].float()))
    with pytest.raises(TypeError, match="dtype torch.int32 is not supported"):
        FWD(*args(x=ins["x"].int(), w_ih=ins["w_ih"].int()))


# Without the interpreter (a child process with TRITON_INTERPRET=0), CPU tensors are refused.
_WITHOUT_INTERPRETER = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from backends import call_reason, resolve
from lstm_fused.functional import lstm_layer
print("reason:", call_reason("lstm_layer", "triton", "cpu", torch.float32))
x = torch.zeros(2, 1, 3)
for call in (lambda: resolve("triton", "lstm_layer", x.device, x.dtype),
             lambda: lstm_layer(x, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2),
                                torch.zeros(1, 8, 3), torch.zeros(1, 8, 2), backend="triton")):
    try:
        call()
        print("ran")
    except RuntimeError as exc:
        print("RuntimeError:", exc)
"""


def test_backend_availability_and_reasons():
    assert skip_reason("lstm_layer", "triton") is None
    assert "triton" in lstm_fused.available_backends()
    assert call_reason("lstm_layer", "triton", DEVICE, torch.float16) is None
    assert "int64 is not supported" in call_reason("lstm_layer", "triton", DEVICE, torch.int64)
    tests = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run(
        [sys.executable, "-c", _WITHOUT_INTERPRETER, tests],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TRITON_INTERPRET="0"),
    )
    assert res.returncode == 0, res.stderr
    reason, resolved, called = res.stdout.splitlines()[-3:]
    assert "only under Triton's interpreter" in reason
    assert "backend 'triton' cannot run" in resolved
    assert called.startswith("RuntimeError:") and "TRITON_INTERPRET=1" in called


def test_import_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None; sys.path.insert(0, sys.argv[1])\n"
        "import lstm_fused\n"
        "from backends import implementation\n"
        "print(implementation('lstm_layer', 'triton').unavailable_reason())\n"
        "print(lstm_fused.available_backends())"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    tests = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run(
        [sys.executable, "-c", code, tests], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "triton is not installed" in res.stdout
    assert "'triton'" not in res.stdout.splitlines()[-1]


# Compiles kernels for sm_90 (PTX and cubin through Triton's bundled ptxas) without running
# them: the interpreter does not check what the compiler checks (layouts, loop-carried types,
# shared memory). Run in a child process because kernels defined under TRITON_INTERPRET=1 are
# interpreter objects.
_COMPILE_FOR_SM90 = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from lstm_fused.triton_kernels import lstm_cell, lstm_sequence

ints = {"T", "B", "H", "R", "A", "t", "stride_h_out", "stride_dz", "s_begin", "s_end"}
for fn, dt, ce in [
    (lstm_sequence.lstm_sequence_forward_kernel, "fp16", dict(PROJ=True, BLOCK_H=128, BLOCK_R=64)),
    # the attentive LSTM's pooled last layer (POOL), y not written
    (lstm_sequence.lstm_sequence_forward_kernel, "fp16",
     dict(PROJ=False, BLOCK_H=64, BLOCK_R=64, POOL=True, WRITE_Y=False, BLOCK_A=64)),
    (lstm_sequence.lstm_sequence_backward_kernel, "fp16", dict(PROJ=True, BLOCK_H=128, BLOCK_R=64)),
    (lstm_sequence.lstm_sequence_forward_kernel, "fp32", dict(PROJ=False, BLOCK_H=64, BLOCK_R=64)),
    (lstm_sequence.lstm_sequence_backward_kernel, "fp32", dict(PROJ=False, BLOCK_H=64, BLOCK_R=64)),
    (lstm_cell.lstm_gate_forward_kernel, "bf16", dict(WRITE_STATE=True, BLOCK_H=256)),
    (lstm_cell.lstm_gate_backward_kernel, "bf16", dict(BLOCK_H=256)),
]:
    ce = dict(HAS_LEN=True, PEEP=True, BLOCK_B=16, **ce)
    if "DOT_FP32" in fn.arg_names:
        ce.update(DOT_FP32=False, DOT_PRECISION="ieee")
    if "SAVE" in fn.arg_names:
        ce.setdefault("SAVE", not ce.get("POOL", False))
    if "POOL" in fn.arg_names:
        for name, value in (("POOL", False), ("WRITE_Y", True), ("HAS_PB", True),
                            ("HAS_Q", True), ("BLOCK_A", 16)):
            ce.setdefault(name, value)
    if "HAS_RESETS" in fn.arg_names:  # the resets path, except where the attentive pool runs
        ce.setdefault("HAS_RESETS", not ce.get("POOL", False))
    sig = {n: "constexpr" if n in ce else "i32" if n in ints else "*i64" if n == "len_ptr"
           else "*u8" if n == "rs_ptr"
           else "*fp32" if n in ("c_ptr", "dc_ptr", "c_state_ptr", "dh_state_ptr", "dc_state_ptr",
                                 "scores_ptr", "lse_ptr")
           else "*" + dt for n in fn.arg_names}
    k = triton.compile(ASTSource(fn, sig, ce), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 8})
    assert k.metadata.shared <= 227 * 1024, (fn.__name__, k.metadata.shared)
    print(fn.__name__, dt, "shared", k.metadata.shared)
print("compiled all")
"""


@pytest.mark.slow_compile
def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_SM90],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "compiled all" in res.stdout


def test_rule_depends_on_the_gpu():
    """What fits on chip is what tests/test_triton_aot.py measured per target: the float32
    backward at H = R = 64 needs more shared memory than an A100 (sm_80) has."""
    f16, f32 = torch.float16, torch.float32
    assert choose_path(T=100, H=64, R=64, proj=False, dtype=f32, target=90) == "sequence"
    assert choose_path(T=100, H=64, R=64, proj=False, dtype=f32, target=80) == "step"
    assert choose_path(T=100, H=64, R=32, proj=True, dtype=f32, target=80) == "sequence"
    assert choose_path(T=100, H=128, R=128, proj=False, dtype=f16, target=80) == "sequence"
    # 16-bit H = R = 128 spills on sm_90 (not on sm_80); with a projection to 64 it does not
    assert choose_path(T=100, H=128, R=128, proj=False, dtype=f16, target=90) == "step"
    assert choose_path(T=100, H=128, R=64, proj=True, dtype=f16, target=90) == "sequence"
    # a GPU with less shared memory than sm_80 (sm_86: 99 KiB): nothing measured, step path
    assert choose_path(T=100, H=32, R=32, proj=False, dtype=f16, target=86) == "step"
    # sm_100 has sm_90's shared memory: sm_90's rule
    assert choose_path(T=100, H=64, R=64, proj=False, dtype=f32, target=100) == "sequence"


def test_launchers_and_aot_share_the_choice():
    """layer_configs lists what the launchers launch: the gate kernels' step index t is not a
    compile-time value, and each config names every constexpr of its kernel."""
    from lstm_fused.triton_kernels import lstm_layer

    step = lstm_layer.layer_configs(
        1, 8, 512, 512, torch.float16, proj=False, peep=True, has_len=True, train=True, target=90
    )
    assert [c.name for c in step] == ["lstm_gate_forward_kernel", "lstm_gate_backward_kernel"]
    assert "t" not in step[0].meta() and dict(step[0].types)["t"] == "i32"
    seq = lstm_layer.layer_configs(
        50, 8, 64, 64, torch.float32, proj=False, peep=False, has_len=False, train=False, target=90
    )
    assert [c.name for c in seq] == ["lstm_sequence_forward_kernel"]
    assert seq[0].meta()["SAVE"] is False and seq[0].meta()["DOT_PRECISION"] == "tf32x3"
