"""State resets inside the time loop (docs/contract.md, "Resets"), on every backend here.

The oracle is the loop a user writes without them: nn.LSTM one step and one batch row at a
time, in float64, with (h, c) replaced by the layer's initial state (h0, c0) where a reset is
set: direction 0 before step t where resets[t, b]; direction 1 (t going down) before step t-1
where resets[t, b]; resets at t >= lengths[b] ignored. Several layers: each layer restarts
from its own h0, c0. Outputs and gradients of lstm_fused.LSTM (module) and of the layer
operators are compared with it; gradcheck in float64, forward AD through the reference, and
the argument checks. Streaming (carrying (h, c) across calls) is tested at the end.

The emulated CUDA gate path is tested in tests/test_cuda_emulated.py (its library fixture).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_fused
from lstm_fused import functional, reference, switches
from backends import cases
from tolerances import tol

f64 = torch.float64

# Every time loop: the CPU's row loop and fused loops (input projection by a GEMM or in the
# tiles; with a projection every CPU variant runs the row loop), the Triton sequence kernel
# and step path, the reference.
VARIANTS = [
    "reference",
    "cpu:rows",
    "cpu:fused_gemm",
    "cpu:fused_input",
    "triton:sequence",
    "triton:step",
]
BACKENDS = cases("lstm_layer", VARIANTS, cpu_tensors=True)


def _switches(variant: str):
    backend, _, loop = variant.partition(":")
    if backend == "cpu":
        return backend, switches.override(cpu_loop=loop)
    if backend == "triton":
        return backend, switches.override(triton_path=loop)
    return backend, switches.override()


# --------------------------------------------------------------------------- the oracle


def nn_step_loop(m: lstm_fused.LSTM, x, h0, c0, resets, lengths=None):
    """y (T, B, D*R), h_n, c_n of module m's weights by nn.LSTM, one step and one row at a time.
    x (T, B, I) time-major; h0 (L*D, B, R), c0 (L*D, B, H); resets (T, B) bool; lengths: list
    or None. Differentiable with respect to x, h0, c0 and m's parameters."""
    T, B = x.shape[0], x.shape[1]
    L, D, H, P = m.num_layers, m.num_directions, m.hidden_size, m.proj_size
    R = P or H
    lens = list(lengths) if lengths is not None else [T] * B
    inp = x
    h_n, c_n = [], []
    for k in range(L):
        cols = []
        for d in range(D):
            sfx = "_reverse" if d else ""
            cell = nn.LSTM(inp.shape[2], H, proj_size=P, bias=m.bias, dtype=x.dtype)
            params = {
                name: getattr(m, f"{name[:-3]}_l{k}{sfx}") for name, _ in cell.named_parameters()
            }
            rows_y, rows_h, rows_c = [], [], []
            for b in range(B):
                init = (h0[k * D + d, b].view(1, 1, R), c0[k * D + d, b].view(1, 1, H))
                h, c = init
                out = [x.new_zeros(R)] * T
                steps = range(lens[b]) if d == 0 else range(lens[b] - 1, -1, -1)
                for t in steps:
                    if d == 0 and resets[t, b]:
                        h, c = init
                    o, (h, c) = functional_call(cell, params, (inp[t, b].view(1, 1, -1), (h, c)))
                    out[t] = o.view(R)
                    if d == 1 and t > 0 and resets[t, b]:  # the boundary before step t-1
                        h, c = init
                rows_y.append(torch.stack(out) if T else x.new_zeros((0, R)))
                rows_h.append(h.view(R))
                rows_c.append(c.view(H))
            cols.append(torch.stack(rows_y, 1))  # (T, B, R)
            h_n.append(torch.stack(rows_h))
            c_n.append(torch.stack(rows_c))
        inp = torch.cat(cols, 2)
    return inp, torch.stack(h_n), torch.stack(c_n)


def _module(L, bidirectional, P, batch_first=False, seed=0):
    torch.manual_seed(seed)
    return lstm_fused.LSTM(
        3,
        4,
        num_layers=L,
        bidirectional=bidirectional,
        proj_size=P,
        batch_first=batch_first,
        dtype=f64,
    )


