"""lstm_fused.AttentiveLSTM (docs/contract.md, section 2): an LSTM whose last layer is pooled by
additive attention while it runs (in inference one fused operator with an online softmax,
tests/test_attentive_lstm_op.py; in training the layer, then the pooling). Checked against the
float64 reference (reference.lstm_layer per layer, then reference.attention_pooling) with
lengths 0, 1, T and random ones, padded input poisoned with NaN / inf; gradcheck in float64."""

import contextlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_fused
from lstm_fused import reference
from backends import GPU, cases, device_of
from helpers import lengths_with_edges, nan_filled_empty, poison_padding
from tolerances import tol

NATIVE = ["cpu", "cuda"]
# The tests of the backward run on CPU tensors: Triton there under its interpreter.
ON_CPU = cases("attentive_lstm", NATIVE + ["triton"], cpu_tensors=True)


def _truth(model, x, lengths, query=None):
    """float64 ground truth; x (T, B, I) time-major, padding already clean."""
    lstm, pool = model.lstm, model.attention
    D, L = lstm.num_directions, lstm.num_layers
    B = x.shape[1]
    R = lstm.proj_size or lstm.hidden_size
    h0 = torch.zeros(D * L, B, R, dtype=torch.float64)
    c0 = torch.zeros(D * L, B, lstm.hidden_size, dtype=torch.float64)
    layer_input = x.double()
    h_n, c_n = [], []
    for layer in range(L):
        ws = [None if w is None else w.double() for w in lstm.layer_weights(layer)]
        layer_input, h, c = reference.lstm_layer(
            layer_input,
            h0[layer * D : (layer + 1) * D],
            c0[layer * D : (layer + 1) * D],
            *ws,
            lengths,
        )
        h_n.append(h)
        c_n.append(c)
    y = layer_input.transpose(0, 1)  # (B, T, D * R)
    proj = y @ pool.proj.weight.double().t() + pool.proj.bias.double()
    qproj = None if query is None else query.double() @ pool.query_proj.weight.double().t()
    context, alpha, _ = reference.attention_pooling(
        y, proj, pool.score.weight.double().view(-1), qproj, lengths
    )
    return context, alpha, torch.cat(h_n), torch.cat(c_n)


CONFIGS = [
    # (num_layers, bidirectional, proj_size, query_size, chunk_size)
    (1, False, 0, 0, 4),  # inference: T = 11 > chunk 4, uneven last chunk
    (2, False, 3, 2, 5),  # two layers, projection, query
    (2, True, 0, 0, 4),  # bidirectional: whole last layer, then pooled
    (1, False, 0, 0, 64),  # inference: one chunk
]


@pytest.mark.parametrize("backend", cases("attentive_lstm", NATIVE + ["reference"]))
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inference", [False, True], ids=["grad", "no_grad"])
def test_attentive_lstm_matches_reference(backend, config, dtype, inference):
    L, bidirectional, P, Q, chunk = config
    torch.manual_seed(11)
    T, B, I, H, A = 11, 6, 5, 6, 4
    device = device_of(backend)
    model = lstm_fused.AttentiveLSTM(
        I,
        H,
        A,
        num_layers=L,
        bidirectional=bidirectional,
        proj_size=P,
        query_size=Q,
        chunk_size=chunk,
        backend=backend,
    ).to(device, dtype)
    lengths = lengths_with_edges(B, T)
    x_clean = torch.randn(T, B, I, dtype=dtype)
    x = poison_padding(x_clean.transpose(0, 1), lengths).transpose(0, 1)
    query = torch.randn(B, Q, dtype=dtype) if Q else None
    with nan_filled_empty(), torch.no_grad() if inference else contextlib.nullcontext():
        context, alpha, (h_n, c_n) = model(
            x.to(device), lengths.to(device), query=None if query is None else query.to(device)
        )
    truth = _truth(model.cpu(), x_clean, lengths, query)
    t = tol("attention_online", dtype)
    for got, want in zip((context, alpha, h_n, c_n), truth):
        assert got.dtype == dtype and not got.isnan().any()
        torch.testing.assert_close(got.cpu().double(), want, **t)
    assert (alpha.cpu()[0] == 0).all() and (context.cpu()[0] == 0).all()


