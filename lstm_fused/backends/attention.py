"""Backends of the attention op families (SPEC §2): "masked_softmax", "attention_pooling",
"channel_attention" and "attentive_lstm".

Each backend provides one set of kernels (`_Kernels`): "cpu" and "cuda" call the C++ operators
of lstm_fused._C (csrc/attention_ops.cpp; the dispatcher picks the CPU or CUDA kernel),
"triton" calls operators defined in Python around the Triton kernels
(lstm_fused/triton_kernels/attention_*.py), "reference" plain PyTorch (lstm_fused/reference.py).
Every operator gets a fake kernel (torch.compile) and autograd here, registered once.

Kernel layouts (csrc/attention_ops.cpp): scores (R, N) with lengths (R,) or mask (R, N) bool;
x (B, T, D), proj (B, T, A), v (A,), qproj (B, A), lengths (B,); channel ops x (B, T, C).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .. import _ops, reference
from . import register, resolve
from .base import Backend

OPS = ("masked_softmax_forward", "masked_softmax_backward", "attention_pooling_forward",
       "attention_pooling_backward", "channel_masked_mean_forward",
       "channel_masked_mean_backward", "channel_rescale_forward", "channel_rescale_backward")


# ----------------------------------------------------------------------- fake kernels, autograd

def _fake_masked_softmax_forward(scores, lengths, mask, scale):
    return torch.empty_like(scores)


def _fake_masked_softmax_backward(grad_probs, probs, scale):
    return torch.empty_like(probs)


def _fake_attention_pooling_forward(x, proj, v, qproj, lengths):
    B, T, D = x.shape
    return x.new_empty((B, D)), x.new_empty((B, T)), x.new_empty((B,))


def _fake_attention_pooling_backward(grad_context, grad_alpha, grad_lse, x, proj, v, qproj,
                                     lengths, alpha, context):
    grad_q = x.new_empty(qproj.shape) if qproj is not None else x.new_empty((0,))
    return x.new_empty(x.shape), x.new_empty(proj.shape), x.new_empty(v.shape), grad_q


def _fake_channel_masked_mean_forward(x, lengths):
    return x.new_empty((x.shape[0], x.shape[2]))


def _fake_channel_masked_mean_backward(grad_mean, x, lengths):
    return x.new_empty(x.shape)


def _fake_channel_rescale_forward(x, w, lengths):
    return x.new_empty(x.shape)


def _fake_channel_rescale_backward(grad_y, x, w, lengths):
    return x.new_empty(x.shape), x.new_empty(w.shape)


FAKES = {name: globals()[f"_fake_{name}"] for name in OPS}


def register_autograd(prefix: str, ops, namespace: str = "lstm_fused") -> None:
    """Autograd of the forward operators `{namespace}::{prefix}{name}_forward`, whose gradients
    come from the matching backward operators in `ops` (an object with one attribute per name
    of OPS). Gradients autograd leaves undefined become zeros. A backward that autograd records
    (create_graph=True, double backward) is computed by the reference math instead, which is
    differentiable (_ops.differentiable_vjp); forward-mode AD and torch.func transforms never
    reach these operators (lstm_fused.functional routes them to the reference kernels)."""

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
        return ops.masked_softmax_backward(grad, probs, ctx.scale), None, None, None

    def pooling_setup(ctx, inputs, output):
        x, proj, v, qproj, lengths = inputs
        context, alpha, _lse = output
        ctx.has_q = qproj is not None
        ctx.save_for_backward(x, proj, v, qproj, lengths, alpha, context)

    def pooling_backward(ctx, grad_context, grad_alpha, grad_lse):
        x, proj, v, qproj, lengths, alpha, context = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable, by the reference math
            return (*_ops.differentiable_vjp(reference.attention_pooling,
                                             (x, proj, v, qproj, lengths),
                                             (grad_context, grad_alpha, grad_lse),
                                             ctx.needs_input_grad),)
        if grad_context is None:
            grad_context = torch.zeros_like(context)
        if grad_alpha is None:
            grad_alpha = torch.zeros_like(alpha)
        if grad_lse is None:
            grad_lse = alpha.new_zeros((alpha.shape[0],))
        gx, gproj, gv, gq = ops.attention_pooling_backward(
            grad_context, grad_alpha, grad_lse, x, proj, v, qproj, lengths, alpha, context)
        return gx, gproj, gv, (gq if ctx.has_q else None), None

    def mean_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])

    def mean_backward(ctx, grad):
        x, lengths = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (*_ops.differentiable_vjp(lambda x, lengths: (reference.masked_mean(x, lengths),),
                                             (x, lengths), (grad,), ctx.needs_input_grad),)
        return ops.channel_masked_mean_backward(grad, x, lengths), None

    def rescale_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def rescale_backward(ctx, grad):
        x, w, lengths = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (*_ops.differentiable_vjp(
                lambda x, w, lengths: (reference.channel_rescale(x, w, lengths),),
                (x, w, lengths), (grad,), ctx.needs_input_grad),)
        gx, gw = ops.channel_rescale_backward(grad, x, w, lengths)
        return gx, gw, None

    for name, backward, setup in (("masked_softmax", softmax_backward, softmax_setup),
                                  ("attention_pooling", pooling_backward, pooling_setup),
                                  ("channel_masked_mean", mean_backward, mean_setup),
                                  ("channel_rescale", rescale_backward, rescale_setup)):
        torch.library.register_autograd(f"{namespace}::{prefix}{name}_forward", backward,
                                        setup_context=setup)


class _OpsNamespace:
    """The operators {namespace}::{prefix}{name} as attributes named by OPS."""

    def __init__(self, prefix: str, namespace: str = "lstm_fused"):
        self.prefix = prefix
        self.namespace = namespace

    def __getattr__(self, name):
        return getattr(getattr(torch.ops, self.namespace), self.prefix + name).default


if _ops.LOAD_ERROR is None:
    for _name in OPS:
        torch.library.register_fake(f"lstm_fused::{_name}")(FAKES[_name])
    register_autograd("", _OpsNamespace(""))


# ------------------------------------------------------------------------------ kernel sets

class _Kernels:
    """The differentiable entry points one backend offers (layouts in the module docstring)."""

    name = ""
    dtypes: tuple = ()

    def unavailable_reason(self) -> Optional[str]:
        return None

    def device_reason(self, device: torch.device) -> Optional[str]:
        return None

    def masked_softmax(self, scores, lengths, mask, scale):
        raise NotImplementedError

    def attention_pooling(self, x, proj, v, qproj, lengths):
        raise NotImplementedError

    def masked_mean(self, x, lengths):
        raise NotImplementedError

    def rescale(self, x, w, lengths):
        raise NotImplementedError


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


class _OperatorKernels(_Kernels):
    """Kernels reached through registered operators (C++ or Triton)."""

    prefix = ""

    def __init__(self):
        self.ops = _OpsNamespace(self.prefix)

    def masked_softmax(self, scores, lengths, mask, scale):
        return self.ops.masked_softmax_forward(scores, lengths, mask, float(scale))

    def attention_pooling(self, x, proj, v, qproj, lengths):
        return self.ops.attention_pooling_forward(x, proj, v, qproj, lengths)

    def masked_mean(self, x, lengths):
        return self.ops.channel_masked_mean_forward(x, lengths)

    def rescale(self, x, w, lengths):
        return self.ops.channel_rescale_forward(x, w, lengths)


class _NativeKernels(_OperatorKernels):
    device_type = ""
    dispatch_key = ""

    def __init__(self):
        super().__init__()
        # Fixed once the library is loaded; asked here, not per call, so that torch.compile
        # does not have to trace the dispatcher query.
        self._build_reason = None
        if _ops.LOAD_ERROR is not None:
            self._build_reason = _ops.LOAD_ERROR
        elif not torch._C._dispatch_has_kernel_for_dispatch_key(
                "lstm_fused::masked_softmax_forward", self.dispatch_key):
            self._build_reason = (f"lstm_fused._C was built without {self.dispatch_key} "
                                  f"attention kernels (see README: building with CUDA)")

    def unavailable_reason(self):
        return self._build_reason

    def device_reason(self, device):
        if device.type != self.device_type:
            return f"it runs on {self.device_type} tensors, got a tensor on {device}"
        return None


class CPUKernels(_NativeKernels):
    name = "cpu"
    device_type = "cpu"
    dispatch_key = "CPU"
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class CUDAKernels(_NativeKernels):
    name = "cuda"
    device_type = "cuda"
    dispatch_key = "CUDA"
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

    def unavailable_reason(self):
        reason = super().unavailable_reason()
        if reason is None and not torch.cuda.is_available():
            reason = "no CUDA device is available to PyTorch"
        return reason


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


class TritonKernels(_OperatorKernels):
    """Operators lstm_fused::triton_* defined by lstm_fused/triton_kernels/attention_ops.py on
    first use. On the CPU they run only under Triton's interpreter (TRITON_INTERPRET=1)."""

    name = "triton"
    prefix = "triton_"
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    _load_error: Optional[str] = None
    _loaded = False

    def unavailable_reason(self):
        if not TritonKernels._loaded and TritonKernels._load_error is None:
            try:
                from ..triton_kernels import attention_ops

                attention_ops.define_operators(FAKES, register_autograd, OPS)
                TritonKernels._loaded = True
            except ImportError as exc:
                TritonKernels._load_error = f"Triton could not be imported ({exc})"
        return TritonKernels._load_error

    def device_reason(self, device):
        if device.type == "cuda":
            return None
        if device.type == "cpu" and _triton_interpreting():
            return None
        return (f"Triton kernels run on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), "
                f"got a tensor on {device}")


