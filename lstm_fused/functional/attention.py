"""The attention heads through the chosen backend: masked softmax, additive attention
pooling and channel attention (docs/contract.md, section 2). Each function checks its input
(section 5), picks its implementation once (lstm_fused/ops/registry.py) and calls its fused
kernels (layouts: lstm_fused/ops/attention.py).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _checks, reference
from ..ops import cpu_linear, registry
from ..ops.autograd import differentiable_vjp, transform_active, zeros_if_none
from ..ops.library import one_thread_if_busy


def _resolve_attention(backend, op, tensors, device, dtype, **features):
    """The implementation of an attention op call on `tensors` (registry.for_inputs: the
    reference kernels under forward-mode AD or a torch.func transform)."""
    return registry.for_inputs(registry.resolve(backend, op, device, dtype, **features), tensors)


def _check_float(t, name, where):
    _checks.check_tensor(t, name, where=where)
    if not t.dtype.is_floating_point:
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_same_device(where, ref_name, ref, **tensors):
    for name, t in tensors.items():
        if t is not None:
            _checks.check_device(t, name, ref.device, where=where)


def masked_softmax(
    scores: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    mask: Optional[torch.Tensor] = None,
    scale: float = 1.0,
    dim: int = -1,
    backend: str = "auto",
) -> torch.Tensor:
    """softmax(scale * scores) along `dim` with padded positions excluded.

    scores (B, ..., T, ...); lengths (B,) integers: positions >= lengths[b] along `dim` are
    padding (dim must not be 0, the batch axis, when lengths is given); mask: bool,
    broadcastable to scores, True = take part (the convention of scaled_dot_product_attention's
    boolean attn_mask). Excluded positions get exactly 0 and are never read; a row with nothing
    left is all zeros (never NaN). One pass over each row with an online max and sum.
    """
    where = "masked_softmax"
    _check_float(scores, "scores", where)
    if scores.dim() == 0:
        raise ValueError(f"{where}: scores must have at least one dimension, got a 0-D tensor")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -scores.dim() <= dim < scores.dim():
        raise ValueError(
            f"{where}: dim must be an int in [{-scores.dim()}, {scores.dim() - 1}] "
            f"for scores of shape {tuple(scores.shape)}, got {dim!r}"
        )
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{where}: scale must be a float, got {type(scale).__name__}")
    dim = dim % scores.dim()
    if lengths is not None:
        if dim == 0:
            raise ValueError(
                f"{where}: dim is 0 (the batch axis that lengths indexes); with "
                f"lengths the softmax must run along another axis"
            )
        lengths = _checks.check_lengths(
            lengths, scores.shape[0], scores.shape[dim], where=where, device=scores.device
        )
    if mask is not None:
        _checks.check_tensor(mask, "mask", where=where)
        if mask.dtype != torch.bool:
            raise TypeError(
                f"{where}: mask must be a bool tensor (True = take part), got dtype {mask.dtype}"
            )
        _check_same_device(where, "scores", scores, mask=mask)
        try:
            mask = torch.broadcast_to(mask, scores.shape)
        except RuntimeError:
            raise ValueError(
                f"{where}: mask has shape {tuple(mask.shape)}, expected a shape "
                f"broadcastable to scores {tuple(scores.shape)}"
            ) from None
    impl = _resolve_attention(
        backend,
        "masked_softmax",
        (scores,),
        scores.device,
        scores.dtype,
        lengths=lengths is not None,
        mask=mask is not None,
    )
    moved = scores.movedim(dim, -1)
    shape = moved.shape
    N = shape[-1]
    R = math.prod(shape[:-1])
    rows = moved.reshape(R, N)
    row_lengths = None
    if lengths is not None:
        B = scores.shape[0]
        row_lengths = lengths.repeat_interleave(R // B) if B > 0 else lengths
    row_mask = None if mask is None else mask.movedim(dim, -1).reshape(R, N)
    probs = impl.kernels.masked_softmax(rows, row_lengths, row_mask, float(scale))
    return probs.reshape(shape).movedim(-1, dim)


def _batch_major(x, batch_first):
    """(T, B, F) -> a (B, T, F) view; (B, T, F) as is."""
    return x if batch_first else x.transpose(0, 1)


def _check_linear_weight(w, name, rows, cols, ref, where):
    _checks.check_tensor(w, name, where=where)
    _checks.check_device(w, name, ref.device, where=where)
    _checks.check_dtype(w, name, ref.dtype, where=where)
    expected = (rows, cols) if cols is not None else (rows,)
    _checks.check_shape(w, name, expected, where=where)


class _ZeroPadding(torch.autograd.Function):
    """where(keep, x, 0) whose gradient passes through unchanged, for attention_pooling only.

    Exact there: both users of the result, the projection GEMM and the pooling kernel, give
    padded steps an exactly zero gradient (every kernel writes grad_proj = 0 and grad_x = 0 on
    padding, and 0 W = 0), so masking the gradient again, what where's own backward does,
    would be one more full pass over x (about 0.4 ms at B=32, T=100, D=256 on 2 CPU cores)."""

    @staticmethod
    def forward(x, keep):
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _CpuProjectedPooling(torch.autograd.Function):
    """attention_pooling on the CPU kernels with its projection W_h x + b in the same node:
    the projection and its gradients through ops/cpu_linear.py (oneDNN for float32), the
    pooling through the operators attention_pooling_forward / _backward.

    x (T, B, D) (or (B, T, D) with batch_first) contiguous; returns (context, alpha, lse).
    One node instead of linear + pooling saves what autograd would add: the sum of x's two
    gradients (the kernel's alpha_t g_c, batch-major, and the projection's, in x's layout),
    here one in-place add into the kernel's output, and the pass that zeroes x's padding
    before the projection, whose only purpose is grad_W = grad_proj^T x: grad_proj is exactly
    0 on padding, so the product over raw x is exact unless padding holds inf or NaN, which
    the check below catches (then it is recomputed with the padding zeroed)."""

    @staticmethod
    def forward(ctx, x, weight, bias, v, qproj, lengths, batch_first):
        S0, S1, D = x.shape
        proj = cpu_linear.linear(x.view(S0 * S1, D), weight, bias).view(S0, S1, weight.shape[0])
        context, alpha, lse = torch.ops.lstm_fused.attention_pooling_forward(
            _batch_major(x, batch_first), _batch_major(proj, batch_first), v, qproj, lengths
        )
        ctx.batch_first = batch_first
        ctx.save_for_backward(x, weight, bias, proj, v, qproj, lengths, alpha, context)
        return context, alpha, lse

    @staticmethod
    @one_thread_if_busy  # its oneDNN products and adds, as the forward's
    def backward(ctx, grad_context, grad_alpha, grad_lse):
        x, weight, bias, proj, v, qproj, lengths, alpha, context = ctx.saved_tensors
        bf = ctx.batch_first
        if torch.is_grad_enabled():  # create_graph=True: the reference math, differentiable
            grads = differentiable_vjp(
                lambda *a: _projected_pooling_reference(*a, bf),
                (x, weight, bias, v, qproj, lengths),
                (grad_context, grad_alpha, grad_lse),
                ctx.needs_input_grad,
            )
            return (*grads, None)
        T, B = x.shape[:2] if not bf else x.shape[1::-1]
        D, A = x.shape[2], weight.shape[0]
        xb = _batch_major(x, bf)
        gx, gproj, gv, gq = torch.ops.lstm_fused.attention_pooling_backward(
            zeros_if_none(grad_context, context),
            zeros_if_none(grad_alpha, alpha),
            alpha.new_zeros((B,)) if grad_lse is None else grad_lse,
            xb,
            _batch_major(proj, bf),
            v,
            qproj,
            lengths,
            alpha,
            context,
        )  # gx (B, T, D), gproj (B, T, A), batch-major
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = cpu_linear.add_input_grad(gx.view(B * T, D), gproj.view(B * T, A), weight)
            grad_x = _batch_major(grad_x.view(B, T, D), bf)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            rows = gproj if bf else gproj.transpose(0, 1).contiguous()  # x's row order
            rows, x_rows = rows.view(T * B, A), x.view(T * B, D)
            grad_w, grad_b = cpu_linear.param_grads(rows, x_rows, weight, bias is not None)
            # (a sum is inf or NaN where any term is; a finite overflow only costs a recompute)
            if lengths is not None and not math.isfinite(grad_w.sum().item()):
                keep = reference.valid_mask(lengths, B, T, x.device)  # (B, T)
                keep = (keep if bf else keep.t()).reshape(T * B, 1)
                zeroed = torch.where(keep, x_rows, torch.zeros((), dtype=x.dtype))
                grad_w, grad_b = cpu_linear.param_grads(rows, zeroed, weight, bias is not None)
        return (
            grad_x,
            grad_w,
            grad_b if ctx.needs_input_grad[2] else None,
            gv if ctx.needs_input_grad[3] else None,
            gq if ctx.needs_input_grad[4] else None,
            None,
            None,
        )


def _projected_pooling_reference(x, weight, bias, v, qproj, lengths, batch_first):
    """_CpuProjectedPooling's math in plain PyTorch (differentiable to any order), padding of
    x zeroed first so that nothing stored there reaches a gradient."""
    xb = _batch_major(x, batch_first)
    B, T = xb.shape[:2]
    keep = reference.valid_mask(lengths, B, T, x.device).unsqueeze(2)
    xb = torch.where(keep, xb, torch.zeros((), dtype=x.dtype, device=x.device))
    proj = torch.nn.functional.linear(xb, weight, bias)
    return reference.attention_pooling(xb, proj, v, qproj, lengths)


def check_pooling_params(
    B, D, like, weight, bias, score_weight, query=None, query_weight=None, where="attention_pooling"
):
    """The checks of attention_pooling's parameters for a sequence of B rows of D features of
    `like`'s dtype and device; returns (v (A,), qproj (B, A) = query W_q^T or None)."""
    _checks.check_tensor(weight, "weight", where=where)
    if weight.dim() != 2:
        raise ValueError(f"{where}: weight must be 2-D (A, D), got shape {tuple(weight.shape)}")
    A = weight.shape[0]
    _check_linear_weight(weight, "weight", A, D, like, where)
    if bias is not None:
        _check_linear_weight(bias, "bias", A, None, like, where)
    _checks.check_tensor(score_weight, "score_weight", where=where)
    v = (
        score_weight.reshape(-1)
        if score_weight.dim() == 2 and score_weight.shape[0] == 1
        else score_weight
    )
    _check_linear_weight(v, "score_weight", A, None, like, where)
    qproj = None
    if (query is None) != (query_weight is None):
        raise ValueError(
            f"{where}: query and query_weight go together, got query="
            f"{'None' if query is None else 'a tensor'} and query_weight="
            f"{'None' if query_weight is None else 'a tensor'}"
        )
    if query is not None:
        _check_float(query, "query", where)
        _checks.check_device(query, "query", like.device, where=where)
        _checks.check_dtype(query, "query", like.dtype, where=where)
        if query.dim() != 2 or query.shape[0] != B:
            raise ValueError(
                f"{where}: query has shape {tuple(query.shape)}, expected "
                f"({B}, Q) (one query vector per batch element)"
            )
        _check_linear_weight(query_weight, "query_weight", A, query.shape[1], like, where)
        qproj = query @ query_weight.t()  # (B, A)
    return v, qproj


def _eager() -> bool:
    """Not traced: torch.compile, torch.jit and ONNX export see the operators themselves."""
    return not (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )


def run_pooling(
    impl, x, weight, bias, v, qproj, lengths, *, query=None, query_weight=None, batch_first=False
):
    """attention_pooling on checked arguments with `impl` (an attention_pooling
    Implementation): (context (B, D), alpha (B, T), lse (B,))."""
    xb = _batch_major(x, batch_first)
    T = xb.shape[1]
    differentiated = (x, weight, bias, v, query, query_weight)
    transformed = transform_active(differentiated)
    impl = registry.for_inputs(impl, differentiated)
    if impl.backend == "cpu" and _eager():
        return _CpuProjectedPooling.apply(
            x.contiguous(), weight, bias, v, qproj, lengths, batch_first
        )
    if lengths is not None and (transformed or torch.is_grad_enabled() and weight.requires_grad):
        # The weight gradient of the GEMM, grad_proj^T x, would read x on padded steps
        # (0 * nan = nan); zero them. Inference skips this pass: the kernel never reads them.
        keep = torch.arange(T, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        keep = (keep if batch_first else keep.t()).unsqueeze(2)
        # (_ZeroPadding has no forward-AD or batching rule; torch.where has both)
        x = (
            torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if transformed
            else _ZeroPadding.apply(x, keep)
        )
        xb = _batch_major(x, batch_first)
    # The one GEMM, in x's own layout; the kernels read the (B, T, A) view through its strides.
    proj = _batch_major(torch.nn.functional.linear(x, weight, bias), batch_first)
    return impl.kernels.attention_pooling(xb, proj, v, qproj, lengths)


@one_thread_if_busy
def attention_pooling(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    score_weight: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    query: Optional[torch.Tensor] = None,
    query_weight: Optional[torch.Tensor] = None,
    batch_first: bool = False,
    backend: str = "auto",
    return_lse: bool = False,
):
    """Additive (Bahdanau) attention pooling.

    x (T, B, D) (or (B, T, D) with batch_first); weight (A, D), bias (A,) or None: W_h, b;
    score_weight (A,) or (1, A): v; query (B, Q) with query_weight (A, Q): W_q.
    e_t = v . tanh(W_h x_t + b + W_q q); alpha = masked softmax of e over t < lengths[b];
    c = sum_t alpha_t x_t. W_h x is one GEMM; tanh, the v-dot, the online softmax and the
    weighted sum run in one fused kernel. Returns (c (B, D), alpha (B, T)), and with
    return_lse also lse (B,) = log sum_t exp(e_t) over the valid steps (-inf when none).
    """
    where = "attention_pooling"
    _check_float(x, "x", where)
    if x.dim() != 3:
        raise ValueError(
            f"{where}: x must be 3-D ({'B, T' if batch_first else 'T, B'}, D), "
            f"got shape {tuple(x.shape)}"
        )
    B, T, D = _batch_major(x, batch_first).shape
    v, qproj = check_pooling_params(B, D, x, weight, bias, score_weight, query, query_weight)
    if lengths is not None:
        lengths = _checks.check_lengths(lengths, B, T, where=where, device=x.device)
    impl = registry.resolve(
        backend,
        "attention_pooling",
        x.device,
        x.dtype,
        lengths=lengths is not None,
        query=query is not None,
    )
    context, alpha, lse = run_pooling(
        impl,
        x,
        weight,
        bias,
        v,
        qproj,
        lengths,
        query=query,
        query_weight=query_weight,
        batch_first=batch_first,
    )
    return (context, alpha, lse) if return_lse else (context, alpha)


def channel_attention(
    x: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    gate,
    batch_first: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Channel attention: y = x * gate(masked mean of x over time).

    x (T, B, C) (or (B, T, C) with batch_first); gate: a callable (B, C) -> (B, C) weights
    (the ECA convolution or the SE MLP, sigmoid included; lstm_fused.ChannelAttention builds
    it). The masked mean is one fused kernel, the rescale another; padded steps of y are 0.
    Returns y shaped like x.
    """
    where = "channel_attention"
    _check_float(x, "x", where)
    if x.dim() != 3:
        raise ValueError(
            f"{where}: x must be 3-D ({'B, T' if batch_first else 'T, B'}, C), "
            f"got shape {tuple(x.shape)}"
        )
    xb = _batch_major(x, batch_first)
    B, T, C = xb.shape
    if lengths is not None:
        lengths = _checks.check_lengths(lengths, B, T, where=where, device=x.device)
    impl = _resolve_attention(
        backend, "channel_attention", (x,), x.device, x.dtype, lengths=lengths is not None
    )
    mean = impl.kernels.masked_mean(xb, lengths)  # (B, C)
    w = gate(mean)
    impl = registry.for_inputs(impl, (w,))  # the gate's parameters may carry a transform
    y = impl.kernels.rescale(xb, w, lengths)  # (B, T, C)
    return _batch_major(y, batch_first)
