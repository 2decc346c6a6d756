"""The LSTM layer family: one layer (every direction) of an LSTM, and the attentive LSTM's last
layer pooled as it runs.

Operators (schemas in csrc/ops.cpp, each with a Triton twin `<name>_triton`; shapes in
csrc/lstm_layer_args.h):
  lstm_layer_forward(x, h0, c0, w_ih, w_hh, bias?, w_hr?, w_peep?, lengths?, resets?)
      -> (y, h_n, c_n, gates, cells)              differentiable (autograd below)
  lstm_layer_inference(same) -> (y, h_n, c_n)     nothing kept for a backward
  lstm_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr?, w_peep?,
                      lengths?, resets?, y, gates, cells) -> 8 gradients
  attentive_lstm_inference(layer args, proj_weight, proj_bias?, v, qproj?, chunk_size)
      -> (context, alpha, lse, h_n, c_n)          inference only
This module gives each its fake kernel (torch.compile) and autograd, the Triton twins their
kernels (triton_kernels/lstm_layer.py, after the C++ argument checks <name>_check,
csrc/check_ops.cpp),
and registers the family's implementations: families "lstm_layer" and "attentive_lstm".
"""

from __future__ import annotations

import torch

from .. import reference
from . import library, registry
from . import triton_library
from .autograd import (
    differentiable_vjp,
    needs_grad,
    refuse_autograd,
    register_autograd,
    zeros_if_none,
)

NAMESPACE = torch.ops.lstm_fused
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# The operators without a CUDA kernel, and what runs instead (LayerKernels asks has_kernel).
NO_CUDA_KERNEL = {
    "attentive_lstm_inference": "the layer runs, then the attention pooling",
}
# Operators that answer a question about a call instead of computing (CUDA kernels only,
# csrc/cuda/lstm_layer_cuda.cpp): which CUDA time loop a layer call takes, and why.
QUERY_OPERATORS = {
    "lstm_layer_cuda_path": "the forward's CUDA time loop: tensor_core, or gates: <why>",
    "lstm_layer_cuda_backward_path": "the backward's CUDA time loop: tensor_core, or gates: <why>",
}


# ----------------------------------------------------------------------- fake kernels


def layer_output_shapes(x, h0, w_ih):
    """Shapes of (y, h_n, c_n, gates, cells) of a layer call."""
    T, B = x.shape[0], x.shape[1]
    D, G = w_ih.shape[0], w_ih.shape[1]
    H, R = G // 4, h0.shape[2]
    return (T, B, D * R), (D, B, R), (D, B, H), (D, T, B, G), (D, T, B, H)


def fake_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
    return tuple(x.new_empty(s) for s in layer_output_shapes(x, h0, w_ih))