@pytest.mark.parametrize("backend", ON_CPU)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_attentive_lstm_backward_matches_reference(backend, bidirectional):
    torch.manual_seed(12)
    T, B, I, H, A = 9, 5, 3, 4, 3
    model = lstm_fused.AttentiveLSTM(
        I, H, A, bidirectional=bidirectional, chunk_size=4, backend=backend
    ).double()
    lengths = lengths_with_edges(B, T)
    x_clean = torch.randn(T, B, I, dtype=torch.float64)
    # NaN / inf padding: neither the layer's backward (grad_w_ih = sum_t dz_t^T x_t) nor the
    # pooling's may let it through (0 * NaN = NaN).
    x = poison_padding(x_clean.transpose(0, 1), lengths)
    x = x.transpose(0, 1).requires_grad_()
    context, alpha, _ = model(x, lengths)
    gc, ga = torch.randn_like(context), torch.randn_like(alpha)
    params = list(model.parameters())
    grads = torch.autograd.grad((context, alpha), [x] + params, (gc, ga))
    x2 = x_clean.clone().requires_grad_()
    c2, a2, _, _ = _truth(model, x2, lengths)
    truth = torch.autograd.grad((c2, a2), [x2] + params, (gc, ga))
    for g, t in zip(grads, truth):
        assert not g.isnan().any()
        torch.testing.assert_close(g, t, **tol("attention", torch.float64))


@pytest.mark.parametrize("backend", ON_CPU)
def test_attentive_lstm_gradcheck(backend):
    torch.manual_seed(13)
    T, B, I, H, A = 5, 3, 2, 3, 2
    model = lstm_fused.AttentiveLSTM(I, H, A, query_size=2, chunk_size=2, backend=backend).double()
    lengths = torch.tensor([0, 1, 5])
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    q = torch.randn(B, 2, dtype=torch.float64, requires_grad=True)

    def fn(x, q):
        context, alpha, (h_n, c_n) = model(x, lengths, query=q)
        return context, alpha, h_n, c_n

    # fast mode (a random projection of the Jacobian) under Triton's slow interpreter
    assert torch.autograd.gradcheck(fn, (x, q), fast_mode=backend == "triton")


def test_attentive_lstm_packed_and_batch_first_agree():
    torch.manual_seed(14)
    T, B, I, H, A = 7, 4, 3, 5, 4
    lengths = torch.tensor([7, 2, 5, 1])
    x = torch.randn(B, T, I)
    model = lstm_fused.AttentiveLSTM(I, H, A, batch_first=True, chunk_size=3)
    c1, a1, (h1, _) = model(x, lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    c2, a2, (h2, _) = model(packed)
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(h1, h2)


def test_attentive_lstm_loads_nn_lstm_weights():
    torch.manual_seed(15)
    ref = torch.nn.LSTM(3, 4, num_layers=2)
    model = lstm_fused.AttentiveLSTM(3, 4, 2, num_layers=2)
    model.lstm.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 3)
    _, _, (h_n, c_n) = model(x)
    _, (h_ref, c_ref) = ref(x)
    torch.testing.assert_close(h_n, h_ref)
    torch.testing.assert_close(c_n, c_ref)


def _model(**kw):
    return lstm_fused.AttentiveLSTM(3, 4, 2, **kw)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: _model()(torch.randn(5, 3)), ValueError, "input"),
        (lambda: _model()(torch.randn(5, 2, 4)), ValueError, "input_size"),
        (lambda: _model()(torch.randn(5, 2, 3), torch.tensor([6, 1])), ValueError, "lengths"),
        (lambda: _model()(torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, "dtype"),
        (
            lambda: _model()(torch.randn(5, 2, 3), hx=(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
            ValueError,
            "h_0",
        ),
        (lambda: _model()(torch.randn(5, 2, 3), query=torch.randn(2, 2)), ValueError, "query"),
        (lambda: _model(chunk_size=0), ValueError, "chunk_size"),
        pytest.param(
            lambda: _model(backend="cuda")(torch.randn(5, 2, 3)),
            RuntimeError,
            "cuda",
            marks=pytest.mark.skipif(GPU, reason="checks the error without a GPU"),
            id="cuda-without-gpu",
        ),
    ],
)
def test_attentive_lstm_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call()
