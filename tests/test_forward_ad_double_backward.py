"""Forward-mode AD, double backward and torch.func transforms through lstm_fused.LSTM and
LSTMCell, in float64, on every backend of the layer op that runs here.

gradcheck(check_forward_ad=True) compares forward-mode tangents with finite differences, and
gradgradcheck the second-order terms (create_graph=True), with respect to the input, the initial
state and every parameter. torch.func.grad / vmap / jacrev are compared with nn.LSTM.
"""

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstm_fused
from backends import case, cases
from tolerances import tol

T, B, I, H = 3, 2, 2, 3
F64 = tol("float64_same_math", torch.float64)

# (name, LSTM keyword arguments, packed): every option of the module at least once.
LSTM_CONFIGS = [
    ("plain", dict(), False),
    ("layers2", dict(num_layers=2), False),
    ("bidir-proj", dict(bidirectional=True, proj_size=2), False),
    ("peephole-batch_first", dict(peephole=True, batch_first=True), False),
    ("nobias-bidir", dict(bias=False, bidirectional=True), False),
    (
        "packed-all",
        dict(
            num_layers=2,
            bidirectional=True,
            proj_size=2,
            peephole=True,
            bias=False,
            batch_first=True,
        ),
        True,
    ),
]
BACKENDS = ["cpu", "reference", "triton"]
# Triton runs interpreted on the CPU here (slow): one module configuration, in fast mode.
LSTM_CASES = [
    case("lstm_layer", backend, *config, id=f"{config[0]}-{backend}", cpu_tensors=True)
    for backend in BACKENDS
    for config in LSTM_CONFIGS
    if backend != "triton" or config[0] == "plain"
]


