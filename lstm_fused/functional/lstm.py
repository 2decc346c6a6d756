"""The LSTM through the chosen backend: one layer (lstm_layer), a stack of layers (lstm) and
the attentive LSTM (attentive_lstm). Each picks its implementation once per call
(lstm_fused/ops/registry.py) and runs every layer with it.

Letters and shapes: docs/contract.md. x (T, B, I) time-major; h0 (L*D, B, R); c0 (L*D, B, H);
one layer's weights (w_ih (D, 4H, I), w_hh (D, 4H, R), bias (D, 4H) = b_ih + b_hh or None,
w_hr (D, P, H) or None, w_peep (D, 3, H) = (w_ci, w_cf, w_co) or None); lengths (B,) int64:
steps t >= lengths[b] keep the state and output zeros. Direction 1 runs backwards in time.
resets (T, B), bool or 0/1 numbers (nonzero = set): where resets[t, b] is set, row b's state is
replaced by its initial state (h0, c0) at the boundary between steps t-1 and t, in every layer
and direction (docs/contract.md, "Resets").
"""

from __future__ import annotations

import weakref
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch.autograd import forward_ad

from .. import _checks, onnx_export
from .._checks import check_device, check_tensor
from ..ops import library, registry
from ..ops.autograd import needs_grad
from ..ops.library import one_thread_if_busy
from .attention import check_pooling_params, run_pooling

LayerWeights = Tuple[
    torch.Tensor,
    torch.Tensor,
    Optional[torch.Tensor],
    Optional[torch.Tensor],
    Optional[torch.Tensor],
]


def _features(w_hr, w_peep, lengths, resets=None) -> dict:
    features = dict(proj=w_hr is not None, peephole=w_peep is not None, lengths=lengths is not None)
    if resets is not None:  # asked only when used: implementations that predate it still match
        features["resets"] = True
    return features


def check_resets(
    resets, x: torch.Tensor, *, where: str = "lstm_fused.functional.lstm", layout: str = "(T, B)"
) -> Optional[torch.Tensor]:
    """resets for the time-major input x (T, B, I): a (T, B) tensor of bools or 0/1 numbers
    (any nonzero value counts as set) on x's device. Returns it as a contiguous bool tensor (the
    layer operators' form), or None. layout: how the caller names the expected shape."""
    if resets is None:
        return None
    check_tensor(resets, "resets", where=where)
    if resets.dtype.is_complex:
        raise TypeError(
            f"{where}: resets must be bool or hold 0/1 numbers, got dtype {resets.dtype}"
        )
    T, B = x.shape[0], x.shape[1]
    if resets.dim() != 2 or resets.shape[0] != T or resets.shape[1] != B:
        raise ValueError(
            f"{where}: resets has shape {tuple(resets.shape)}, expected {layout} "
            f"= {(T, B)}: one flag per time step and batch row"
        )
    check_device(resets, "resets", x.device, where=where)
    if resets.dtype != torch.bool:
        resets = resets != 0
    return resets.contiguous()


def _export_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
    """The layer inside torch.onnx.export, as ONNX's LSTM operator (lstm_fused/onnx_export.py),
    whatever the backend."""
    if resets is not None:
        raise RuntimeError(
            "lstm_fused: resets cannot be exported to ONNX (its LSTM operator "
            "has no per-step state reset); export without resets"
        )
    if w_hr is not None:
        raise RuntimeError(onnx_export.PROJECTION_ERROR)
    x, h0, c0 = x.contiguous(), h0.contiguous(), c0.contiguous()
    if not torch.jit.is_tracing():  # torch.onnx.export(dynamo=True): torch.export captures
        return onnx_export.dynamo_layer(x, h0, c0, w_ih, w_hh, bias, w_peep, lengths)
    if library.LOAD_ERROR is not None:
        raise RuntimeError(
            f"lstm_fused: ONNX export with dynamo=False traces the C++ layer "
            f"operator: {library.LOAD_ERROR}; export with dynamo=True instead"
        )
    onnx_export.register()
    return torch.ops.lstm_fused.lstm_layer_inference(
        x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths
    )


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


