"""backend="cuda": the CUDA C++ LSTM kernels (csrc/cuda/) against the float64 reference.

Every numeric test runs once per kernel path (the switch cuda_path: gates / persistent) on a
CUDA device, and is skipped (with a reason) without one. The same harness also runs with
backend="cpu" on the CPU, so that the comparison code itself is exercised on machines without a
GPU. Shapes (letters of SPEC.md): x (T, B, I), h0 (D, B, R), c0 (D, B, H), R = P or H.
"""
from __future__ import annotations

import pytest
import torch

import lstm_fused
from lstm_fused import _ops, backends, reference, switches
from lstm_fused.backends.native import CUDALSTM
from lstm_fused.functional import lstm_layer

HAS_CUDA_KERNELS = (torch.cuda.is_available() and _ops.LOAD_ERROR is None
                    and _ops.has_kernel("lstm_layer_forward", "CUDA"))
NEEDS_CUDA = pytest.mark.skipif(
    not HAS_CUDA_KERNELS,
    reason="needs a CUDA device and lstm_fused._C built with its CUDA kernels")

# (backend, device, kernel path): the CUDA runs, plus the CPU backend as a check of the harness.
TARGETS = [
    pytest.param(("cuda", "cuda", "gates"), marks=NEEDS_CUDA, id="cuda-gates"),
    pytest.param(("cuda", "cuda", "persistent"), marks=NEEDS_CUDA, id="cuda-persistent"),
    pytest.param(("cpu", "cpu", None), id="cpu-harness"),
]

# Tolerances against the float64 reference after T steps (inputs rounded to the dtype first).
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (6e-2, 6e-2),
}

CONFIGS = {
    # name: (T, B, I, H, P, D, peephole, lengths)
    "uni": (7, 3, 5, 16, 0, 1, False, None),
    "bi": (6, 4, 5, 16, 0, 2, False, None),
    "bi-lengths": (6, 4, 5, 16, 0, 2, False, [6, 1, 0, 4]),
    "proj": (5, 3, 4, 16, 8, 2, False, [5, 2, 3]),
    "peephole": (5, 3, 4, 16, 0, 2, True, [2, 5, 0]),
    "odd-H": (4, 2, 3, 5, 0, 2, True, None),  # H not a multiple of the vector width
    "all": (6, 5, 6, 24, 12, 2, True, [6, 3, 1, 0, 5]),
}


@pytest.fixture
def target(request):
    backend, device, path = request.param
    # poison: unwritten outputs come out NaN; cuda_path "" is the gate-kernel path
    with switches.override(cuda_path="persistent" if path == "persistent" else "", poison="1"):
        yield backend, torch.device(device)


def _make_args(cfg, dtype, device, seed=0):
    T, B, I, H, P, D, peephole, lengths = cfg
    R = P if P else H
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    args = dict(
        x=rnd(T, B, I, scale=1.0), h0=rnd(D, B, R), c0=rnd(D, B, H), w_ih=rnd(D, 4 * H, I),
        w_hh=rnd(D, 4 * H, R), bias=rnd(D, 4 * H), w_hr=rnd(D, P, H) if P else None,
        w_peep=rnd(D, 3, H) if peephole else None,
        lengths=None if lengths is None else torch.tensor(lengths, dtype=torch.int64))
    return {k: (None if v is None else v.to(device)) for k, v in args.items()}


def _float64_cpu(args, requires_grad=False):
    out = {}
    for k, v in args.items():
        if v is None or k == "lengths":
            out[k] = None if v is None else v.cpu()
        else:
            out[k] = v.detach().cpu().double().requires_grad_(requires_grad)
    return out


def _assert_close(actual, expected, dtype, what):
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (unwritten?) {actual}"
    rtol, atol = TOL[dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().cpu().double(), expected.detach(), rtol=rtol,
                               atol=atol * scale, msg=lambda m: f"{what} ({dtype}): {m}")


def _supported(backend, dtype):
    if backend == "cpu" and dtype not in (torch.float32, torch.float64):
        pytest.skip("the CPU backend (harness check) has no half-precision kernels")


