"""torch.jit.trace of LSTM / LSTMCell (the trace replays eager on new shapes, forward and
backward) and torch.onnx.export with both exporters (ONNX's LSTM operator, run in onnxruntime
against eager)."""

import warnings

import pytest
import torch

import lstm_fused

I, H = 3, 4


def _model(seed=0, peephole=False, **kwargs):
    torch.manual_seed(seed)
    m = lstm_fused.LSTM(I, H, peephole=peephole, **kwargs)
    if peephole:  # they start at zero, which would hide them
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.startswith("weight_c"):
                    p.uniform_(-0.5, 0.5)
    return m


def _inputs(m, T, B, seed, hx):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=g) if m.batch_first else torch.randn(T, B, I, generator=g)
    if not hx:
        return (x,)
    D, R = 2 if m.bidirectional else 1, m.proj_size or H
    return x, (
        torch.randn(m.num_layers * D, B, R, generator=g),
        torch.randn(m.num_layers * D, B, H, generator=g),
    )


def _flat(out):
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in _flat(o)]


# ------------------------------------------------------------------------------ jit.trace

TRACE_CONFIGS = [
    ("layers2", dict(num_layers=2), False),
    ("bidir-proj-batch_first", dict(bidirectional=True, proj_size=2, batch_first=True), True),
    ("peephole-nobias", dict(peephole=True, bias=False), True),
]