def _resets(T, B, seed, p=0.35):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(T, B, generator=g) < p
    r[0, 0] = True  # resets[0] changes nothing (direction 0); direction 1 crosses none there
    if T > 2:
        r[T - 1, min(1, B - 1)] = True
    return r


def _inputs(m, T, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    R = m.proj_size or m.hidden_size
    LD = m.num_layers * m.num_directions
    x = torch.randn(T, B, m.input_size, generator=g, dtype=f64)
    h0 = torch.randn(LD, B, R, generator=g, dtype=f64) * 0.5
    c0 = torch.randn(LD, B, m.hidden_size, generator=g, dtype=f64) * 0.5
    return x, h0, c0


def _grads(outs, leaves, seed=3):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=f64) for o in outs]
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    return torch.autograd.grad(loss, leaves, allow_unused=True)


# (num_layers, bidirectional, proj_size, lengths or None, batch_first)
CONFIGS = {
    "uni": (1, False, 0, None, False),
    "bi": (1, True, 0, None, False),
    "bi-lengths": (1, True, 0, [6, 2, 4], False),
    "proj-2layers-bi": (2, True, 2, None, False),
    "2layers-batch_first": (2, False, 0, None, True),
}
T, B = 6, 3


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("variant", BACKENDS)
def test_module_matches_nn_lstm_step_loop(variant, config):
    """lstm_fused.LSTM(..., resets=) against the nn.LSTM step loop: outputs and the gradients
    of x, h0, c0 and every parameter (float64). With lengths: a PackedSequence (enforce_sorted
    False), resets in the padded layout of the original batch order."""
    L, bi, P, lengths, batch_first = CONFIGS[config]
    backend, override = _switches(variant)
    m = _module(L, bi, P, batch_first)
    m.backend = backend
    x, h0, c0 = _inputs(m, T, B)
    resets = _resets(T, B, seed=sum(map(ord, config)))
    leaves = [x.requires_grad_(), h0.requires_grad_(), c0.requires_grad_(), *m.parameters()]

    want = nn_step_loop(m, x, h0, c0, resets, lengths)
    with override:
        if lengths is not None:
            packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
            out, (h_n, c_n) = m(packed, (h0, c0), resets=resets)
            y, _ = pad_packed_sequence(out, total_length=T)
        elif batch_first:
            y, (h_n, c_n) = m(x.transpose(0, 1), (h0, c0), resets=resets.t())
            y = y.transpose(0, 1)
        else:
            y, (h_n, c_n) = m(x, (h0, c0), resets=resets.to(torch.int64))  # 0/1 ints
        got = (y, h_n, c_n)
        got_grads = _grads(got, leaves)
    want_grads = _grads(want, leaves)
    t = tol("lstm", f64)
    for a, e, what in zip(got, want, ("y", "h_n", "c_n")):
        torch.testing.assert_close(a, e, **t, msg=lambda s, w=what: f"{w}: {s}")
    names = ["x", "h0", "c0"] + [n for n, _ in m.named_parameters()]
    for a, e, name in zip(got_grads, want_grads, names):
        torch.testing.assert_close(a, e, **t, msg=lambda s, n=name: f"grad {n}: {s}")


def test_the_oracle_is_nn_lstm_without_resets():
    """The step loop itself, with no reset set, is nn.LSTM's one call (bidirectional, two
    layers, projection): the oracle is the plain loop, nothing more."""
    m = _module(2, True, 2)
    ref = nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=f64)
    ref.load_state_dict(m.state_dict())
    x, h0, c0 = _inputs(m, T, B)
    got = nn_step_loop(m, x, h0, c0, torch.zeros(T, B, dtype=torch.bool))
    y, (h_n, c_n) = ref(x, (h0, c0))
    for a, e in zip(got, (y, h_n, c_n)):
        torch.testing.assert_close(a, e, **tol("float64_same_math", f64))


