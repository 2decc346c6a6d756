"""Functional entry points: the layer call of every backend, and the attention ops."""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import _ops, backends, onnx_export, reference
from .backends.base import transform_active


def _export_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
    """The layer inside torch.onnx.export, as ONNX's LSTM operator (lstm_fused/onnx_export.py),
    whatever the backend."""
    if w_hr is not None:
        raise RuntimeError(onnx_export.PROJECTION_ERROR)
    x, h0, c0 = x.contiguous(), h0.contiguous(), c0.contiguous()
    if not torch.jit.is_tracing():  # torch.onnx.export(dynamo=True): torch.export captures
        return onnx_export.dynamo_layer(x, h0, c0, w_ih, w_hh, bias, w_peep, lengths)
    if _ops.LOAD_ERROR is not None:
        raise RuntimeError(f"lstm_fused: ONNX export with dynamo=False traces the C++ layer "
                           f"operator: {_ops.LOAD_ERROR}; export with dynamo=True instead")
    onnx_export.register()
    return torch.ops.lstm_fused.lstm_layer_inference(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep,
                                                     lengths)


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The lower-precision dtype of torch.autocast when it is on for device_type, else None."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _autocast_cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """What autocast does to an argument of an op on its lower-precision list: floating-point
    tensors other than float64 are cast to dtype (differentiably), the rest is left alone."""
    if t is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _autocast_layer(dtype, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, backend):
    """lstm_layer under autocast with lower-precision dtype `dtype` (see lstm_layer)."""
    args = [_autocast_cast(t, dtype) for t in (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep)]
    features = dict(proj=w_hr is not None, peephole=w_peep is not None,
                    lengths=lengths is not None)
    impl = backends.resolve(backend, "lstm_layer", x.device, torch.float32, **features)
    compute = dtype if impl.unsupported_reason(x.device, dtype, **features) is None \
        else torch.float32
    args = [t.to(compute) if t is not None and t.dtype == dtype else t for t in args]
    with torch.autocast(x.device.type, enabled=False):
        y, h_n, c_n = lstm_layer(*args, lengths, backend=backend)
    c_dtype = dtype
    if x.device.type == "cpu" and w_hr is not None:
        c_dtype = torch.promote_types(dtype, c0.dtype)
    return y.to(dtype), h_n.to(dtype), c_n.to(c_dtype)


def lstm_layer(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
               w_hh: torch.Tensor, bias: Optional[torch.Tensor] = None,
               w_hr: Optional[torch.Tensor] = None, w_peep: Optional[torch.Tensor] = None,
               lengths: Optional[torch.Tensor] = None, *, backend: str = "auto"):
    """One LSTM layer, every direction, through the chosen backend; differentiable.

    x (T, B, I) time-major; h0 (D, B, R); c0 (D, B, H); w_ih (D, 4H, I); w_hh (D, 4H, R);
    bias (D, 4H) = b_ih + b_hh; w_hr (D, P, H); w_peep (D, 3, H) = (w_ci, w_cf, w_co);
    lengths (B,) int64 (steps t >= lengths[b] keep the state and output zeros).
    Direction 1 runs backwards in time. Returns y (T, B, D*R), h_n (D, B, R), c_n (D, B, H).

    Forward-mode AD (dual tensors, gradcheck's check_forward_ad) and torch.func transforms
    (grad, vmap, jacrev, jvp) run the reference math (lstm_fused/reference.py) whatever the
    backend: the fused kernels have neither tangent nor batching rules, and plain PyTorch has
    both, to any order. (Double backward is handled in the operator's autograd, _ops.py.)

    Under torch.autocast for x's device (lower-precision dtype A: float16 or bfloat16) the layer
    runs as nn.LSTM's does: every float32 argument is rounded to A (float64 stays as it is) and
    y, h_n, c_n come out in A. A backend with kernels for A runs them (cuda, triton; reference);
    one without (the C++ CPU kernels: float32, float64) computes in float32 on the A-rounded
    values and rounds its outputs to A (its gradients are then as close to float32's as those
    of nn.LSTM's oneDNN kernels, tests/test_autocast.py). One exception, nn.LSTM's too: on the
    CPU with a projection its LSTM is composed of autocast matmuls and float32 cell math, so
    c_n has c0's dtype promoted with A.

    Inside torch.onnx.export (either exporter) the layer becomes ONNX's LSTM operator
    (lstm_fused/onnx_export.py), whatever the backend.
    """
    if onnx_export.exporting_onnx():
        return _export_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths)
    autocast_dtype = _autocast_dtype(x.device.type)
    if autocast_dtype is not None and x.dtype != torch.float64:
        return _autocast_layer(autocast_dtype, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep,
                               lengths, backend)
    if transform_active((x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep)):
        backends.resolve(backend, "lstm_layer", x.device, x.dtype, proj=w_hr is not None,
                         peephole=w_peep is not None, lengths=lengths is not None)  # its errors
        return reference.lstm_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths)
    impl = backends.resolve(backend, "lstm_layer", x.device, x.dtype,
                            proj=w_hr is not None, peephole=w_peep is not None,
                            lengths=lengths is not None)
    # Contiguous time-major input and states: the kernels read them as such (a batch_first
    # input is copied here once, as the input projection would copy it anyway), and compiled
    # graphs then see the same strides as eager.
    return impl.lstm_layer(x.contiguous(), h0.contiguous(), c0.contiguous(), w_ih, w_hh, bias,
                           w_hr, w_peep, lengths)


# ----------------------------------------------------------------------------- attention ops
# SPEC §2. Each function checks its input (SPEC §4), picks a backend of its op family
# (lstm_fused/backends/attention.py) and calls that backend's fused kernel.

from . import _checks  # noqa: E402
from .backends import attention as _attention_backends  # noqa: E402,F401  (registers them)


def _resolve_attention(backend, op, tensors, device, dtype, **features):
    """The backend of an attention op call; under forward-mode AD or a torch.func transform
    the reference kernels (plain PyTorch), after the chosen backend's own checks passed."""
    impl = backends.resolve(backend, op, device, dtype, **features)
    if transform_active(tensors):
        return backends.implementations(op)["reference"]
    return impl


def _check_float(t, name, where):
    _checks.check_tensor(t, name, where=where)
    if not t.dtype.is_floating_point:
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_same_device(where, ref_name, ref, **tensors):
    for name, t in tensors.items():
        if t is not None:
            _checks.check_device(t, name, ref.device, where=where)


def masked_softmax(scores: torch.Tensor, lengths: Optional[torch.Tensor] = None, *,
                   mask: Optional[torch.Tensor] = None, scale: float = 1.0, dim: int = -1,
                   backend: str = "auto") -> torch.Tensor:
    """softmax(scale * scores) along `dim` with padded positions excluded (SPEC §2).

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
        raise ValueError(f"{where}: dim must be an int in [{-scores.dim()}, {scores.dim() - 1}] "
                         f"for scores of shape {tuple(scores.shape)}, got {dim!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{where}: scale must be a float, got {type(scale).__name__}")
    dim = dim % scores.dim()
    if lengths is not None:
        if dim == 0:
            raise ValueError(f"{where}: dim is 0 (the batch axis that lengths indexes); with "
                             f"lengths the softmax must run along another axis")
        _check_same_device(where, "scores", scores, lengths=lengths)
        lengths = _checks.check_lengths(lengths, scores.shape[0], scores.shape[dim], where=where,
                                        device=scores.device)
    if mask is not None:
        _checks.check_tensor(mask, "mask", where=where)
        if mask.dtype != torch.bool:
            raise TypeError(f"{where}: mask must be a bool tensor (True = take part), got "
                            f"dtype {mask.dtype}")
        _check_same_device(where, "scores", scores, mask=mask)
        try:
            mask = torch.broadcast_to(mask, scores.shape)
        except RuntimeError:
            raise ValueError(f"{where}: mask has shape {tuple(mask.shape)}, expected a shape "
                             f"broadcastable to scores {tuple(scores.shape)}") from None
    impl = _resolve_attention(backend, "masked_softmax", (scores,), scores.device, scores.dtype,
                              lengths=lengths is not None, mask=mask is not None)
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


def attention_pooling(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      score_weight: torch.Tensor, lengths: Optional[torch.Tensor] = None, *,
                      query: Optional[torch.Tensor] = None,
                      query_weight: Optional[torch.Tensor] = None, batch_first: bool = False,
                      backend: str = "auto", return_lse: bool = False):
    """Additive (Bahdanau) attention pooling (SPEC §2, seed 000).

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
        raise ValueError(f"{where}: x must be 3-D ({'B, T' if batch_first else 'T, B'}, D), "
                         f"got shape {tuple(x.shape)}")
    xb = _batch_major(x, batch_first)
    B, T, D = xb.shape
    _checks.check_tensor(weight, "weight", where=where)
    if weight.dim() != 2:
        raise ValueError(f"{where}: weight must be 2-D (A, D), got shape {tuple(weight.shape)}")
    A = weight.shape[0]
    _check_linear_weight(weight, "weight", A, D, x, where)
    if bias is not None:
        _check_linear_weight(bias, "bias", A, None, x, where)
    _checks.check_tensor(score_weight, "score_weight", where=where)
    v = score_weight.reshape(-1) if score_weight.dim() == 2 and score_weight.shape[0] == 1 \
        else score_weight
    _check_linear_weight(v, "score_weight", A, None, x, where)
    qproj = None
    if (query is None) != (query_weight is None):
        raise ValueError(f"{where}: query and query_weight go together, got query="
                         f"{'None' if query is None else 'a tensor'} and query_weight="
                         f"{'None' if query_weight is None else 'a tensor'}")
    if query is not None:
        _check_float(query, "query", where)
        _checks.check_device(query, "query", x.device, where=where)
        _checks.check_dtype(query, "query", x.dtype, where=where)
        if query.dim() != 2 or query.shape[0] != B:
            raise ValueError(f"{where}: query has shape {tuple(query.shape)}, expected "
                             f"({B}, Q) (one query vector per batch element)")
        _check_linear_weight(query_weight, "query_weight", A, query.shape[1], x, where)
        qproj = query @ query_weight.t()  # (B, A)
    if lengths is not None:
        _check_same_device(where, "x", x, lengths=lengths)
        lengths = _checks.check_lengths(lengths, B, T, where=where, device=x.device)
    differentiated = (x, weight, bias, v, query, query_weight)
    transformed = transform_active(differentiated)
    impl = _resolve_attention(backend, "attention_pooling", differentiated, x.device, x.dtype,
                              lengths=lengths is not None, query=query is not None)
    if lengths is not None and (transformed or torch.is_grad_enabled() and weight.requires_grad):
        # The weight gradient of the GEMM, grad_proj^T x, would read x on padded steps
        # (0 * nan = nan); zero them. Inference skips this pass: the kernel never reads them.
        keep = torch.arange(T, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        keep = (keep if batch_first else keep.t()).unsqueeze(2)
        # (_ZeroPadding has no forward-AD or batching rule; torch.where has both)
        x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)) \
            if transformed else _ZeroPadding.apply(x, keep)
        xb = _batch_major(x, batch_first)
    # The one GEMM, in x's own layout; the kernels read the (B, T, A) view through its strides.
    proj = _batch_major(torch.nn.functional.linear(x, weight, bias), batch_first)
    context, alpha, lse = impl.kernels.attention_pooling(xb, proj, v, qproj, lengths)
    return (context, alpha, lse) if return_lse else (context, alpha)


def channel_attention(x: torch.Tensor, lengths: Optional[torch.Tensor] = None, *,
                      gate, batch_first: bool = False, backend: str = "auto") -> torch.Tensor:
    """Channel attention (SPEC §2, seed 004): y = x * gate(masked mean of x over time).

    x (T, B, C) (or (B, T, C) with batch_first); gate: a callable (B, C) -> (B, C) weights
    (the ECA convolution or the SE MLP, sigmoid included; lstm_fused.ChannelAttention builds
    it). The masked mean is one fused kernel, the rescale another; padded steps of y are 0.
    Returns y shaped like x.
    """
    where = "channel_attention"
    _check_float(x, "x", where)
    if x.dim() != 3:
        raise ValueError(f"{where}: x must be 3-D ({'B, T' if batch_first else 'T, B'}, C), "
                         f"got shape {tuple(x.shape)}")
    xb = _batch_major(x, batch_first)
    B, T, C = xb.shape
    if lengths is not None:
        _check_same_device(where, "x", x, lengths=lengths)
        lengths = _checks.check_lengths(lengths, B, T, where=where, device=x.device)
    impl = _resolve_attention(backend, "channel_attention", (x,), x.device, x.dtype,
                              lengths=lengths is not None)
    mean = impl.kernels.masked_mean(xb, lengths)  # (B, C)
    w = gate(mean)
    if impl.name != "reference" and transform_active((w,)):  # the gate's parameters carry it
        impl = backends.implementations("channel_attention")["reference"]
    y = impl.kernels.rescale(xb, w, lengths)  # (B, T, C)
    return _batch_major(y, batch_first)