def _trace(m, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks are constants
        return torch.jit.trace(m, args)


@pytest.mark.parametrize("name,kwargs,hx", TRACE_CONFIGS, ids=[c[0] for c in TRACE_CONFIGS])
def test_jit_trace_matches_eager_on_new_shapes(name, kwargs, hx):
    m = _model(**kwargs)
    traced = _trace(m, _inputs(m, T=5, B=2, seed=1, hx=hx))
    for T, B in ((5, 2), (7, 3), (2, 1)):
        args = _inputs(m, T=T, B=B, seed=T + B, hx=hx)
        want = _flat(m(*args))
        got = _flat(traced(*args))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        # the traced graph is differentiable like the module
        grads = []
        for f in (traced, m):
            m.zero_grad()
            sum(
                (o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum()
                for o in _flat(f(*args))
            ).backward()
            grads.append([p.grad.clone() for p in m.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_jit_trace_cell():
    torch.manual_seed(0)
    cell = lstm_fused.LSTMCell(I, H)
    traced = _trace(cell, (torch.randn(2, I), (torch.randn(2, H), torch.randn(2, H))))
    for B in (2, 5):
        args = (torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H)))
        for a, b in zip(traced(*args), cell(*args)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------- ONNX export

try:
    import onnx
    import onnxruntime as ort
except ImportError:  # the ONNX tests below skip, saying so
    onnx = ort = None
needs_onnx = pytest.mark.skipif(
    ort is None or onnx is None, reason="onnx and onnxruntime are not installed"
)

ONNX_CONFIGS = [
    ("plain", dict(), False),
    ("layers2-bidir", dict(num_layers=2, bidirectional=True), False),
    ("batch_first-hx", dict(batch_first=True), True),
    ("bidir-hx-nobias", dict(bidirectional=True, bias=False), True),
    ("peephole-layers2-bidir-hx", dict(peephole=True, num_layers=2, bidirectional=True), True),
]
EXPORTERS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")]


class _Flat(torch.nn.Module):
    """The LSTM with flat tensor inputs and outputs, as an ONNX graph has them."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x, h0=None, c0=None):
        y, (h, c) = self.lstm(x, None if h0 is None else (h0, c0))
        return y, h, c


def _export(model, args, dynamo, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=dynamo, verbose=False)
    return onnx.load(str(path))


def _run_onnx(path, args):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


@needs_onnx
@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name,kwargs,hx", ONNX_CONFIGS, ids=[c[0] for c in ONNX_CONFIGS])
def test_onnx_export_is_onnx_lstm_and_matches_eager(tmp_path, dynamo, name, kwargs, hx):
    m = _model(**kwargs).eval()
    x, *state = _inputs(m, T=6, B=3, seed=2, hx=hx)
    args = (x, *state[0]) if hx else (x,)
    model = _Flat(m)
    proto = _export(model, args, dynamo, tmp_path / "m.onnx")
    lstms = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == m.num_layers
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)  # standard operators only
    for n in lstms:
        inputs = list(n.input) + [""] * (8 - len(n.input))
        assert bool(inputs[7]) == m.peephole  # P: the peephole weights
        direction = [a.s for a in n.attribute if a.name == "direction"]
        assert direction == [b"bidirectional" if m.bidirectional else b"forward"]
    with torch.no_grad():
        want = model(*args)
    got = _run_onnx(tmp_path / "m.onnx", args)
    assert len(got) == 3
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_onnx
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_onnx_export_of_projection_raises(tmp_path, dynamo):
    m = _Flat(_model(proj_size=2).eval())
    with pytest.raises(Exception, match="proj_size"):
        _export(m, (torch.randn(4, 2, I),), dynamo, tmp_path / "m.onnx")


def test_onnx_gate_and_peephole_order():
    """ONNX's LSTM gate blocks are i, o, f, c and its peepholes i, o, f (the ONNX operator
    spec); ours are PyTorch's i, f, g, o and (w_ci, w_cf, w_co)."""
    from lstm_fused import onnx_export

    H = 2
    blocks = onnx_export.onnx_gate_order(H).reshape(4, H)[:, 0] // H
    assert blocks.tolist() == [0, 3, 1, 2]
    assert onnx_export.PEEPHOLE_ORDER == [0, 2, 1]


class _LayerWithLengths(torch.nn.Module):
    """One bidirectional peephole layer called with lengths, as LSTM calls it for a
    PackedSequence: the lengths become ONNX's sequence_lens."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        D, G = 2, 4 * H
        self.w_ih = torch.nn.Parameter(torch.randn(D, G, I, generator=g) * 0.5)
        self.w_hh = torch.nn.Parameter(torch.randn(D, G, H, generator=g) * 0.5)
        self.bias = torch.nn.Parameter(torch.randn(D, G, generator=g) * 0.5)
        self.w_peep = torch.nn.Parameter(torch.randn(D, 3, H, generator=g) * 0.5)

    def forward(self, x, h0, c0, lengths):
        return lstm_fused.functional.lstm_layer(
            x, h0, c0, self.w_ih, self.w_hh, self.bias, None, self.w_peep, lengths
        )


@needs_onnx
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_onnx_export_lengths_are_sequence_lens(tmp_path, dynamo):
    model = _LayerWithLengths().eval()
    g = torch.Generator().manual_seed(4)
    T, B = 6, 3
    args = (
        torch.randn(T, B, I, generator=g),
        torch.randn(2, B, H, generator=g),
        torch.randn(2, B, H, generator=g),
        torch.tensor([6, 2, 4]),
    )
    proto = _export(model, args, dynamo, tmp_path / "m.onnx")
    (lstm,) = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert lstm.input[4]  # sequence_lens
    with torch.no_grad():
        want = model(*args)
    got = _run_onnx(tmp_path / "m.onnx", args)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class _Cell(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.cell = lstm_fused.LSTMCell(I, H, peephole=True)
        with torch.no_grad():
            for p in (self.cell.weight_ci, self.cell.weight_cf, self.cell.weight_co):
                p.uniform_(-0.5, 0.5)

    def forward(self, x, h, c):
        return self.cell(x, (h, c))


@needs_onnx
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_onnx_export_cell(tmp_path, dynamo):
    model = _Cell().eval()
    g = torch.Generator().manual_seed(6)
    args = (
        torch.randn(3, I, generator=g),
        torch.randn(3, H, generator=g),
        torch.randn(3, H, generator=g),
    )
    proto = _export(model, args, dynamo, tmp_path / "m.onnx")
    assert [n.op_type for n in proto.graph.node].count("LSTM") == 1
    with torch.no_grad():
        want = model(*args)
    for a, b in zip(_run_onnx(tmp_path / "m.onnx", args), want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