class ReferenceKernels(_Kernels):
    name = "reference"
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

    def masked_softmax(self, scores, lengths, mask, scale):
        keep = mask
        if lengths is not None:
            by_length = reference.valid_mask(lengths, scores.shape[0], scores.shape[1],
                                             scores.device)
            keep = by_length if keep is None else keep & by_length
        return reference.masked_softmax(scores, keep, scale)

    def attention_pooling(self, x, proj, v, qproj, lengths):
        return reference.attention_pooling(x, proj, v, qproj, lengths)

    def masked_mean(self, x, lengths):
        return reference.masked_mean(x, lengths)

    def rescale(self, x, w, lengths):
        return reference.channel_rescale(x, w, lengths)


# ------------------------------------------------------------------------ registered backends

class AttentionBackend(Backend):
    """One op family on one backend; the calls go to `kernels`."""

    def __init__(self, op: str, kernels: _Kernels):
        self.op = op
        self.name = kernels.name
        self.kernels = kernels

    def unavailable_reason(self):
        return self.kernels.unavailable_reason()

    def unsupported_reason(self, device, dtype, **features):
        reason = self.kernels.device_reason(device)
        if reason is None and dtype not in self.kernels.dtypes:
            reason = (f"dtype {str(dtype).replace('torch.', '')} is not supported "
                      f"(supported: {_dtype_names(self.kernels.dtypes)})")
        return reason


class AttentiveLSTMBackend(Backend):
    """The attentive LSTM on one backend: its lstm_layer and attention_pooling of the same
    name must both be able to run the call."""

    op = "attentive_lstm"

    def __init__(self, name: str):
        self.name = name

    def unavailable_reason(self):
        return None

    def unsupported_reason(self, device, dtype, **features):
        reasons = []
        lstm_features = {k: v for k, v in features.items() if k in ("proj", "peephole", "lengths")}
        for op, feats in (("lstm_layer", lstm_features), ("attention_pooling", {})):
            try:
                resolve(self.name, op, device, dtype, **feats)
            except RuntimeError as exc:
                reasons.append(str(exc))
        return "; ".join(reasons) or None


def _register() -> None:
    kernel_sets = (ReferenceKernels(), CPUKernels(), CUDAKernels(), TritonKernels())
    for kernels in kernel_sets:
        for op in ("masked_softmax", "attention_pooling", "channel_attention"):
            register(AttentionBackend(op, kernels))
        register(AttentiveLSTMBackend(kernels.name))


_register()
