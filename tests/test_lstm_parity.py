"""lstm_fused.LSTM against nn.LSTM: outputs, states and every gradient, many configurations."""

import pytest
import torch
from torch import nn

import lstm_fused
from lstm_fused import _C
from lstm_fused import switches

from backends import cases
from helpers import assert_close, grads_of

BACKENDS = cases("lstm_layer", ["cpu", "reference"])
DTYPES = [torch.float32, torch.float64]

# (input_size, hidden_size, num_layers, bidirectional, proj_size, bias, batch_first, T, B)
CONFIGS = [
    (13, 37, 1, False, 0, True, False, 5, 3),
    (13, 37, 2, True, 0, True, False, 4, 2),
    (13, 37, 1, True, 11, True, True, 3, 4),
    (8, 16, 3, False, 5, False, False, 3, 2),
    (1, 1, 1, False, 0, True, False, 1, 1),
    (7, 9, 2, True, 3, False, True, 6, 1),
    (5, 33, 1, False, 0, True, False, 1, 5),
]


def _pair(cfg, dtype, backend, seed=0):
    I, H, L, bi, P, bias, bf, T, B = cfg
    torch.manual_seed(seed)
    ref = nn.LSTM(I, H, L, bias=bias, batch_first=bf, bidirectional=bi, proj_size=P, dtype=dtype)
    ours = lstm_fused.LSTM(
        I,
        H,
        L,
        bias=bias,
        batch_first=bf,
        bidirectional=bi,
        proj_size=P,
        dtype=dtype,
        backend=backend,
    )
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "I{}H{}L{}bi{}P{}b{}bf{}T{}B{}".format(*c))
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_nn_lstm(cfg, dtype, backend, with_state):
    I, H, L, bi, P, bias, bf, T, B = cfg
    ref, ours = _pair(cfg, dtype, backend)
    D, R = (2 if bi else 1), (P or H)
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=dtype, requires_grad=True)
    inputs = {"x": x}
    hx = None
    if with_state:
        h0 = torch.randn(L * D, B, R, dtype=dtype, requires_grad=True)
        c0 = torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)
        inputs.update(h0=h0, c0=c0)
        hx = (h0, c0)

    def run(m):
        y, (h, c) = m(x, hx)
        return y, h, c

    out_ref, out_ours = run(ref), run(ours)
    for name, a, e in zip(("output", "h_n", "c_n"), out_ours, out_ref):
        assert a.shape == e.shape, name
        assert_close(a, e, msg=name)
    g_ref = grads_of(ref, inputs, lambda: run(ref))
    g_ours = grads_of(ours, inputs, lambda: run(ours))
    assert g_ref.keys() == g_ours.keys()
    for name in g_ref:
        assert_close(g_ours[name], g_ref[name], msg=f"grad of {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input(backend):
    ref, ours = _pair((6, 10, 2, True, 4, True, False, 0, 0), torch.float64, backend)
    x = torch.randn(5, 6, dtype=torch.float64)
    h0 = torch.randn(4, 4, dtype=torch.float64)
    c0 = torch.randn(4, 10, dtype=torch.float64)
    for hx in (None, (h0, c0)):
        y_r, (h_r, c_r) = ref(x, hx)
        y_o, (h_o, c_o) = ours(x, hx)
        assert y_o.shape == (5, 8) and h_o.shape == (4, 4) and c_o.shape == (4, 10)
        for a, e in ((y_o, y_r), (h_o, h_r), (c_o, c_r)):
            assert_close(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input_and_state(backend):
    ref, ours = _pair((6, 10, 1, True, 0, True, False, 0, 0), torch.float64, backend)
    x = torch.randn(3, 7, 6, dtype=torch.float64).transpose(0, 1)  # (7, 3, 6) non-contiguous
    h0 = torch.randn(3, 2, 10, dtype=torch.float64).transpose(0, 1)
    c0 = torch.randn(3, 2, 10, dtype=torch.float64).transpose(0, 1)
    assert not x.is_contiguous() and not h0.is_contiguous()
    for a, e in zip(
        ours(x, (h0, c0))[0:1] + ours(x, (h0, c0))[1], ref(x, (h0, c0))[0:1] + ref(x, (h0, c0))[1]
    ):
        assert_close(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    ref, ours = _pair((6, 10, 2, True, 0, True, False, 0, 0), torch.float32, backend)
    x = torch.randn(4, 0, 6, requires_grad=True)
    y, (h, c) = ours(x)
    y_r, (h_r, c_r) = ref(x)
    assert y.shape == y_r.shape == (4, 0, 20)
    assert h.shape == h_r.shape == (4, 0, 10) and c.shape == (4, 0, 10)
    (y.sum() + h.sum() + c.sum()).backward()
    assert x.grad.shape == x.shape
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in ours.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_forward_matches_grad_forward(backend):
    """backend='cpu' takes a lighter kernel (lstm_layer_inference) under no_grad."""
    _, ours = _pair((6, 10, 2, True, 3, True, False, 0, 0), torch.float32, backend)
    x = torch.randn(5, 3, 6)
    with torch.no_grad():
        y0, (h0, c0) = ours(x)
    y1, (h1, c1) = ours(x)
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    torch.testing.assert_close(h0, h1, rtol=0, atol=0)
    torch.testing.assert_close(c0, c1, rtol=0, atol=0)


def test_same_init_as_nn_lstm_for_the_same_seed():
    for kw in (dict(num_layers=2, bidirectional=True, proj_size=3), dict(bias=False)):
        torch.manual_seed(3)
        ref = nn.LSTM(5, 8, **kw)
        torch.manual_seed(3)
        ours = lstm_fused.LSTM(5, 8, **kw)
        assert list(ref.state_dict()) == list(ours.state_dict())
        for k, v in ref.state_dict().items():
            assert torch.equal(v, ours.state_dict()[k]), k


def test_state_dict_loads_both_ways():
    ref = nn.LSTM(5, 8, 2, bidirectional=True, proj_size=3)
    ours = lstm_fused.LSTM(5, 8, 2, bidirectional=True, proj_size=3)
    ours.load_state_dict(ref.state_dict())
    ref2 = nn.LSTM(5, 8, 2, bidirectional=True, proj_size=3)
    ref2.load_state_dict(ours.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ref2.state_dict()[k])


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    ours = lstm_fused.LSTM(4, 16, num_layers=2, dropout=0.5, backend="cpu")
    ref = lstm_fused.LSTM(4, 16, num_layers=2, dropout=0.0, backend="cpu")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(6, 8, 4)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0])  # eval: dropout off
    ours.train()
    y_a, y_b = ours(x)[0], ours(x)[0]
    assert not torch.allclose(y_a, y_b)  # training: a fresh mask each call
    assert not torch.allclose(y_a, ref(x)[0])
    # dropout after the last layer never happens: a one-layer LSTM ignores it like nn.LSTM
    with pytest.warns(UserWarning):
        nn.LSTM(4, 16, num_layers=1, dropout=0.5)
    one = lstm_fused.LSTM(4, 16, num_layers=1, dropout=0.5).train()
    torch.testing.assert_close(one(x)[0], one(x)[0])


def test_peephole_parameters():
    m = lstm_fused.LSTM(5, 8, 2, bidirectional=True, peephole=True)
    names = [n for n, _ in m.named_parameters() if n.startswith("weight_c")]
    expected = [
        f"weight_{g}_l{l}{s}"
        for l in range(2)
        for s in ("", "_reverse")
        for g in ("ci", "cf", "co")
    ]
    assert sorted(names) == sorted(expected)
    for n in names:
        p = getattr(m, n)
        assert p.shape == (8,) and torch.equal(p, torch.zeros(8))
    # with zero peepholes it is exactly an LSTM
    plain = lstm_fused.LSTM(5, 8, 2, bidirectional=True)
    plain.load_state_dict(m.state_dict(), strict=False)
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(m(x)[0], plain(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("proj", [0, 3])
def test_peephole_matches_reference(backend, proj):
    torch.manual_seed(0)
    m = lstm_fused.LSTM(
        5,
        8,
        2,
        bidirectional=True,
        peephole=True,
        proj_size=proj,
        dtype=torch.float64,
        backend=backend,
    )
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("weight_c"):
                p.uniform_(-1, 1)
    x = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)
    y, (h, c) = m(x)
    # the float64 reference, layer by layer
    inp = x
    hs, cs = [], []
    for layer in range(2):
        w_ih, w_hh, bias, w_hr, w_peep = m.layer_weights(layer)
        R = proj or 8
        out = lstm_fused.reference.lstm_layer(
            inp,
            torch.zeros(2, 3, R, dtype=torch.float64),
            torch.zeros(2, 3, 8, dtype=torch.float64),
            w_ih,
            w_hh,
            bias,
            w_hr,
            w_peep,
        )
        inp = out[0]
        hs.append(out[1])
        cs.append(out[2])
    assert_close(y, inp)
    assert_close(h, torch.cat(hs))
    assert_close(c, torch.cat(cs))
    params = [x] + list(m.parameters())
    g1 = torch.autograd.grad((y * y).sum() + h.sum() + (c * 2).sum(), params)
    g2 = torch.autograd.grad(
        (inp * inp).sum() + torch.cat(hs).sum() + (torch.cat(cs) * 2).sum(), params
    )
    for a, e in zip(g1, g2):
        assert_close(a, e)


@pytest.mark.parametrize("cpu_loop", ["rows", "fused_gemm", "fused_input"], indirect=True)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_cpu_time_loop_matches_nn_lstm(cpu_loop, dtype):
    """The CPU forward has two time loops (csrc/cpu/lstm_layer_cpu.cpp): parallel over batch
    rows, or fused (lstm_recurrent_tile.h: H = 130 is 8 full panels and one of 2 units; B = 18
    is four tiles of 4 rows and one of 2; more than 2^18 multiply-adds a step takes its
    parallel path), with the input projection by one GEMM before the loop or in the tiles
    (x_t, I = 7, then h_{t-1}). The backward follows: fused after either fused forward
    (lstm_recurrent_tile_backward.h: H = 130 is column panels of 64, 64 and 2 float units),
    the per-step GEMM loop otherwise."""
    torch.manual_seed(0)
    ref = nn.LSTM(7, 130, 2, bidirectional=True, dtype=dtype)
    ours = lstm_fused.LSTM(7, 130, 2, bidirectional=True, dtype=dtype, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 18, 7, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([5, 2, 4, 1, 5, 3] * 3)

    def inputs(packed):
        return nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x

    for packed in (False, True):
        (y_r, (h_r, c_r)), (y_o, (h_o, c_o)) = ref(inputs(packed)), ours(inputs(packed))
        if packed:
            y_r, y_o = y_r.data, y_o.data
        for a, e in ((y_o, y_r), (h_o, h_r), (c_o, c_r)):
            assert_close(a, e)
        # Random output gradients for y, h_n and c_n: the backward's loops carry the gradient
        # of h_n and c_n through the padded steps.
        gy, gh, gc = torch.randn_like(y_r), torch.randn_like(h_r), torch.randn_like(c_r)
        g_r = torch.autograd.grad(
            (y_r * gy).sum() + (h_r * gh).sum() + (c_r * gc).sum(), [x, *ref.parameters()]
        )
        g_o = torch.autograd.grad(
            (y_o * gy).sum() + (h_o * gh).sum() + (c_o * gc).sum(), [x, *ours.parameters()]
        )
        for a, e in zip(g_o, g_r):
            assert_close(a, e)
        with torch.no_grad():
            y_i = ours(inputs(packed))[0]
        assert_close(y_i.data if packed else y_i, y_o.detach())


def test_unknown_cpu_time_loop_is_an_error():
    with pytest.raises(ValueError, match="LSTM_FUSED_CPU_LOOP=diagonal"):
        with switches.override(cpu_loop="diagonal"):
            lstm_fused.LSTM(3, 4, backend="cpu")(torch.randn(2, 1, 3))
    # The C++ library refuses it too (units: a loop that no longer exists).
    for value in ("diagonal", "units"):
        with pytest.raises(ValueError, match=f"'{value}' is not a value of the switch cpu_loop"):
            _C.set_switch("cpu_loop", value)
    with pytest.raises(ValueError, match="no C\\+\\+ switch named 'cpu_loops'"):
        _C.set_switch("cpu_loops", "rows")
    assert _C.get_switch("cpu_loop") == switches.get("cpu_loop")


@pytest.mark.parametrize("cpu_loop", ["rows", "fused_gemm", "fused_input"], indirect=True)
def test_cpu_time_loops_with_peephole_match_reference(cpu_loop):
    """Peephole weights (which nn.LSTM lacks) in both CPU loops, against the float64 reference:
    bidirectional, two layers, lengths, random output gradients."""
    torch.manual_seed(1)
    ours = lstm_fused.LSTM(6, 37, 2, bidirectional=True, peephole=True, backend="cpu")
    ref = lstm_fused.LSTM(
        6, 37, 2, bidirectional=True, peephole=True, backend="reference", dtype=torch.float64
    )
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(7, 9, 6)
    lengths = torch.tensor([7, 3, 5, 1, 7, 6, 2, 4, 7])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    y_o, (h_o, c_o) = ours(packed)
    y_r, (h_r, c_r) = ref(
        nn.utils.rnn.pack_padded_sequence(x.double(), lengths, enforce_sorted=False)
    )
    for a, e in ((y_o.data, y_r.data), (h_o, h_r), (c_o, c_r)):
        assert_close(a, e.float())
    gy, gh, gc = torch.randn_like(y_o.data), torch.randn_like(h_o), torch.randn_like(c_o)
    g_o = torch.autograd.grad(
        (y_o.data * gy).sum() + (h_o * gh).sum() + (c_o * gc).sum(), list(ours.parameters())
    )
    g_r = torch.autograd.grad(
        (y_r.data * gy.double()).sum() + (h_r * gh.double()).sum() + (c_r * gc.double()).sum(),
        list(ref.parameters()),
    )
    for a, e in zip(g_o, g_r):
        assert_close(a, e.float())


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_gradients_over_many_rows_match_nn_lstm(dtype):
    """The CPU backward's weight gradients (csrc/cpu/weight_grad_gemm.h) sum dZ^T x and
    dZ^T h_{t-1} over T*B = 629 rows: blocks of 512 rows and a partial one, I = 70 (a full tile
    of 64 columns and a partial one), H = 20 (a partial tile only); bidirectional, with lengths."""
    torch.manual_seed(2)
    ref = nn.LSTM(70, 20, bidirectional=True, dtype=dtype)
    ours = lstm_fused.LSTM(70, 20, bidirectional=True, dtype=dtype, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(37, 17, 70, dtype=dtype)
    lengths = torch.randint(1, 38, (17,))
    lengths[0] = 37
    outs = [
        m(nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)) for m in (ref, ours)
    ]
    gy = torch.randn_like(outs[0][0].data)
    grads = [
        torch.autograd.grad((y.data * gy).sum() + c.sum(), list(m.parameters()))
        for m, (y, (h, c)) in zip((ref, ours), outs)
    ]
    for a, e in zip(grads[1], grads[0]):
        assert_close(a, e)


@pytest.mark.parametrize("cpu_loop", ["fused_gemm", "rows"], indirect=True)
def test_onednn_products_match_nn_lstm(cpu_loop):
    """Products big enough for oneDNN's packed-weight path (csrc/cpu/reused_weight_gemm.h: a
    single product from 2^27 multiply-adds): T*B = 1280 rows times W_ih (512, 256) is the
    forward's input projection with fused_gemm and rows; the backward's grad_x over as many rows
    runs in register tiles (csrc/cpu/lstm_recurrent_tile_backward.h, input_grad)."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: the path does not exist")
    torch.manual_seed(3)
    ref = nn.LSTM(256, 128)
    ours = lstm_fused.LSTM(256, 128, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(40, 32, 256, requires_grad=True)
    with torch.profiler.profile() as prof:
        y_o, (h_o, c_o) = ours(x)
        gy = torch.randn_like(y_o)
        g_o = torch.autograd.grad((y_o * gy).sum() + c_o.sum(), [x, *ours.parameters()])
    calls = [e.key for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise"]
    assert calls, "oneDNN's packed-weight product did not run"
    y_r, (h_r, c_r) = ref(x)
    g_r = torch.autograd.grad((y_r * gy).sum() + c_r.sum(), [x, *ref.parameters()])
    for a, e in ((y_o, y_r), (h_o, h_r), (c_o, c_r), *zip(g_o, g_r)):
        assert_close(a, e)


def test_input_size_one_with_any_column_stride():
    """I = 1: a (T, B, 1) input counts as contiguous whatever its last stride, and the CPU
    backward's weight gradients (weight_grad_gemm.h) must read it by rows alone."""
    torch.manual_seed(4)
    ref = nn.LSTM(1, 4)
    ours = lstm_fused.LSTM(1, 4, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 6).t().reshape(3, 2, 1).requires_grad_(True)
    assert x.is_contiguous() and x.stride(2) != 1
    outs = [m(x)[0] for m in (ref, ours)]
    gy = torch.randn_like(outs[0])
    grads = [
        torch.autograd.grad((y * gy).sum(), [x, *m.parameters()]) for m, y in zip((ref, ours), outs)
    ]
    assert_close(outs[1], outs[0])
    for a, e in zip(grads[1], grads[0]):
        assert_close(a, e)


def test_weights_streamed_from_memory_match_the_float64_lstm_at_one_and_two_threads():
    """Packed weights above 8 MiB a direction (I=256, H=1024: 21 MiB) with B >= 32: the forward
    does the input projection in its tiles, and both fused loops share out the panels of every
    step, not the rows (csrc/cpu/lstm_layer_cpu.cpp, choose_loop); the reverse loop sums in
    blocks of panel rows. Float32 against nn.LSTM in float64, and the same bits at 1 and 2
    threads."""
    torch.manual_seed(5)
    ref = nn.LSTM(256, 1024, dtype=torch.float64)
    ours = lstm_fused.LSTM(256, 1024, backend="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 33, 256, dtype=torch.float64)  # T >= 4: the fused loops
    gy = torch.randn(5, 33, 1024, dtype=torch.float64)
    y_r, (h_r, c_r) = ref(x.requires_grad_())
    want = [
        y_r,
        h_r,
        c_r,
        *torch.autograd.grad((y_r * gy).sum() + c_r.sum(), [x, *ref.parameters()]),
    ]
    before = torch.get_num_threads()
    answers = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with switches.override(cpu_threads="all"):
                x32 = x.detach().float().requires_grad_()
                y, (h, c) = ours(x32)
                grads = torch.autograd.grad(
                    (y * gy.float()).sum() + c.sum(), [x32, *ours.parameters()]
                )
            answers.append([y, h, c, *grads])
    finally:
        torch.set_num_threads(before)
    for got, exp in zip(answers[0], want):
        assert_close(got.double(), exp.detach(), dtype=torch.float32)
    for one, two in zip(*answers):
        torch.testing.assert_close(two, one, rtol=0, atol=0)