def test_reverse_direction_reset_semantics_by_hand():
    """What a reset means going backwards, spelled out: direction 1 of a one-layer
    bidirectional LSTM with a reset at t = 2 (T = 4) runs steps 3, 2 from h0, then steps 1, 0
    from h0 again: its outputs at t <= 1 are those of the sequence x[0:2] alone, at t >= 2
    those of x[2:4] alone."""
    m = _module(1, True, 0)
    x, h0, c0 = _inputs(m, 4, 2)
    resets = torch.zeros(4, 2, dtype=torch.bool)
    resets[2] = True
    y, _ = m(x, (h0, c0), resets=resets)
    head, _ = m(x[:2], (h0, c0))
    tail, _ = m(x[2:], (h0, c0))
    t = tol("float64_same_math", f64)
    torch.testing.assert_close(y[:2, :, 4:], head[:, :, 4:], **t)
    torch.testing.assert_close(y[2:, :, 4:], tail[:, :, 4:], **t)
    # ... and direction 0 the same way: t >= 2 restarts from h0.
    torch.testing.assert_close(y[:2, :, :4], head[:, :, :4], **t)
    torch.testing.assert_close(y[2:, :, :4], tail[:, :, :4], **t)


LAYER_COMBOS = [  # (D, proj, peephole, lengths)
    (1, False, False, None),
    (2, False, True, [4, 1, 0]),
    (2, True, True, [3, 4, 2]),
]


def _layer_args(D, proj, peephole, lengths, seed=0, T=4, B=3, I=2, H=4, P=2):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(*shape, generator=g, dtype=f64) * 0.6).requires_grad_()

    R = P if proj else H
    return dict(
        x=r(T, B, I),
        h0=r(D, B, R),
        c0=r(D, B, H),
        w_ih=r(D, 4 * H, I),
        w_hh=r(D, 4 * H, R),
        bias=r(D, 4 * H),
        w_hr=r(D, P, H) if proj else None,
        w_peep=r(D, 3, H) if peephole else None,
        lengths=None if lengths is None else torch.tensor(lengths),
    )


def _combo_id(c):
    return "D{}-proj{}-peep{}-len{}".format(c[0], int(c[1]), int(c[2]), int(c[3] is not None))


# Every combination on the CPU and the reference; under Triton's interpreter (slow) the fullest
# one on the sequence kernel, its gradient checked for x, h0 and W_hh (the module and layer
# tests compare every gradient of both Triton paths with the float64 oracle).
GRADCHECK = [
    pytest.param(*p.values, c, marks=p.marks, id=f"{p.id}-{_combo_id(c)}")
    for p in BACKENDS
    for c in LAYER_COMBOS
    if not p.id.startswith("triton") or (p.id == "triton:sequence" and c == LAYER_COMBOS[-1])
]


