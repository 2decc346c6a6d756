"""The registered operators of lstm_fused: loading the C++ library, fake kernels, autograd.

Every kernel reaches the user by one road: kernel -> launcher -> operator registered once
(device picked by the dispatcher) -> autograd -> module. The C++ library defines the schemas
(csrc/ops.cpp) and the CPU / CUDA kernels; this file adds what torch.compile and autograd need.
Triton kernels register their own operators with the same schema and reuse
`register_layer_autograd` (lstm_fused/backends/triton.py).
"""
from __future__ import annotations

import torch

from . import reference

try:
    from . import _C  # noqa: F401  (loading it runs the TORCH_LIBRARY registrations)

    LOAD_ERROR: str | None = None
except ImportError as exc:  # the package still works through backend="reference"
    LOAD_ERROR = f"the C++ extension lstm_fused._C could not be loaded ({exc})"

if LOAD_ERROR is None:  # the C++ library reads no environment: it gets its switches from here
    from . import switches as _switches

    _switches.subscribe(_C.set_switch, _switches.CPP_SWITCHES)


# Which C++ kernels the library registered, read once at import (every lstm_fused:: operator
# of csrc/ is registered when _C loads): a plain dict lookup is what torch.compile can trace
# through, the dispatcher query itself is not.
_KERNELS = {}
if LOAD_ERROR is None:
    for _name in torch._C._dispatch_get_all_op_names():
        if _name.startswith("lstm_fused::"):
            for _key in ("CPU", "CUDA"):
                _KERNELS[(_name[len("lstm_fused::"):], _key)] = (
                    torch._C._dispatch_has_kernel_for_dispatch_key(_name, _key))


def has_kernel(op_name: str, dispatch_key: str) -> bool:
    """Whether the C++ library registered a kernel of `lstm_fused::op_name` for dispatch_key."""
    return _KERNELS.get((op_name, dispatch_key), False)


def layer_output_shapes(x, h0, c0, w_ih, w_hr):
    """Shapes of (y, h_n, c_n, gates, cells) of a layer call (csrc/lstm_layer_args.h)."""
    T, B = x.shape[0], x.shape[1]
    D, G = w_ih.shape[0], w_ih.shape[1]
    H = G // 4
    R = h0.shape[2]
    return (T, B, D * R), (D, B, R), (D, B, H), (D, T, B, G), (D, T, B, H)


def fake_layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
    shapes = layer_output_shapes(x, h0, c0, w_ih, w_hr)
    return tuple(torch.empty(s, dtype=x.dtype, device=x.device) for s in shapes)


def fake_layer_inference(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
    shapes = layer_output_shapes(x, h0, c0, w_ih, w_hr)[:3]
    return tuple(torch.empty(s, dtype=x.dtype, device=x.device) for s in shapes)


def fake_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, w_peep,
                        lengths, y, gates, cells):
    """Every gradient is a new contiguous tensor, whatever the strides of its input."""
    D, G = w_ih.shape[0], w_ih.shape[1]

    def new(shape):
        return torch.empty(shape, dtype=x.dtype, device=x.device)

    return (
        new(x.shape), new(h0.shape), new(c0.shape), new(w_ih.shape), new(w_hh.shape), new((D, G)),
        new(w_hr.shape) if w_hr is not None else new((0,)),
        new(w_peep.shape) if w_peep is not None else new((0,)),
    )


def fake_attentive_inference(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, proj_weight,
                             proj_bias, v, qproj, chunk_size):
    """Shapes of attentive_lstm_inference: context (B, R), alpha (B, T), lse (B,), h_n, c_n."""
    T, B = x.shape[0], x.shape[1]
    _, h_n, c_n, _, _ = layer_output_shapes(x, h0, c0, w_ih, w_hr)
    R = h0.shape[2]
    return tuple(torch.empty(s, dtype=x.dtype, device=x.device)
                 for s in ((B, R), (B, T), (B,), h_n, c_n))