def _layer_runner(
    impl: registry.Implementation, x, lengths, features: dict, resets=None
) -> Callable:
    """run(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep) -> (y, h_n, c_n) for each layer of one
    call on `impl`: inside torch.onnx.export ONNX's LSTM operator; under torch.autocast the
    layer as nn.LSTM runs it (below); under forward-mode AD or a torch.func transform the
    reference math (the fused kernels have neither tangent nor batching rules; plain PyTorch
    has both, to any order); else impl's kernels."""
    if onnx_export.exporting_onnx():
        return lambda *args: _export_layer(*args, lengths, resets)

    def fused(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep):
        kernels = registry.for_inputs(impl, (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep)).kernels
        # Contiguous time-major input and states: the kernels read them as such (a batch_first
        # input is copied here once, as the input projection would copy it anyway), and
        # compiled graphs then see the same strides as eager.
        if resets is None:
            return kernels.layer(
                x.contiguous(),
                h0.contiguous(),
                c0.contiguous(),
                w_ih,
                w_hh,
                bias,
                w_hr,
                w_peep,
                lengths,
            )
        return kernels.layer(
            x.contiguous(),
            h0.contiguous(),
            c0.contiguous(),
            w_ih,
            w_hh,
            bias,
            w_hr,
            w_peep,
            lengths,
            resets,
        )

    low = _autocast_dtype(x.device.type)
    if low is None or x.dtype == torch.float64:
        return fused
    # Under torch.autocast (lower-precision dtype A): every float32 argument is rounded to A
    # (float64 stays as it is) and y, h_n, c_n come out in A. A backend with kernels for A runs
    # them; one without (the C++ CPU kernels) computes in float32 on the A-rounded values.
    # nn.LSTM's exception: on the CPU with a projection, c_n has c0's dtype promoted with A.
    compute = low if impl.unsupported_reason(x.device, low, **features) is None else torch.float32

    def autocast(x, h0, c0, *weights):
        w_hr = weights[3]
        c_dtype = (
            torch.promote_types(low, c0.dtype)
            if (x.device.type == "cpu" and w_hr is not None)
            else low
        )
        args = [_autocast_cast(t, low) for t in (x, h0, c0, *weights)]
        args = [t.to(compute) if t is not None and t.dtype == low else t for t in args]
        with torch.autocast(x.device.type, enabled=False):
            y, h_n, c_n = fused(*args)
        return y.to(low), h_n.to(low), c_n.to(c_dtype)

    return autocast


def _resolve_layer(backend, op, x, features: dict):
    """The implementation of this call (under autocast: the one that runs float32)."""
    dtype = (
        torch.float32
        if (_autocast_dtype(x.device.type) is not None and x.dtype != torch.float64)
        else x.dtype
    )
    return registry.resolve(backend, op, x.device, dtype, **features)


def _check_lengths(lengths, x, where):
    """lengths (B,) integers in [0, T] (_checks.check_lengths: the one reader of every family),
    as int64 on x's device; None stays None."""
    if lengths is None:
        return None
    return _checks.check_lengths(lengths, x.shape[1], x.shape[0], where=where, device=x.device)


def _run_layers(run, x, h0, c0, weights: Sequence[LayerWeights], between_layers):
    D = weights[0][0].shape[0]
    h_n, c_n = [], []
    y = x
    if len(weights) == 1:  # the states as given: no slices (view ops cost a one-step call)
        return run(x, h0, c0, *weights[0])
    for k, w in enumerate(weights):
        if k > 0 and between_layers is not None:
            y = between_layers(y)
        y, h, c = run(y, h0[k * D : (k + 1) * D], c0[k * D : (k + 1) * D], *w)
        h_n.append(h)
        c_n.append(c)
    return y, torch.cat(h_n, 0), torch.cat(c_n, 0)


@one_thread_if_busy
def lstm(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    weights: Sequence[LayerWeights],
    lengths: Optional[torch.Tensor] = None,
    *,
    resets: Optional[torch.Tensor] = None,
    between_layers: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    backend: str = "auto",
):
    """A stack of L LSTM layers through one backend, differentiable.

    weights: L tuples (w_ih, w_hh, bias, w_hr, w_peep), one per layer (lstm_fused.LSTM's
    `layer_weights(k)`); resets (T, B) bool or 0/1, or None: state resets, the same in every
    layer (each layer restarts from its own h0, c0); between_layers: applied to each layer's
    output before the next layer (dropout in training). Returns y (T, B, D*R) of the last
    layer, h_n (L*D, B, R), c_n (L*D, B, H)."""
    resets = check_resets(resets, x)
    features = _features(weights[0][3], weights[0][4], lengths, resets)
    impl = _resolve_layer(backend, "lstm_layer", x, features)
    lengths = _check_lengths(lengths, x, "lstm")
    return _run_layers(
        _layer_runner(impl, x, lengths, features, resets), x, h0, c0, weights, between_layers
    )


def lstm_layer(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    w_hr: Optional[torch.Tensor] = None,
    w_peep: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    *,
    resets: Optional[torch.Tensor] = None,
    backend: str = "auto",
):
    """One LSTM layer, every direction, through the chosen backend; differentiable.
    h0 (D, B, R), c0 (D, B, H); resets (T, B) or None (lstm). Returns y (T, B, D*R),
    h_n (D, B, R), c_n (D, B, H).

    Forward-mode AD and torch.func transforms run the reference math whatever the backend;
    double backward is handled in the operators' autograd (lstm_fused/ops/lstm_layer.py).
    Under torch.autocast the layer runs as nn.LSTM's does (lower-precision inputs and outputs;
    the C++ CPU kernels compute in float32 on the rounded values). Inside torch.onnx.export
    the layer becomes ONNX's LSTM operator (lstm_fused/onnx_export.py)."""
    return lstm(
        x, h0, c0, [(w_ih, w_hh, bias, w_hr, w_peep)], lengths, resets=resets, backend=backend
    )