def fake_inference(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
    return tuple(x.new_empty(s) for s in layer_output_shapes(x, h0, w_ih)[:3])


def fake_backward(
    grad_y,
    grad_h_n,
    grad_c_n,
    x,
    h0,
    c0,
    w_ih,
    w_hh,
    w_hr,
    w_peep,
    lengths,
    resets,
    y,
    gates,
    cells,
):
    """Every gradient is a new contiguous tensor, whatever the strides of its input."""
    D, G = w_ih.shape[0], w_ih.shape[1]
    return (
        x.new_empty(x.shape),
        x.new_empty(h0.shape),
        x.new_empty(c0.shape),
        x.new_empty(w_ih.shape),
        x.new_empty(w_hh.shape),
        x.new_empty((D, G)),
        x.new_empty(w_hr.shape if w_hr is not None else (0,)),
        x.new_empty(w_peep.shape if w_peep is not None else (0,)),
    )


def fake_attentive(
    x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj, chunk_size
):
    """context (B, R), alpha (B, T), lse (B,), h_n (1, B, R), c_n (1, B, H)."""
    T, B, R = x.shape[0], x.shape[1], h0.shape[2]
    _, h_n, c_n, _, _ = layer_output_shapes(x, h0, w_ih)
    return tuple(x.new_empty(s) for s in ((B, R), (B, T), (B,), h_n, c_n))


# ----------------------------------------------------------------------- autograd


def register_layer_autograd(forward_name: str, backward_op, reads_only_valid_x_on=()) -> None:
    """Autograd of a layer-forward operator whose gradients come from `backward_op` (both with
    the schemas of lstm_layer_forward / lstm_layer_backward). Gradients of y, h_n, c_n that
    autograd leaves undefined become zeros. reads_only_valid_x_on: device types on which
    backward_op never reads x at padded steps (the C++ CPU kernel); elsewhere x's padding is
    zeroed first. When autograd records the backward itself (create_graph=True), the
    gradients come from the reference math (differentiable_vjp), exact to any order."""

    def setup_context(ctx, inputs, output):
        x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths = inputs[:9]
        resets = inputs[9] if len(inputs) > 9 else None
        y, _h_n, _c_n, gates, cells = output
        ctx.has_bias = bias is not None
        # gates and cells are never differentiated: without this, autograd would fill a zero
        # gradient the size of each (D*T*B*4H and D*T*B*H values) on every backward.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(
            x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, y, gates, cells
        )

    def backward(ctx, grad_y, grad_h_n, grad_c_n, _grad_gates, _grad_cells):
        (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, y, gates, cells) = (
            ctx.saved_tensors
        )
        # One gradient per argument the call passed (9, or 10 with resets; setup_context sees
        # the schema's default for resets filled in).
        n_inputs = len(ctx.needs_input_grad)
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            return tuple(
                differentiable_vjp(
                    reference.lstm_layer,
                    (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets)[:n_inputs],
                    (grad_y, grad_h_n, grad_c_n),
                    ctx.needs_input_grad,
                )
            )
        grad_y, grad_h_n, grad_c_n = (
            zeros_if_none(g, t) for g, t in ((grad_y, y), (grad_h_n, h0), (grad_c_n, c0))
        )
        if lengths is not None and x.device.type not in reads_only_valid_x_on:
            # Padded steps have zero gate gradients, but 0 * NaN = NaN: padding that holds NaN
            # or inf must not reach grad_w_ih through the GEMM over all steps.
            steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
            padded = steps >= lengths.to(x.device).unsqueeze(0)  # (T, B)
            x = x.masked_fill(padded.unsqueeze(2), 0)
        gx, gh0, gc0, gw_ih, gw_hh, gbias, gw_hr, gw_peep = backward_op(
            grad_y,
            grad_h_n,
            grad_c_n,
            x,
            h0,
            c0,
            w_ih,
            w_hh,
            w_hr,
            w_peep,
            lengths,
            resets,
            y,
            gates,
            cells,
        )
        return (
            gx,
            gh0,
            gc0,
            gw_ih,
            gw_hh,
            gbias if ctx.has_bias else None,
            gw_hr if w_hr is not None else None,
            gw_peep if w_peep is not None else None,
            None,
        ) + (None,) * (n_inputs - 9)

    # The backward's own aten ops (zero gradients for outputs autograd left undefined, e.g.
    # y where only h_n was used) on one thread while the machine is busy, as the forward's.
    register_autograd(
        forward_name, library.one_thread_if_busy(backward), setup_context=setup_context
    )


# ----------------------------------------------------------------------- Triton twins


def _check_triton_dtype(x):
    """The dtypes the Triton kernels compute, checked before the C++ checks (which take any
    dtype x and the weights share)."""
    if x.dtype not in FLOATS:
        raise TypeError(
            f"lstm_fused (triton): dtype {x.dtype} is not supported; use float32, "
            f"float16, bfloat16 or float64"
        )


def _triton_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, save):
    _check_triton_dtype(x)
    NAMESPACE.lstm_layer_forward_check(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets)
    return triton_library.kernels("lstm_layer").layer_forward(
        x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, save, resets
    )


def triton_layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
    return _triton_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, True)


