"""What a backend implementation is: one op family (e.g. "lstm_layer") on one named backend,
with reasons for what it cannot run.

A backend answers two questions before it is used, so that a backend asked for by name never
falls back silently (SPEC §3): `unavailable_reason()` (is it installed and usable on this
machine at all?) and `unsupported_reason(op, device, dtype, **features)` (can it run this
particular call?). Both return None for yes, or a sentence that says what is missing.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd import forward_ad


def transform_active(tensors) -> bool:
    """Whether a call on `tensors` runs under a torch.func transform (grad, vmap, jvp, jacrev,
    ...) or carries forward-mode AD tangents (dual tensors, gradcheck's check_forward_ad).
    The registered operators have neither tangent nor batching rules (a custom operator drops
    tangents silently), so such calls run the reference math (plain PyTorch) instead.
    Entries that are not tensors, None included, are skipped."""
    if torch.compiler.is_compiling():
        return False  # torch.compile traces the registered operators as they are
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    if forward_ad._current_level < 0:  # no dual level entered: no tangent anywhere
        return False
    return any(isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None
               for t in tensors)


def needs_grad(tensors) -> bool:
    """Whether a call on `tensors` will be differentiated: recorded by autograd, or under
    forward-mode AD or a torch.func transform (entries that are not tensors, None included, are
    skipped). A forward that will be differentiated keeps what its derivatives need, one that
    will not can run an inference kernel. Under torch.jit.trace: always, so that the traced
    graph is one and the same (the differentiable operator) whatever the grad mode of the
    call that traced it, of the trace's own check, and of the later replays."""
    if torch.jit.is_tracing():
        return True
    return (torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
    ) or transform_active(tensors)


class Backend:
    """Base of every implementation. Subclasses set `name` (a backend name of SPEC §3) and
    `op` (the op family, e.g. "lstm_layer"), and define the op's entry points."""

    name: str = ""
    op: str = ""

    def unavailable_reason(self) -> Optional[str]:
        return None

    def unsupported_reason(self, device: torch.device, dtype: torch.dtype,
                           **features) -> Optional[str]:
        return None

    def __repr__(self) -> str:
        return f"<lstm_fused backend {self.name!r} for {self.op}>"


class LSTMLayerBackend(Backend):
    op = "lstm_layer"

    def lstm_layer(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
        """One layer, every direction, differentiable. Shapes: csrc/lstm_layer_args.h.
        Returns (y (T, B, D*R), h_n (D, B, R), c_n (D, B, H))."""
        raise NotImplementedError

    def attentive_inference(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths,
                            proj_weight, proj_bias, v, qproj, chunk_size):
        """The attentive LSTM's last layer without autograd (one direction), pooled in the
        same pass (csrc/ops.cpp: attentive_lstm_inference): (context (B, R), alpha (B, T),
        lse (B,), h_n (1, B, R), c_n (1, B, H)); or None where this backend has no such kernel
        for these sizes, and the caller runs the layer, then the pooling."""
        return None