@one_thread_if_busy
def attentive_lstm(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    weights: Sequence[LayerWeights],
    lengths: Optional[torch.Tensor],
    proj_weight: torch.Tensor,
    proj_bias: Optional[torch.Tensor],
    score_weight: torch.Tensor,
    *,
    query: Optional[torch.Tensor] = None,
    query_weight: Optional[torch.Tensor] = None,
    between_layers: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    chunk_size: int = 16,
    backend: str = "auto",
):
    """An LSTM stack whose last layer is pooled by additive attention (attention_pooling's
    parameters: proj_weight (A, D*R), proj_bias (A,), score_weight (A,) or (1, A), query (B, Q)
    with query_weight (A, Q)). Returns context (B, D*R), alpha (B, T), h_n, c_n.

    Inference, one direction: where the backend has the kernel, the last layer and the pooling
    run as one (attentive_lstm_inference: each step's output is folded into a running max, sum
    and context as soon as it is computed, so the last layer's (T, B, R) output is never
    written). Otherwise (training, two directions, or no such kernel) the last layer's output
    is written and pooled by the fused pooling kernel."""
    features = _features(weights[0][3], weights[0][4], lengths)
    impl = _resolve_layer(backend, "attentive_lstm", x, features)
    lengths = _check_lengths(lengths, x, "attentive_lstm")
    layer_impl, pool_impl = impl.kernels.layer, impl.kernels.pooling
    run = _layer_runner(layer_impl, x, lengths, features)
    D = weights[-1][0].shape[0]
    split = (len(weights) - 1) * D
    if len(weights) > 1:
        y, h_first, c_first = _run_layers(
            run, x, h0[:split], c0[:split], weights[:-1], between_layers
        )
        if between_layers is not None:
            y = between_layers(y)
    else:
        y = x
    h_last, c_last = h0[split:], c0[split:]
    w_last = weights[-1]
    v, qproj = check_pooling_params(
        x.shape[1],
        D * h_last.shape[2],
        x,
        proj_weight,
        proj_bias,
        score_weight,
        query,
        query_weight,
    )
    fused = None
    if D == 1 and not needs_grad(
        (y, h_last, c_last, *w_last, proj_weight, proj_bias, score_weight, query, query_weight)
    ):
        fused = layer_impl.kernels.attentive_inference(
            y.contiguous(),
            h_last.contiguous(),
            c_last.contiguous(),
            *w_last,
            lengths,
            proj_weight,
            proj_bias,
            v,
            qproj,
            chunk_size,
        )
    if fused is not None:
        context, alpha, _lse, h, c = fused
    else:
        y, h, c = run(y, h_last, c_last, *w_last)
        context, alpha, _lse = run_pooling(
            pool_impl,
            y,
            proj_weight,
            proj_bias,
            v,
            qproj,
            lengths,
            query=query,
            query_weight=query_weight,
            batch_first=False,
        )
    if len(weights) > 1:
        h, c = torch.cat([h_first, h], 0), torch.cat([c_first, c], 0)
    return context, alpha, h, c


# Per owner (a module): views of its weights as the kernels take them, kept between calls
# that record nothing (kept_weights). A weak mapping: an entry goes with its module and is
# never saved or copied with it.
_KEPT_WEIGHTS: "weakref.WeakKeyDictionary[object, tuple]" = weakref.WeakKeyDictionary()


def kept_weights(owner, tensors: List[torch.Tensor], make: Callable):
    """make() -> views of `tensors` as the kernels take them (lstm_fused.LSTMCell's weights as
    (1, 4H, .) layer weights; `tensors` its parameters as this call reads them). In a call
    that records nothing through them (no autograd graph, no forward-mode AD or torch.func
    transform, no tracing, compiling or export) the views of owner's previous call are reused
    while `tensors` are the same objects on the same memory, shapes and strides. Only views are
    kept: they read
    the parameters' memory, so they follow every change of the values, also those no version
    counter sees (writes through .data); a result that is not all views of `tensors` is made
    again every call. A one-step call (a recurrent agent's rollout) otherwise spends on these
    view ops a good part of its time."""
    if (
        torch.is_grad_enabled()
        or forward_ad._current_level >= 0
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch._C._functorch.peek_interpreter_stack() is not None
        or onnx_export.exporting_onnx()
    ):
        return make()
    key = [(t.data_ptr(), t.shape, t.stride()) for t in tensors]
    kept = _KEPT_WEIGHTS.get(owner)
    if (
        kept is not None
        and kept[0] == key
        and len(kept[1]) == len(tensors)
        and all(a is b for a, b in zip(kept[1], tensors))
    ):
        return kept[2]
    views = make()
    bases = {t.untyped_storage().data_ptr() for t in tensors}
    if all(v.untyped_storage().data_ptr() in bases for v in views):
        _KEPT_WEIGHTS[owner] = (key, tuple(tensors), views)
    return views
