"""The attention family: masked softmax, additive attention pooling and channel attention.

Operators (schemas in csrc/attention_schemas.h, each with a Triton twin `<name>_triton`):
  masked_softmax_forward(scores (R, N), lengths (R,)?, mask (R, N) bool?, scale) -> probs
  masked_softmax_backward(grad_probs, probs, scale) -> grad_scores
  attention_pooling_forward(x (B, T, D), proj (B, T, A), v (A,), qproj (B, A)?, lengths (B,)?)
      -> (context (B, D), alpha (B, T), lse (B,))
  attention_pooling_backward(grad_context, grad_alpha, grad_lse, x, proj, v, qproj?, lengths?,
                             alpha, context) -> (grad_x, grad_proj, grad_v, grad_qproj)
  channel_masked_mean_forward(x (B, T, C), lengths?) -> mean (B, C)
  channel_masked_mean_backward(grad_mean, x, lengths?) -> grad_x
  channel_rescale_forward(x (B, T, C), w (B, C), lengths?) -> y (B, T, C)
  channel_rescale_backward(grad_y, x, w, lengths?) -> (grad_x, grad_w)
This module gives each its fake kernel and autograd, the Triton twins their kernels
(triton_kernels/attention_ops.py), and registers the implementations of the families
"masked_softmax", "attention_pooling" and "channel_attention".
"""

from __future__ import annotations

import torch

from .. import reference
from . import library, registry
from . import triton_library
from .autograd import differentiable_vjp, zeros_if_none

NAMESPACE = torch.ops.lstm_fused
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
OPS = (
    "masked_softmax_forward",
    "masked_softmax_backward",
    "attention_pooling_forward",
    "attention_pooling_backward",
    "channel_masked_mean_forward",
    "channel_masked_mean_backward",
    "channel_rescale_forward",
    "channel_rescale_backward",
)


# ----------------------------------------------------------------------- fake kernels


def fake_masked_softmax_forward(scores, lengths, mask, scale):
    return torch.empty_like(scores)


def fake_masked_softmax_backward(grad_probs, probs, scale):
    return torch.empty_like(probs)


def fake_attention_pooling_forward(x, proj, v, qproj, lengths):
    B, T, D = x.shape
    return x.new_empty((B, D)), x.new_empty((B, T)), x.new_empty((B,))


def fake_attention_pooling_backward(
    grad_context, grad_alpha, grad_lse, x, proj, v, qproj, lengths, alpha, context
):
    grad_q = x.new_empty(qproj.shape) if qproj is not None else x.new_empty((0,))
    return x.new_empty(x.shape), x.new_empty(proj.shape), x.new_empty(v.shape), grad_q


def fake_channel_masked_mean_forward(x, lengths):
    return x.new_empty((x.shape[0], x.shape[2]))


def fake_channel_masked_mean_backward(grad_mean, x, lengths):
    return x.new_empty(x.shape)


def fake_channel_rescale_forward(x, w, lengths):
    return x.new_empty(x.shape)


def fake_channel_rescale_backward(grad_y, x, w, lengths):
    return x.new_empty(x.shape), x.new_empty(w.shape)


FAKES = {name: globals()[f"fake_{name}"] for name in OPS}


# ----------------------------------------------------------------------- autograd


def register_autograd(suffix: str, namespace: str = "lstm_fused") -> None:
    """Autograd of the forward operators <namespace>::<name>_forward<suffix>, whose gradients
    come from the matching backward operators. Gradients autograd leaves undefined become
    zeros. A backward that autograd records (create_graph=True, double backward) is computed by
    the reference math instead, which is differentiable (differentiable_vjp)."""

    def op(name):
        return getattr(getattr(torch.ops, namespace), name + suffix)

    def softmax_setup(ctx, inputs, output):
        ctx.scale = inputs[3]
        ctx.save_for_backward(output)

    def softmax_backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: the same formula in plain PyTorch, differentiable (probs is
            # the operator's output, so its own derivative chains through this backward).
            # Excluded positions have probs = 0 and so a zero gradient.
            dot = (grad * probs).sum(dim=-1, keepdim=True)
            return probs * (grad - dot) * ctx.scale, None, None, None
        return op("masked_softmax_backward")(grad, probs, ctx.scale), None, None, None

    def pooling_setup(ctx, inputs, output):
        x, proj, v, qproj, lengths = inputs
        context, alpha, _lse = output
        ctx.has_q = qproj is not None
        ctx.save_for_backward(x, proj, v, qproj, lengths, alpha, context)

    def pooling_backward(ctx, grad_context, grad_alpha, grad_lse):
        x, proj, v, qproj, lengths, alpha, context = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (
                *differentiable_vjp(
                    reference.attention_pooling,
                    (x, proj, v, qproj, lengths),
                    (grad_context, grad_alpha, grad_lse),
                    ctx.needs_input_grad,
                ),
            )
        grad_context = zeros_if_none(grad_context, context)
        grad_alpha = zeros_if_none(grad_alpha, alpha)
        if grad_lse is None:
            grad_lse = alpha.new_zeros((alpha.shape[0],))
        gx, gproj, gv, gq = op("attention_pooling_backward")(
            grad_context, grad_alpha, grad_lse, x, proj, v, qproj, lengths, alpha, context
        )
        return gx, gproj, gv, (gq if ctx.has_q else None), None

    def mean_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])

    def mean_backward(ctx, grad):
        x, lengths = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (
                *differentiable_vjp(
                    lambda x, lengths: (reference.masked_mean(x, lengths),),
                    (x, lengths),
                    (grad,),
                    ctx.needs_input_grad,
                ),
            )
        return op("channel_masked_mean_backward")(grad, x, lengths), None

    def rescale_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def rescale_backward(ctx, grad):
        x, w, lengths = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (
                *differentiable_vjp(
                    lambda x, w, lengths: (reference.channel_rescale(x, w, lengths),),
                    (x, w, lengths),
                    (grad,),
                    ctx.needs_input_grad,
                ),
            )
        gx, gw = op("channel_rescale_backward")(grad, x, w, lengths)
        return gx, gw, None

    for name, backward, setup in (
        ("masked_softmax", softmax_backward, softmax_setup),
        ("attention_pooling", pooling_backward, pooling_setup),
        ("channel_masked_mean", mean_backward, mean_setup),
        ("channel_rescale", rescale_backward, rescale_setup),
    ):
        torch.library.register_autograd(
            f"{namespace}::{name}_forward{suffix}", backward, setup_context=setup
        )


