"""backend="cuda": the CUDA C++ LSTM kernels (csrc/cuda/) against the float64 reference.

Every numeric test runs once per kernel path (switch cuda_path: the automatic choice, i.e. the
tensor-core loop for float16/bfloat16 where it fits, and the gate-kernel loop) on a CUDA device, and is skipped (with a reason) without one. The same harness
also runs with backend="cpu" on the CPU (float32), so that the comparison code itself is
exercised on machines without a GPU. Shapes (the letters of docs/contract.md): x (T, B, I),
h0 (D, B, R), c0 (D, B, H), R = P or H.
"""

from __future__ import annotations

import pytest
import torch

import lstm_fused
from lstm_fused import reference, switches
from lstm_fused.functional import lstm_layer
from backends import available_backends, call_reason, device_of, needs, skip_reason
from helpers import assert_close_scaled, float64_cpu, layer_args, layer_configs

HAS_CUDA_KERNELS = skip_reason("lstm_layer", "cuda") is None
NEEDS_CUDA = needs("lstm_layer", "cuda")

# (backend, CUDA kernel path): the CUDA runs, plus the CPU backend as a check of the harness.
TARGETS = [
    pytest.param(("cuda", ""), marks=NEEDS_CUDA, id="cuda-auto"),
    pytest.param(("cuda", "gates"), marks=NEEDS_CUDA, id="cuda-gates"),
    pytest.param(("cpu", None), id="cpu-harness"),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# The harness check runs the CPU kernels, which have no half-precision dtypes.
TARGET_DTYPES = [
    pytest.param(t.values[0], dt, marks=t.marks, id=f"{t.id}-{dt}")
    for t in TARGETS
    for dt in DTYPES
    if t.values[0][0] == "cuda" or dt == torch.float32
]

CONFIGS = layer_configs("gpu")


@pytest.fixture
def target(request):
    """(backend, device), with the CUDA kernel path switched and outputs poisoned (NaN) for
    the test."""
    backend, path = request.param
    paths = {} if path is None else dict(cuda_path=path)
    with switches.override(poison="1", **paths):  # unwritten outputs come out NaN
        yield backend, torch.device(device_of(backend))


@pytest.mark.parametrize("target,dtype", TARGET_DTYPES, indirect=["target"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_and_backward_match_float64_reference(target, dtype, config):
    backend, device = target
    args = layer_args(CONFIGS[config], dtype, device)
    params = {
        k: v.requires_grad_(True) for k, v in args.items() if v is not None and k != "lengths"
    }
    y, h_n, c_n = lstm_layer(**args, backend=backend)
    ref_args = float64_cpu(args, requires_grad=True)
    ref_y, ref_h, ref_c = reference.lstm_layer(**ref_args)
    for a, e, what in ((y, ref_y, "y"), (h_n, ref_h, "h_n"), (c_n, ref_c, "c_n")):
        assert_close_scaled(a, e, dtype, what)

    g = torch.Generator().manual_seed(7)
    gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n))
    torch.autograd.backward(
        (y, h_n, c_n), (gy.to(device, dtype), gh.to(device, dtype), gc.to(device, dtype))
    )
    torch.autograd.backward((ref_y, ref_h, ref_c), (gy, gh, gc))
    for name, p in params.items():
        assert p.grad is not None, f"no gradient for {name}"
        # Half types: gradients sum T * B rounded products; allow twice the forward tolerance.
        factor = 2.0 if dtype in (torch.float16, torch.bfloat16) else 1.0
        assert_close_scaled(p.grad, ref_args[name].grad, dtype, f"grad {name}", factor)


@pytest.mark.parametrize("target", TARGETS, indirect=True)
@pytest.mark.parametrize("config", ["bi-lengths", "all"])
def test_gradcheck_float64(target, config):
    backend, device = target
    T, B, I, H, P, D, peephole, lengths = CONFIGS[config]
    small = (
        3,
        min(B, 3),
        2,
        4,
        2 if P else 0,
        D,
        peephole,
        None if lengths is None else [3, 1, 0][: min(B, 3)],
    )
    args = layer_args(small, torch.float64, device)
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
    args = layer_args(CONFIGS["all"], torch.float32, device)
    ordered = [
        args[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep", "lengths")
    ]
    ordered = [
        t.requires_grad_(True) if t is not None and t.is_floating_point() else t for t in ordered
    ]
    torch.library.opcheck(torch.ops.lstm_fused.lstm_layer_forward.default, tuple(ordered))


@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_module_matches_nn_lstm_noncontiguous_and_empty(target):
    backend, device = target
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 16, num_layers=2, bidirectional=True, proj_size=8).to(device)
    mod = lstm_fused.LSTM(6, 16, num_layers=2, bidirectional=True, proj_size=8, backend=backend).to(
        device
    )
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
    args = layer_args(CONFIGS["bi-lengths"], torch.float32, device)
    args["lengths"] = torch.tensor([6, 7, 0, 1])  # 7 > T = 6
    with pytest.raises(ValueError, match=r"lengths\[1\] = 7"):
        lstm_layer(**args, backend=backend)


@NEEDS_CUDA
def test_cuda_op_rejects_an_integer_dtype():
    args = layer_args(CONFIGS["uni"], torch.float32, torch.device("cuda"))
    args = {
        k: (v.to(torch.int32) if v is not None and k != "lengths" else v) for k, v in args.items()
    }
    with pytest.raises(TypeError, match="cuda backend"):
        torch.ops.lstm_fused.lstm_layer_forward(*args.values())


# ---- backend selection (runs everywhere) ----


def test_cuda_backend_reasons():
    def reason(device, dtype, **features):
        return call_reason("lstm_layer", "cuda", device, dtype, **features)

    assert reason("cuda", torch.float16, proj=True, peephole=True, lengths=True) is None
    assert "dtype int32" in reason("cuda", torch.int32)
    assert "cuda" in reason("cpu", torch.float32)
    why = reason("cuda", torch.float32, attention_pooling=True)
    assert why is not None and "attention_pooling" in why


@pytest.mark.skipif(HAS_CUDA_KERNELS, reason="checks the error when CUDA kernels are absent")
def test_asking_for_cuda_without_it_names_what_is_missing():
    assert skip_reason("lstm_layer", "cuda") is not None
    args = layer_args(CONFIGS["uni"], torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="backend 'cuda'"):
        lstm_layer(**args, backend="cuda")
    assert "cuda" not in available_backends()