def refuse_autograd(op_name: str) -> None:
    """An inference-only operator: differentiating through it raises a clear error (instead of
    outputs that silently carry no gradient)."""

    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(f"{op_name} is inference only (no backward): call it under "
                           f"torch.no_grad(), or run the layer, then the pooling, to train")

    torch.library.register_autograd(op_name, backward, setup_context=setup_context)


def differentiable_vjp(reference_fn, inputs, grads, needs_input_grad):
    """The vector-Jacobian product of `reference_fn` (plain PyTorch) at `inputs`, itself
    differentiable: what a backward returns when autograd records it (create_graph=True, e.g.
    double backward or a gradient penalty). The fused backward kernels are opaque to autograd,
    so the gradient is recomputed through the reference math, which autograd differentiates to
    any order. Returns one gradient (or None) per input."""
    wanted = [i for i, t in enumerate(inputs)
              if needs_input_grad[i] and isinstance(t, torch.Tensor)]
    result = [None] * len(inputs)
    if not wanted:
        return result
    with torch.enable_grad():
        outputs = reference_fn(*inputs)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
        if not pairs:
            return result
        got = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted],
                                  [g for _, g in pairs], create_graph=True, allow_unused=True)
    for i, g in zip(wanted, got):
        result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return result


def register_layer_autograd(forward_name: str, backward_op,
                            reads_only_valid_x_on: tuple = ()) -> None:
    """Autograd of a layer-forward operator whose gradients come from `backward_op`.

    Both follow the schemas of lstm_layer_forward / lstm_layer_backward (csrc/ops.cpp).
    Gradients of y, h_n, c_n that autograd leaves undefined become zeros.
    reads_only_valid_x_on: device types on which backward_op never reads x at padded steps
    (the C++ CPU kernel); elsewhere x's padding is zeroed first.
    When autograd records the backward itself (create_graph=True), the gradients come from the
    reference math instead (differentiable_vjp), so that second-order terms are exact on every
    backend of the op; forward-mode AD and torch.func transforms never reach the operator
    (functional.lstm_layer routes them to the reference).
    """

    def setup_context(ctx, inputs, output):
        x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths = inputs
        y, _h_n, _c_n, gates, cells = output
        ctx.has_bias = bias is not None
        # gates and cells are never differentiated: without this, autograd would fill a zero
        # gradient the size of each (D*T*B*4H and D*T*B*H values) on every backward.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, y, gates,
                              cells)

    def backward(ctx, grad_y, grad_h_n, grad_c_n, _grad_gates, _grad_cells):
        x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, y, gates, cells = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            return tuple(differentiable_vjp(
                reference.lstm_layer, (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths),
                (grad_y, grad_h_n, grad_c_n), ctx.needs_input_grad))
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
        grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
        if lengths is not None and x.device.type not in reads_only_valid_x_on:
            # Padded steps have zero gate gradients, but 0 * NaN = NaN: padding that holds NaN
            # or inf must not reach grad_w_ih through the GEMM over all steps.
            steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
            padded = steps >= lengths.to(x.device).unsqueeze(0)  # (T, B)
            x = x.masked_fill(padded.unsqueeze(2), 0)
        gx, gh0, gc0, gw_ih, gw_hh, gbias, gw_hr, gw_peep = backward_op(
            grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, w_peep, lengths, y,
            gates, cells)
        return (gx, gh0, gc0, gw_ih, gw_hh, gbias if ctx.has_bias else None,
                gw_hr if w_hr is not None else None, gw_peep if w_peep is not None else None,
                None)

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


if LOAD_ERROR is None:
    torch.library.register_fake("lstm_fused::lstm_layer_forward")(fake_layer_forward)
    torch.library.register_fake("lstm_fused::lstm_layer_inference")(fake_layer_inference)
    torch.library.register_fake("lstm_fused::lstm_layer_backward")(fake_layer_backward)
    torch.library.register_fake("lstm_fused::attentive_lstm_inference")(fake_attentive_inference)
    refuse_autograd("lstm_fused::attentive_lstm_inference")
    register_layer_autograd("lstm_fused::lstm_layer_forward",
                            torch.ops.lstm_fused.lstm_layer_backward.default,
                            reads_only_valid_x_on=("cpu",))
