"""float64 gradcheck of every autograd path of the layer op, and torch.library.opcheck of the
registered operators."""

import itertools

import pytest
import torch

import lstm_fused
from lstm_fused import functional, switches
from backends import cases

# The CPU backend three times: its row loops and its fused loops, with the input projection by
# a GEMM or in the tiles (switch cpu_loop; by default these calls (T = 3) would take the row
# loops, csrc/cpu/lstm_layer_cpu.cpp choose_loop). With a projection all run the row loops.
BACKENDS = cases("lstm_layer", ["cpu:rows", "cpu:fused_gemm", "cpu:fused_input", "reference"])
T, B, I, H, P = 3, 2, 3, 4, 2


def _layer_args(D, proj, peephole, bias, lengths, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)

    R = P if proj else H
    args = dict(
        x=r(T, B, I),
        h0=r(D, B, R),
        c0=r(D, B, H),
        w_ih=r(D, 4 * H, I),
        w_hh=r(D, 4 * H, R),
        bias=r(D, 4 * H) if bias else None,
        w_hr=r(D, P, H) if proj else None,
        w_peep=r(D, 3, H) if peephole else None,
        lengths=torch.tensor([3, 1]) if lengths else None,
    )
    return args


COMBOS = list(itertools.product([1, 2], [False, True], [False, True], [False, True], [False, True]))


def _id(c):
    return "D{}-proj{}-peep{}-bias{}-len{}".format(*[int(v) for v in c])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("combo", COMBOS, ids=_id)
def test_gradcheck_layer(backend, combo):
    D, proj, peephole, bias, lengths = combo
    backend, _, loop = backend.partition(":")
    args = _layer_args(D, proj, peephole, bias, lengths)
    names = [k for k, v in args.items() if isinstance(v, torch.Tensor) and v.requires_grad]

    def fn(*tensors):
        kw = dict(args)
        kw.update(zip(names, tensors))
        return functional.lstm_layer(**kw, backend=backend)

    with switches.override(cpu_loop=loop):
        assert torch.autograd.gradcheck(fn, [args[n] for n in names], eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("combo", COMBOS[::3] + [COMBOS[-1]], ids=_id)
def test_opcheck_forward(combo):
    args = _layer_args(*combo)
    torch.library.opcheck(torch.ops.lstm_fused.lstm_layer_forward.default, tuple(args.values()))


@pytest.mark.parametrize("combo", [COMBOS[0], COMBOS[-1]], ids=_id)
def test_opcheck_inference(combo):
    args = _layer_args(*combo, requires_grad=False)
    torch.library.opcheck(torch.ops.lstm_fused.lstm_layer_inference.default, tuple(args.values()))


@pytest.mark.parametrize("combo", [COMBOS[0], COMBOS[-1], (2, True, False, True, True)], ids=_id)
def test_opcheck_backward(combo):
    D, proj, peephole, bias, lengths = combo
    args = _layer_args(*combo, requires_grad=False)
    y, h_n, c_n, gates, cells = torch.ops.lstm_fused.lstm_layer_forward(*args.values())
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n)]
    bargs = (
        *grads,
        args["x"],
        args["h0"],
        args["c0"],
        args["w_ih"],
        args["w_hh"],
        args["w_hr"],
        args["w_peep"],
        args["lengths"],
        None,
        y,
        gates,
        cells,
    )
    torch.library.opcheck(torch.ops.lstm_fused.lstm_layer_backward.default, bargs)


def test_gradcheck_module_end_to_end():
    torch.manual_seed(0)
    m = lstm_fused.LSTM(
        3,
        4,
        num_layers=2,
        bidirectional=True,
        proj_size=2,
        peephole=True,
        dtype=torch.float64,
        backend="cpu",
    )
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("weight_c"):
                p.uniform_(-1, 1)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, h0, c0):
        y, (h, c) = m(x, (h0, c0))
        return y, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0), eps=1e-6, atol=1e-7)