@pytest.mark.parametrize("target", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_and_backward_match_float64_reference(target, dtype, config):
    backend, device = target
    _supported(backend, dtype)
    args = _make_args(CONFIGS[config], dtype, device)
    params = {k: v.requires_grad_(True) for k, v in args.items()
              if v is not None and k != "lengths"}
    y, h_n, c_n = lstm_layer(**args, backend=backend)
    ref_args = _float64_cpu(args, requires_grad=True)
    ref_y, ref_h, ref_c = reference.lstm_layer(**ref_args)
    for a, e, what in ((y, ref_y, "y"), (h_n, ref_h, "h_n"), (c_n, ref_c, "c_n")):
        _assert_close(a, e, dtype, what)

    g = torch.Generator().manual_seed(7)
    gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n))
    torch.autograd.backward((y, h_n, c_n), (gy.to(device, dtype), gh.to(device, dtype),
                                            gc.to(device, dtype)))
    torch.autograd.backward((ref_y, ref_h, ref_c), (gy, gh, gc))
    for name, p in params.items():
        assert p.grad is not None, f"no gradient for {name}"
        # Half types: gradients sum T * B rounded products; allow twice the forward tolerance.
        factor = 2.0 if dtype in (torch.float16, torch.bfloat16) else 1.0
        rtol, atol = TOL[dtype]
        expected = ref_args[name].grad
        scale = max(1.0, expected.abs().max().item())
        assert torch.isfinite(p.grad).all(), f"grad {name}: non-finite"
        torch.testing.assert_close(p.grad.cpu().double(), expected, rtol=factor * rtol,
                                   atol=factor * atol * scale,
                                   msg=lambda m, n=name: f"grad {n} ({dtype}): {m}")


@pytest.mark.parametrize("target", TARGETS, indirect=True)
@pytest.mark.parametrize("config", ["bi-lengths", "all"])
def test_gradcheck_float64(target, config):
    backend, device = target
    T, B, I, H, P, D, peephole, lengths = CONFIGS[config]
    small = (3, min(B, 3), 2, 4, 2 if P else 0, D, peephole,
             None if lengths is None else [3, 1, 0][:min(B, 3)])
    args = _make_args(small, torch.float64, device)
    names = [k for k, v in args.items() if v is not None and k != "lengths"]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return lstm_layer(**kw, backend=backend)

    inputs = tuple(args[k].clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_opcheck(target):
    backend, device = target
    args = _make_args(CONFIGS["all"], torch.float32, device)
    ordered = [args[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep",
                                 "lengths")]
    ordered = [t.requires_grad_(True) if t is not None and t.is_floating_point() else t
               for t in ordered]
    torch.library.opcheck(torch.ops.lstm_fused.lstm_layer_forward.default, tuple(ordered))


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_module_matches_nn_lstm_noncontiguous_and_empty(target):
    backend, device = target
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 16, num_layers=2, bidirectional=True, proj_size=8).to(device)
    mod = lstm_fused.LSTM(6, 16, num_layers=2, bidirectional=True, proj_size=8,
                          backend=backend).to(device)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 9, 6, device=device).transpose(0, 1)  # (T=9, B=3, I=6), non-contiguous
    out, (h, c) = mod(x)
    ref_out, (ref_h, ref_c) = ref(x)
    for a, e in ((out, ref_out), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
    empty = torch.randn(9, 0, 6, device=device)
    out0, (h0, c0) = mod(empty)
    assert out0.shape == (9, 0, 16) and h0.shape == (4, 0, 8) and c0.shape == (4, 0, 16)


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_lengths_out_of_range_is_a_value_error(target):
    backend, device = target
    args = _make_args(CONFIGS["bi-lengths"], torch.float32, device)
    args["lengths"] = torch.tensor([6, 7, 0, 1])  # 7 > T = 6
    with pytest.raises(ValueError, match=r"lengths\[1\] = 7"):
        lstm_layer(**args, backend=backend)


@NEEDS_CUDA
def test_cuda_op_rejects_an_integer_dtype():
    args = _make_args(CONFIGS["uni"], torch.float32, torch.device("cuda"))
    args = {k: (v.to(torch.int32) if v is not None and k != "lengths" else v)
            for k, v in args.items()}
    with pytest.raises(TypeError, match="cuda backend"):
        torch.ops.lstm_fused.lstm_layer_forward(*args.values())


# ---- backend selection (runs everywhere) ----

def test_cuda_backend_reasons():
    impl = CUDALSTM()
    cuda = torch.device("cuda")
    assert impl.unsupported_reason(cuda, torch.float16, proj=True, peephole=True,
                                   lengths=True) is None
    assert "dtype int32" in impl.unsupported_reason(cuda, torch.int32)
    assert "cuda" in impl.unsupported_reason(torch.device("cpu"), torch.float32)
    reason = impl.unsupported_reason(cuda, torch.float32, attention_pooling=True)
    assert reason is not None and "attention_pooling" in reason


@pytest.mark.skipif(HAS_CUDA_KERNELS, reason="checks the error when CUDA kernels are absent")
def test_asking_for_cuda_without_it_names_what_is_missing():
    assert CUDALSTM().unavailable_reason() is not None
    args = _make_args(CONFIGS["uni"], torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="backend 'cuda'"):
        lstm_layer(**args, backend="cuda")
    assert "cuda" not in backends.available_backends()