def _randomize(m, seed=0):
    """Random parameters (peephole weights start at zero, which would hide their terms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 1.2 - 0.6)
    return m


def _pack(x, lengths, batch_first):
    """pack_padded_sequence(x, lengths, enforce_sorted=False) by a gather of x's rows, which
    forward-mode AD differentiates (pack_padded_sequence itself has no forward-AD formula)."""
    steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    where = torch.arange(steps * batch, dtype=torch.float64).reshape(steps, batch, 1)
    layout = pack_padded_sequence(where, lengths, enforce_sorted=False)
    index = layout.data.reshape(-1).long()  # flat (t, b) position of each packed row
    rows = (x.transpose(0, 1) if batch_first else x).reshape(steps * batch, -1)[index]
    return PackedSequence(rows, layout.batch_sizes, layout.sorted_indices, layout.unsorted_indices)


def _lstm_case(kwargs, packed, backend):
    """(fn, inputs): fn(x, h0, c0, *params) -> (output, h_n, c_n) of an lstm_fused.LSTM."""
    m = _randomize(lstm_fused.LSTM(I, H, dtype=torch.float64, backend=backend, **kwargs))
    names = [n for n, _ in m.named_parameters()]
    D = 2 if m.bidirectional else 1
    R = m.proj_size or H
    g = torch.Generator().manual_seed(1)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = r(B, T, I) if m.batch_first else r(T, B, I)
    h0, c0 = r(m.num_layers * D, B, R), r(m.num_layers * D, B, H)
    lengths = torch.tensor([2, 3])  # unsorted: the module sorts and restores the batch order

    def fn(x, h0, c0, *params):
        inp = _pack(x, lengths, m.batch_first) if packed else x
        out, (h, c) = torch.func.functional_call(m, dict(zip(names, params)), (inp, (h0, c0)))
        if packed:
            out = pad_packed_sequence(out, batch_first=m.batch_first)[0]
        return out, h, c

    inputs = [x, h0, c0] + [p.detach().clone() for p in m.parameters()]
    return fn, [t.requires_grad_() for t in inputs]


def _cell_case(backend, peephole=False, bias=True):
    m = _randomize(
        lstm_fused.LSTMCell(
            I,
            H,
            bias=bias,
            dtype=torch.float64,
            backend=backend,
            **(dict(peephole=True) if peephole else {}),
        )
    )
    names = [n for n, _ in m.named_parameters()]
    g = torch.Generator().manual_seed(2)
    x, h, c = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((B, I), (B, H), (B, H)))

    def fn(x, h, c, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x, (h, c)))

    inputs = [x, h, c] + [p.detach().clone() for p in m.parameters()]
    return fn, [t.requires_grad_() for t in inputs]


# Triton's cases take fast mode (one random direction).
def _fast(backend):
    return backend == "triton"


@pytest.mark.parametrize("backend,name,kwargs,packed", LSTM_CASES)
def test_lstm_forward_ad_gradcheck(backend, name, kwargs, packed):
    fn, inputs = _lstm_case(kwargs, packed, backend)
    assert torch.autograd.gradcheck(
        fn,
        inputs,
        eps=1e-6,
        atol=1e-7,
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
        check_batched_grad=False,
        fast_mode=_fast(backend) or name == "packed-all",
    )


@pytest.mark.parametrize("backend,name,kwargs,packed", LSTM_CASES)
def test_lstm_gradgradcheck(backend, name, kwargs, packed):
    fn, inputs = _lstm_case(kwargs, packed, backend)
    # Full second-order Jacobians once (bidir-proj on cpu); elsewhere fast mode, which still
    # compares with finite differences along a random direction (it caught the zero terms).
    full = backend == "cpu" and name == "bidir-proj"
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=not full)


@pytest.mark.parametrize("backend", cases("lstm_layer", BACKENDS, cpu_tensors=True))
@pytest.mark.parametrize("peephole,bias", [(False, True), (True, False)])
def test_cell_forward_ad_and_gradgradcheck(backend, peephole, bias):
    fn, inputs = _cell_case(backend, peephole, bias)
    assert torch.autograd.gradcheck(
        fn, inputs, eps=1e-6, atol=1e-7, check_forward_ad=True, fast_mode=_fast(backend)
    )
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=_fast(backend))


def test_forward_ad_dual_tangent_matches_nn_lstm():
    """forward_ad dual numbers, parameters not requiring grad (where tangents used to vanish)."""
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, num_layers=2, dtype=torch.float64).requires_grad_(False)
    m = lstm_fused.LSTM(I, H, num_layers=2, dtype=torch.float64, backend="cpu")
    m.load_state_dict(ref.state_dict())
    m.requires_grad_(False)
    x, t = torch.randn(T, B, I, dtype=torch.float64), torch.randn(T, B, I, dtype=torch.float64)
    tangents = []
    for module in (m, ref):
        with forward_ad.dual_level():
            y, (h, c) = module(forward_ad.make_dual(x, t))
            tangents.append([forward_ad.unpack_dual(o).tangent for o in (y, h, c)])
    for got, want in zip(*tangents):
        assert got is not None and want.abs().max() > 1e-3
        torch.testing.assert_close(got, want, **F64)


def _pair(cell=False, seed=0):
    torch.manual_seed(seed)
    if cell:
        ref = nn.LSTMCell(I, H, dtype=torch.float64)
        m = lstm_fused.LSTMCell(I, H, dtype=torch.float64, backend="cpu")
    else:
        ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
        m = lstm_fused.LSTM(
            I, H, num_layers=2, bidirectional=True, dtype=torch.float64, backend="cpu"
        )
    m.load_state_dict(ref.state_dict())
    return m, ref


@pytest.mark.parametrize("cell", [False, True], ids=["LSTM", "LSTMCell"])
def test_torch_func_grad_vmap_jacrev_match_nn(cell):
    m, ref = _pair(cell)
    shape = (B, I) if cell else (T, B, I)
    x = torch.randn(*shape, dtype=torch.float64)

    def out(module):  # LSTM: the output sequence; LSTMCell: h'
        return lambda x: module(x)[0]

    # grad of a scalar, with respect to the input and to the parameters
    def loss(module):
        return lambda x: out(module)(x).pow(2).sum()

    torch.testing.assert_close(torch.func.grad(loss(m))(x), torch.func.grad(loss(ref))(x), **F64)
    params = {n: p.detach() for n, p in m.named_parameters()}

    def loss_params(module):
        return lambda p: torch.func.functional_call(module, p, (x,))[0].pow(2).sum()

    got = torch.func.grad(loss_params(m))(params)
    want = torch.func.grad(loss_params(ref))(params)
    for n in params:
        torch.testing.assert_close(got[n], want[n], **F64, msg=n)
    # vmap over a batch of unbatched inputs ((I,) for the cell, (T, I) for the LSTM), jacrev, jvp
    xs = torch.randn(4, *((I,) if cell else (T, I)), dtype=torch.float64)
    # (nn.LSTM has no batching rule, aten::lstm: a loop over the samples is its vmap)
    torch.testing.assert_close(
        torch.func.vmap(out(m))(xs), torch.stack([out(ref)(xi) for xi in xs]), **F64
    )
    torch.testing.assert_close(torch.func.jacrev(out(m))(x), torch.func.jacrev(out(ref))(x), **F64)
    t = torch.randn_like(x)
    torch.testing.assert_close(
        torch.func.jvp(out(m), (x,), (t,))[1], torch.func.jvp(out(ref), (x,), (t,))[1], **F64
    )


# ------------------------------------------------------------------------------ attention ops
# masked_softmax, attention_pooling, channel attention and the self-attention core, with
# padding (lengths) and a length-0 row: forward-mode AD and double backward on "cpu" (the C++
# operators) and "reference".

LENGTHS = torch.tensor([3, 1, 0])
ATT_BACKENDS = ["cpu", "reference"]


def _r(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def _attention_case(op, backend):
    F = lstm_fused.functional
    if op == "masked_softmax":
        mask = torch.tensor([[True, False, True, True]]).expand(3, 4)

        def fn(s):
            return F.masked_softmax(s, LENGTHS, mask=mask, scale=0.7, backend=backend)

        return fn, [_r(3, 4, seed=0)]
    if op == "attention_pooling":

        def fn(x, w, b, v, q, wq):
            return F.attention_pooling(
                x, w, b, v, LENGTHS, query=q, query_weight=wq, backend=backend, return_lse=True
            )[:2]

        return fn, [
            _r(3, 3, 2, seed=1),
            _r(4, 2, seed=2),
            _r(4, seed=3),
            _r(4, seed=4),
            _r(3, 2, seed=5),
            _r(4, 2, seed=6),
        ]
    if op == "channel_attention":
        m = lstm_fused.ChannelAttention(
            4, mode="se", reduction=2, dtype=torch.float64, backend=backend
        )
        _randomize(m, seed=11)
        names = [n for n, _ in m.named_parameters()]

        def fn(x, *params):
            return torch.func.functional_call(m, dict(zip(names, params)), (x, LENGTHS))

        return fn, [_r(3, 3, 4, seed=7)] + [
            p.detach().clone().requires_grad_() for p in m.parameters()
        ]
    if op == "mhsa":
        from lstm_fused.mhsa import self_attention_core

        def fn(q, k, v):
            return self_attention_core(q, k, v, LENGTHS, 0.6, backend=backend)

        return fn, [_r(3, 1, 3, 2, seed=s) for s in (8, 9, 10)]
    raise ValueError(op)


ATT_OPS = ["masked_softmax", "attention_pooling", "channel_attention", "mhsa"]


# triton (interpreted here, slow): the masked softmax, whose Triton twins get the same
# register_autograd as the C++ operators (lstm_fused/ops/attention.py; its self-attention has
# no float64 kernel)
ATT_PAIRS = [(op, b) for op in ATT_OPS for b in ATT_BACKENDS] + [("masked_softmax", "triton")]
ATT_CASES = [case(op, b, op, id=f"{op}-{b}", cpu_tensors=True) for op, b in ATT_PAIRS]


@pytest.mark.parametrize("backend,op", ATT_CASES)
def test_attention_forward_ad_and_gradgradcheck(op, backend):
    fn, inputs = _attention_case(op, backend)
    full = op == "masked_softmax"  # full Jacobians for one op, fast mode for the others
    assert torch.autograd.gradcheck(
        fn,
        inputs,
        eps=1e-6,
        atol=1e-7,
        check_forward_ad=True,
        check_batched_grad=False,
        fast_mode=not full,
    )
    assert torch.autograd.gradgradcheck(
        fn, inputs, eps=1e-6, atol=1e-6, check_batched_grad=False, fast_mode=True
    )


@pytest.mark.parametrize("op", ATT_OPS)
def test_attention_torch_func_grad_matches_reference(op):
    fn_cpu, inputs = _attention_case(op, "cpu")
    fn_ref, _ = _attention_case(op, "reference")
    argnums = tuple(range(len(inputs)))

    def loss(fn):
        def f(*args):
            out = fn(*args)
            out = out if isinstance(out, tuple) else (out,)
            return sum(
                (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
                for o in out
            )

        return f

    detached = [t.detach() for t in inputs]
    got = torch.func.grad(loss(fn_cpu), argnums=argnums)(*detached)
    want = torch.func.grad(loss(fn_ref), argnums=argnums)(*detached)
    for a, b in zip(got, want):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, **F64)