@pytest.mark.parametrize("variant,combo", GRADCHECK)
def test_gradcheck_layer(variant, combo):
    """float64 gradcheck of functional.lstm_layer with resets (peepholes too)."""
    backend, override = _switches(variant)
    args = _layer_args(*combo)
    resets = _resets(4, 3, seed=5, p=0.5)
    names = [k for k, v in args.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    if backend == "triton":
        names = ["x", "h0", "w_hh"]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return functional.lstm_layer(**kw, resets=resets, backend=backend)

    with override:
        assert torch.autograd.gradcheck(
            fn, [args[n] for n in names], eps=1e-6, atol=1e-7, fast_mode=backend == "triton"
        )


@pytest.mark.parametrize("variant", BACKENDS)
def test_layer_matches_reference(variant):
    """The layer operators (forward, backward) against reference.lstm_layer with resets, with
    peepholes, lengths (a zero length among them) and both directions: what the module
    tests (nn.LSTM has no peepholes) leave out."""
    backend, override = _switches(variant)
    args = _layer_args(2, False, True, [5, 0, 3], seed=4, T=5)
    resets = _resets(5, 3, seed=9, p=0.5)
    leaves = [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    want = reference.lstm_layer(**args, resets=resets)
    with override:
        got = functional.lstm_layer(**args, resets=resets, backend=backend)
        got_grads = _grads(got, leaves)
    want_grads = _grads(want, leaves)
    t = tol("lstm", f64)
    for a, e in zip(list(got) + list(got_grads), list(want) + list(want_grads)):
        torch.testing.assert_close(a, e, **t)


@pytest.mark.parametrize("variant", BACKENDS)
def test_all_false_resets_equal_no_resets(variant):
    """resets that are never set change nothing, bit for bit, forward and backward."""
    backend, override = _switches(variant)
    m = _module(2, True, 0)
    m.backend = backend
    x, h0, c0 = _inputs(m, T, B)
    leaves = [x.requires_grad_(), *m.parameters()]
    # cpu_threads="all": both calls at torch's thread count whatever the machine's load (a
    # busy machine runs a call on one thread, which may round differently).
    with override, switches.override(cpu_threads="all"):
        plain = m(x, (h0, c0))
        plain = (plain[0], *plain[1])
        plain_grads = _grads(plain, leaves)
        never = m(x, (h0, c0), resets=torch.zeros(T, B, dtype=torch.bool))
        never = (never[0], *never[1])
        never_grads = _grads(never, leaves)
    for a, e in zip(list(never) + list(never_grads), list(plain) + list(plain_grads)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_forward_ad_through_the_reference():
    """Forward-mode AD (and torch.func) take the reference math, resets included: gradcheck's
    forward-AD check on the module's path, whatever the backend, and torch.func.jvp against a
    central difference."""
    args = _layer_args(2, True, True, [3, 4, 2])
    resets = _resets(4, 3, seed=5, p=0.5)
    names = [k for k, v in args.items() if isinstance(v, torch.Tensor) and v.requires_grad]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return functional.lstm_layer(**kw, resets=resets, backend="cpu")

    inputs = [args[n].detach().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(
        fn,
        inputs,
        eps=1e-6,
        atol=1e-7,
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
        check_batched_grad=False,
    )
    m = _module(1, True, 0)
    x, h0, c0 = _inputs(m, T, B)
    resets_m = _resets(T, B, seed=2)
    v = torch.randn_like(x)

    def f(x_):
        return m(x_, (h0, c0), resets=resets_m)[0]

    _, tangent = torch.func.jvp(f, (x,), (v,))
    eps = 1e-6
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    torch.testing.assert_close(tangent, fd, atol=1e-7, rtol=1e-6)


def test_double_backward_with_resets():
    """create_graph=True: the backward is recomputed through the reference math, resets
    included (gradgradcheck on the CPU backend's operator)."""
    args = _layer_args(2, False, False, [4, 2, 3])
    resets = _resets(4, 3, seed=6, p=0.5)
    names = ["x", "h0", "w_hh"]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return functional.lstm_layer(**kw, resets=resets, backend="cpu")

    inputs = [args[n].detach().requires_grad_() for n in names]
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_opcheck_with_resets():
    """Schema, fake kernels and autograd registration of the layer operators with resets."""
    args = _layer_args(2, True, True, [4, 1, 3])
    ordered = tuple(
        args[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep", "lengths")
    ) + (_resets(4, 3, seed=8, p=0.5),)
    ops = torch.ops.lstm_fused
    torch.library.opcheck(ops.lstm_layer_forward.default, ordered)
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in ordered)
    torch.library.opcheck(ops.lstm_layer_inference.default, plain)
    y, h_n, c_n, gates, cells = ops.lstm_layer_forward(*plain)
    grads = [torch.randn_like(t) for t in (y, h_n, c_n)]
    x, h0, c0, w_ih, w_hh, _bias, w_hr, w_peep, lengths, resets = plain
    torch.library.opcheck(
        ops.lstm_layer_backward.default,
        (*grads, x, h0, c0, w_ih, w_hh, w_hr, w_peep, lengths, resets, y, gates, cells),
    )


def test_unbatched_input_takes_resets_of_shape_t():
    m = _module(1, True, 0)
    x, h0, c0 = _inputs(m, T, 1)
    resets = _resets(T, 1, seed=3)
    y, (h_n, c_n) = m(x[:, 0], (h0[:, 0], c0[:, 0]), resets=resets[:, 0])
    want = nn_step_loop(m, x, h0, c0, resets)
    t = tol("lstm", f64)
    torch.testing.assert_close(y, want[0][:, 0], **t)
    torch.testing.assert_close(h_n, want[1][:, 0], **t)
    torch.testing.assert_close(c_n, want[2][:, 0], **t)


def test_resets_without_hx_restart_from_zeros():
    """hx None: a reset restarts the row from zeros, i.e. from where the call started."""
    m = _module(1, False, 0)
    x, _, _ = _inputs(m, T, B)
    resets = _resets(T, B, seed=4)
    y, (h_n, c_n) = m(x, resets=resets.float())  # 0/1 floats
    zeros = torch.zeros(1, B, 4, dtype=f64)
    want = nn_step_loop(m, x, zeros, zeros, resets)
    for a, e in zip((y, h_n, c_n), want):
        torch.testing.assert_close(a, e, **tol("lstm", f64))


# ------------------------------------------------------------------------ bad arguments


def test_bad_resets_raise_nn_style_errors_naming_resets():
    m = _module(1, False, 0)
    x, h0, c0 = _inputs(m, T, B)
    good = torch.zeros(T, B, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"resets has shape \(3, 6\), expected \(T, B\)"):
        m(x, resets=good.t())
    with pytest.raises(ValueError, match="resets has shape"):
        m(x, resets=good[:, :, None])
    with pytest.raises(TypeError, match="resets must be bool or hold 0/1 numbers"):
        m(x, resets=good.to(torch.complex64))
    with pytest.raises(TypeError, match="resets must be a torch.Tensor"):
        m(x, resets=[[0] * B] * T)
    with pytest.raises(RuntimeError, match="resets is on meta"):
        m(x, resets=torch.zeros(T, B, dtype=torch.bool, device="meta"))
    bf = _module(1, False, 0, batch_first=True)
    with pytest.raises(ValueError, match=r"resets has shape \(6, 3\), expected \(B, T\)"):
        bf(x.transpose(0, 1), resets=good)
    with pytest.raises(ValueError, match=r"resets has shape \(6, 3\), expected \(T,\)"):
        m(x[:, 0], resets=good)
    packed = pack_padded_sequence(x, torch.tensor([6, 4, 2]))
    with pytest.raises(ValueError, match="resets has shape .*T the longest length"):
        m(packed, resets=good[:5])
    with pytest.raises(ValueError, match="resets has shape"):
        functional.lstm(x, h0, c0, [m.layer_weights(0)], resets=good[:-1])


def test_layer_operators_check_resets():
    """At the operator level resets is (T, B) bool, contiguous, on x's device; the Triton
    twins run the same C++ checks."""
    args = _layer_args(1, False, False, None)
    ordered = [
        args[k].detach() if isinstance(args[k], torch.Tensor) else args[k]
        for k in ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr", "w_peep", "lengths")
    ]
    for op in (
        torch.ops.lstm_fused.lstm_layer_forward,
        torch.ops.lstm_fused.lstm_layer_inference_check,
    ):
        with pytest.raises(TypeError, match="resets must be bool"):
            op(*ordered, torch.zeros(4, 3, dtype=torch.uint8))
        with pytest.raises(ValueError, match=r"resets must have shape \(T, B\) = \(4, 3\)"):
            op(*ordered, torch.zeros(3, 4, dtype=torch.bool))
        with pytest.raises(ValueError, match="resets must be contiguous"):
            op(*ordered, torch.zeros(3, 4, dtype=torch.bool).t())


def test_attentive_lstm_and_onnx_refuse_resets():
    """The attentive LSTM takes no resets (its fused kernel has none); ONNX's LSTM operator
    cannot express them, so the export refuses them."""
    att = lstm_fused.AttentiveLSTM(3, 4, attention_size=5, dtype=f64)
    x = torch.randn(T, B, 3, dtype=f64)
    with pytest.raises(TypeError, match="resets"):
        att(x, resets=torch.zeros(T, B, dtype=torch.bool))
    functional_lstm = importlib.import_module("lstm_fused.functional.lstm")
    m = _module(1, False, 0)
    h0 = torch.zeros(1, B, 4, dtype=f64)
    with pytest.raises(RuntimeError, match="resets cannot be exported to ONNX"):
        functional_lstm._export_layer(
            x, h0, h0, *m.layer_weights(0), None, torch.zeros(T, B, dtype=torch.bool)
        )


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("variant", BACKENDS)
def test_streaming_in_chunks_equals_one_call(variant):
    """A long sequence fed in chunks, (h, c) carried from each call to the next, gives one
    call's outputs and final state. Lengths per chunk: a row of length l has
    clamp(l - start, 0, chunk) valid steps in the chunk starting at `start`; a row that has
    ended keeps its state through the later chunks (padded steps carry it), so its h_n is
    that of its last valid step, as in one call. (Unidirectional: the reverse direction of a
    chunk would need the steps after it.)"""
    backend, override = _switches(variant)
    m = _module(2, False, 2)
    m.backend = backend
    Tl, chunk = 11, 4
    x, h0, c0 = _inputs(m, Tl, B, seed=6)
    lengths = torch.tensor([11, 5, 2])  # ends inside the second and the first chunk
    with override, torch.no_grad():
        weights = [m.layer_weights(k) for k in range(2)]
        y_all, h_all, c_all = functional.lstm(x, h0, c0, weights, lengths, backend=backend)
        hx, ys = (h0, c0), []
        for start in range(0, Tl, chunk):
            xs = x[start : start + chunk]
            part = (lengths - start).clamp(0, xs.shape[0])
            y, *hx = functional.lstm(xs, *hx, weights, part, backend=backend)
            ys.append(y)
    t = tol("lstm", f64)
    torch.testing.assert_close(torch.cat(ys), y_all, **t)
    torch.testing.assert_close(hx[0], h_all, **t)
    torch.testing.assert_close(hx[1], c_all, **t)


@pytest.mark.parametrize("variant", BACKENDS)
def test_streaming_with_resets(variant):
    """Streaming with resets through the module: a reset restores the state the call started
    from (its hx), so a reset at a chunk's first step is the caller's to apply to the carried
    state (hx = where(reset, h0, carried): the flag itself changes nothing there), and resets
    inside a chunk restore that chunk's hx. With chunks that start where the resets are, the
    chunked run equals one call from h0, resets and all."""
    backend, override = _switches(variant)
    m = _module(1, False, 0)
    m.backend = backend
    Tl = 9
    x, h0, c0 = _inputs(m, Tl, B, seed=7)
    resets = torch.zeros(Tl, B, dtype=torch.bool)
    resets[3, 0] = resets[3, 2] = resets[7, 1] = True  # chunks [0, 3), [3, 7), [7, 9)
    with override, torch.no_grad():
        y_all, (h_all, c_all) = m(x, (h0, c0), resets=resets)
        hx, ys = (h0, c0), []
        for start, stop in ((0, 3), (3, 7), (7, 9)):
            r = resets[start:stop]
            first = r[0].view(1, B, 1)
            hx = (torch.where(first, h0, hx[0]), torch.where(first, c0, hx[1]))
            y, hx = m(x[start:stop], hx, resets=r)
            ys.append(y)
    t = tol("lstm", f64)
    torch.testing.assert_close(torch.cat(ys), y_all, **t)
    torch.testing.assert_close(hx[0], h_all, **t)
    torch.testing.assert_close(hx[1], c_all, **t)


def test_carried_state_is_not_copied(monkeypatch):
    """h_n, c_n of one call go into the next as they are: the module makes no copy of hx (its
    kernels read it in place; nn.LSTM's CPU path does not copy it either), and a one-layer
    call returns the kernel's outputs themselves (no clone)."""
    m = _module(1, False, 0)
    m.backend = "cpu"
    x, h0, c0 = _inputs(m, T, B)
    seen = []
    real = torch.Tensor.contiguous

    def spy(t, *a, **k):
        out = real(t, *a, **k)
        if out.data_ptr() != t.data_ptr():
            seen.append(tuple(t.shape))
        return out

    with torch.no_grad():
        _, hx = m(x, (h0, c0))
        monkeypatch.setattr(torch.Tensor, "contiguous", spy)
        _, hx2 = m(x, hx)
        monkeypatch.undo()
    assert seen == [], f"copies made by .contiguous(): {seen}"
    assert hx2[0].is_contiguous() and hx2[1].is_contiguous()


def test_triton_on_a_gpu_takes_the_step_path_with_resets():
    """On sm_80 / sm_90 the sequence kernel's resets variant spills registers at the edge of
    its size rule (and float64 does not compile): calls with resets take the step path there;
    under the interpreter (target None) the sequence kernel runs them (the tests above)."""
    pytest.importorskip("triton")
    from lstm_fused.triton_kernels import lstm_layer as ll

    for target in (80, 90):
        assert ll.choose_layer_path(8, 32, 32, False, torch.float32, target, False) == "sequence"
        assert ll.choose_layer_path(8, 32, 32, False, torch.float32, target, True) == "step"
    assert ll.choose_layer_path(8, 32, 32, False, torch.float32, None, True) == "sequence"