def triton_layer_inference(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
    return _triton_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, False)[:3]


def triton_layer_backward(*args):
    NAMESPACE.lstm_layer_backward_check(*args)
    return triton_library.kernels("lstm_layer").layer_backward(*args)


def triton_attentive(
    x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj, chunk_size
):
    """chunk_size is checked, not used: the Triton kernel pools every step on chip."""
    _check_triton_dtype(x)
    NAMESPACE.attentive_lstm_inference_check(
        x,
        h0,
        c0,
        w_ih,
        w_hh,
        bias,
        w_hr,
        w_peep,
        lengths,
        proj_weight,
        proj_bias,
        v,
        qproj,
        chunk_size,
    )
    return triton_library.kernels("lstm_layer").attentive_forward(
        x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj
    )


# ----------------------------------------------------------------------- entry points


class LayerKernels:
    """The entry points of one backend's operators (suffix "" for the C++ ones, "_triton").

    layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None) -> (y, h_n, c_n),
    differentiable (resets (T, B) bool contiguous on x's device, or None); attentive_inference(layer args, proj_weight, proj_bias, v, qproj,
    chunk_size) -> (context, alpha, lse, h_n, c_n), or None where this backend has no such
    kernel for these sizes (the caller runs the layer, then the pooling)."""

    def __init__(self, suffix: str, dispatch_key: str = ""):
        self.suffix, self.dispatch_key = suffix, dispatch_key
        self._ops = {}

    def _op(self, name):
        """The operator's overload (looked up once: a one-step call is short enough that the
        lookup through torch.ops would show)."""
        op = self._ops.get(name)
        if op is None:
            op = self._ops[name] = getattr(NAMESPACE, name + self.suffix).default
        return op

    def _has(self, name):
        return self.suffix == "_triton" or library.has_kernel(name, self.dispatch_key)

    def layer(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
        args = (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths)
        if resets is not None:  # not passed otherwise: a compiled graph then keeps its op call
            args = args + (resets,)
        if not needs_grad(args) and self._has("lstm_layer_inference"):
            return self._op("lstm_layer_inference")(*args)
        y, h_n, c_n, _gates, _cells = self._op("lstm_layer_forward")(*args)
        return y, h_n, c_n

    def attentive_inference(
        self,
        x,
        h0,
        c0,
        w_ih,
        w_hh,
        bias,
        w_hr,
        w_peep,
        lengths,
        proj_weight,
        proj_bias,
        v,
        qproj,
        chunk_size,
    ):
        if not self._has("attentive_lstm_inference"):
            return None
        if self.suffix == "_triton":
            from ..triton_kernels.launch_config import device_target

            H, R, A = w_hh.shape[1] // 4, w_hh.shape[2], proj_weight.shape[0]
            if not triton_library.kernels("lstm_layer").attentive_supported(
                H, R, A, w_hr is not None, x.dtype, device_target(x.device)
            ):
                return None
        return self._op("attentive_lstm_inference")(
            x,
            h0,
            c0,
            w_ih,
            w_hh,
            bias,
            w_hr,
            w_peep,
            lengths,
            proj_weight,
            proj_bias,
            v,
            qproj,
            chunk_size,
        )


class ReferenceLayerKernels:
    """Plain PyTorch (lstm_fused/reference.py): no fused attentive kernel."""

    def layer(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
        return reference.lstm_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets)

    def attentive_inference(self, *args):
        return None


class AttentiveKernels:
    """The attentive LSTM on one backend: that backend's layer and attention pooling
    implementations (registry.Implementation), looked up in the registry once, at the first
    call (the attention family may register after this one)."""

    def __init__(self, backend: str):
        self.backend = backend
        self._impls = None

    def _lookup(self):
        if self._impls is None:
            self._impls = (
                registry.implementations("lstm_layer")[self.backend],
                registry.implementations("attention_pooling")[self.backend],
            )
        return self._impls

    @property
    def layer(self) -> registry.Implementation:
        return self._lookup()[0]

    @property
    def pooling(self) -> registry.Implementation:
        return self._lookup()[1]


# ----------------------------------------------------------------------- registration


def _register_operators() -> None:
    for name, fake in (
        ("lstm_layer_forward", fake_forward),
        ("lstm_layer_inference", fake_inference),
        ("lstm_layer_backward", fake_backward),
        ("attentive_lstm_inference", fake_attentive),
    ):
        for suffix in ("", "_triton"):
            torch.library.register_fake(f"lstm_fused::{name}{suffix}")(fake)
    for name, kernel in (
        ("lstm_layer_forward", triton_layer_forward),
        ("lstm_layer_inference", triton_layer_inference),
        ("lstm_layer_backward", triton_layer_backward),
        ("attentive_lstm_inference", triton_attentive),
    ):
        torch.library.register_kernel(f"lstm_fused::{name}_triton", ("cpu", "cuda"), kernel)
    register_layer_autograd(
        "lstm_fused::lstm_layer_forward",
        NAMESPACE.lstm_layer_backward.default,
        reads_only_valid_x_on=("cpu",),
    )
    register_layer_autograd(
        "lstm_fused::lstm_layer_forward_triton", NAMESPACE.lstm_layer_backward_triton.default
    )
    for name, to_train in (
        ("lstm_layer_inference", "run lstm_layer_forward"),
        ("attentive_lstm_inference", "run the layer, then the pooling"),
    ):
        for suffix in ("", "_triton"):
            refuse_autograd(f"lstm_fused::{name}{suffix}", to_train)


def register_like(namespace: str) -> None:
    """The fake kernels and autograd of this family's C++ operators in another library built
    with the same schemas (the emulated CUDA library: tests/backends.py,
    register_like_lstm_fused)."""
    ops = getattr(torch.ops, namespace)
    torch.library.register_fake(f"{namespace}::lstm_layer_forward")(fake_forward)
    torch.library.register_fake(f"{namespace}::lstm_layer_backward")(fake_backward)
    register_layer_autograd(f"{namespace}::lstm_layer_forward", ops.lstm_layer_backward.default)


def _attentive_reason(kernels: AttentiveKernels):
    """The attentive LSTM runs where the backend's layer and its pooling both run."""

    def reason(device, dtype, features):
        layer_features = {k: v for k, v in features.items() if k in ("proj", "peephole", "lengths")}
        reasons = []
        for impl, feats in ((kernels.layer, layer_features), (kernels.pooling, {})):
            why = impl.reason(device, dtype, **feats)
            if why is not None:
                reasons.append(f"its {impl.op}: {why}")
        return "; ".join(reasons) or None

    return reason


def _register_implementations() -> None:
    kernels = {
        "cuda": LayerKernels("", "CUDA"),
        "triton": LayerKernels("_triton"),
        "cpu": LayerKernels("", "CPU"),
        "reference": ReferenceLayerKernels(),
    }
    dtypes = {
        "cuda": (torch.float32, torch.float16, torch.bfloat16, torch.float64),
        "triton": FLOATS,
        "cpu": (torch.float32, torch.float64),
        "reference": FLOATS,
    }
    # The features the CUDA kernels implement: a new feature of a layer call is refused there
    # until its kernels exist.
    features = {"cuda": frozenset({"proj", "peephole", "lengths", "resets"})}
    for backend, entry in kernels.items():
        registry.register(
            registry.backend_implementation(
                "lstm_layer",
                backend,
                entry,
                dtypes[backend],
                native_op="lstm_layer_forward",
                features=features.get(backend),
            )
        )
        attentive = AttentiveKernels(backend)
        registry.register(
            registry.backend_implementation(
                "attentive_lstm",
                backend,
                attentive,
                FLOATS,
                native_op="lstm_layer_forward",
                call_reason=_attentive_reason(attentive),
            )
        )


if library.LOAD_ERROR is None:
    _register_operators()
_register_implementations()