def _triton_kernel(name):
    """The Triton twin's kernel: the C++ argument checks of the operator (<name>_check,
    csrc/check_ops.cpp), then the launcher of the same name (triton_kernels/attention_ops.py)."""
    check = getattr(NAMESPACE, f"{name}_check")

    def kernel(*args):
        check(*args)
        return getattr(triton_library.kernels("attention_ops"), name)(*args)

    kernel.__name__ = f"{name}_triton"
    return kernel


# ----------------------------------------------------------------------- entry points


class AttentionKernels:
    """The differentiable entry points of one backend's operators (suffix "" for the C++ ones,
    "_triton"); layouts in the module docstring."""

    def __init__(self, suffix: str):
        self.suffix = suffix

    def _op(self, name):
        return getattr(NAMESPACE, name + self.suffix)

    def masked_softmax(self, scores, lengths, mask, scale):
        return self._op("masked_softmax_forward")(scores, lengths, mask, float(scale))

    def attention_pooling(self, x, proj, v, qproj, lengths):
        return self._op("attention_pooling_forward")(x, proj, v, qproj, lengths)

    def masked_mean(self, x, lengths):
        return self._op("channel_masked_mean_forward")(x, lengths)

    def rescale(self, x, w, lengths):
        return self._op("channel_rescale_forward")(x, w, lengths)


class ReferenceAttentionKernels:
    """Plain PyTorch (lstm_fused/reference.py), the same entry points."""

    def masked_softmax(self, scores, lengths, mask, scale):
        keep = mask
        if lengths is not None:
            by_length = reference.valid_mask(
                lengths, scores.shape[0], scores.shape[1], scores.device
            )
            keep = by_length if keep is None else keep & by_length
        return reference.masked_softmax(scores, keep, scale)

    def attention_pooling(self, x, proj, v, qproj, lengths):
        return reference.attention_pooling(x, proj, v, qproj, lengths)

    def masked_mean(self, x, lengths):
        return reference.masked_mean(x, lengths)

    def rescale(self, x, w, lengths):
        return reference.channel_rescale(x, w, lengths)


# ----------------------------------------------------------------------- registration


def _register_operators() -> None:
    for name in OPS:
        for suffix in ("", "_triton"):
            torch.library.register_fake(f"lstm_fused::{name}{suffix}")(FAKES[name])
        torch.library.register_kernel(
            f"lstm_fused::{name}_triton", ("cpu", "cuda"), _triton_kernel(name)
        )
    register_autograd("")
    register_autograd("_triton")


def register_like(namespace: str) -> None:
    """The fake kernels and autograd of this family's C++ operators in another library built
    with the same schemas (the emulated CUDA library: tests/backends.py,
    register_like_lstm_fused)."""
    for name in OPS:
        torch.library.register_fake(f"{namespace}::{name}")(FAKES[name])
    register_autograd("", namespace=namespace)


def _register_implementations() -> None:
    kernels = {
        "cuda": AttentionKernels(""),
        "triton": AttentionKernels("_triton"),
        "cpu": AttentionKernels(""),
        "reference": ReferenceAttentionKernels(),
    }
    for op in ("masked_softmax", "attention_pooling", "channel_attention"):
        for backend, entry in kernels.items():
            registry.register(
                registry.backend_implementation(
                    op, backend, entry, FLOATS, native_op="masked_softmax_forward"
                )
            )


if library.LOAD_ERROR is None:
    _register_operators()
_register_implementations()
