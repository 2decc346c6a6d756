"""The attentive LSTM's fused inference operator (attentive_lstm_inference: the last layer with its
outputs pooled in the same pass, docs/contract.md section 2) on the CPU kernel and the Triton
kernel, against the float64 reference (reference.lstm_layer, then reference.attention_pooling).
Lengths 0, 1, T and random ones, padded input poisoned with NaN / inf, every fresh allocation
NaN-filled, chunk sizes that split T unevenly, each CPU time loop; opcheck; the module takes
this path in inference and gives the numbers of its training path."""

import pytest
import torch

import lstm_fused
from lstm_fused import reference, switches
from backends import implementation, triton_device, triton_op
from helpers import lengths_with_edges, nan_filled_empty, poison_padding, spy_calls
from tolerances import tol


def _op_args(T, B, I, H, P, A, peephole, query, dtype, seed):
    """Arguments of attentive_lstm_inference (without chunk_size), x poisoned on padding, and
    the same x with clean padding."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    R = P or H
    lengths = lengths_with_edges(B, T, generator=g)
    x_clean = rnd(T, B, I)
    x = poison_padding(x_clean.transpose(0, 1), lengths).transpose(0, 1).contiguous()
    args = dict(
        x=x,
        h0=rnd(1, B, R),
        c0=rnd(1, B, H),
        w_ih=rnd(1, 4 * H, I, scale=0.4),
        w_hh=rnd(1, 4 * H, R, scale=0.4),
        bias=rnd(1, 4 * H, scale=0.2),
        w_hr=rnd(1, P, H, scale=0.5) if P else None,
        w_peep=rnd(1, 3, H, scale=0.5) if peephole else None,
        lengths=lengths,
        proj_weight=rnd(A, R),
        proj_bias=rnd(A),
        v=rnd(A),
        qproj=rnd(B, A) if query else None,
    )
    return args, x_clean


def _truth(args, x_clean):
    a = {
        k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        for k, v in args.items()
    }
    y, h_n, c_n = reference.lstm_layer(
        x_clean.double(),
        a["h0"],
        a["c0"],
        a["w_ih"],
        a["w_hh"],
        a["bias"],
        a["w_hr"],
        a["w_peep"],
        a["lengths"],
    )
    yb = y.transpose(0, 1)
    proj = yb @ a["proj_weight"].t()
    if a["proj_bias"] is not None:
        proj = proj + a["proj_bias"]
    context, alpha, lse = reference.attention_pooling(yb, proj, a["v"], a["qproj"], a["lengths"])
    return context, alpha, lse, h_n, c_n


def _check(out, truth, dtype):
    t = tol("attention_online", dtype)
    for name, got, want in zip(("context", "alpha", "lse", "h_n", "c_n"), out, truth):
        assert got.dtype == dtype, name
        assert got.shape == want.shape, name
        finite = torch.isfinite(want)
        # lse is -inf exactly on the rows without a valid step; nothing else is not finite.
        assert torch.equal(torch.isfinite(got.cpu()), finite), name
        torch.testing.assert_close(got.cpu().double()[finite], want[finite], **t, msg=name)


CASES = [
    # (T, B, I, H, P, A, chunk_size, peephole, query)
    (11, 6, 5, 6, 0, 4, 4, False, True),  # chunks of 4: the last one partial
    (11, 6, 5, 6, 0, 4, 1, True, False),  # a pooling update after every step, peepholes
    (11, 6, 5, 6, 0, 4, 64, False, False),  # one chunk longer than the sequence
    (9, 5, 3, 6, 3, 4, 2, False, True),  # projection (the row loop)
    (7, 40, 24, 48, 0, 8, 3, False, True),  # enough work for the threads' shared time loop
]
LOOPS = ["", "rows", "fused_gemm", "fused_input"]  # "": the automatic choice


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_op_matches_reference(loop, case, dtype):
    T, B, I, H, P, A, chunk, peephole, query = case
    args, x_clean = _op_args(T, B, I, H, P, A, peephole, query, dtype, seed=T * B + chunk)
    with switches.override(cpu_loop=loop), nan_filled_empty():
        out = torch.ops.lstm_fused.attentive_lstm_inference(*args.values(), chunk)
    _check(out, _truth(args, x_clean), dtype)
    assert (out[1][0] == 0).all() and (out[0][0] == 0).all()  # lengths[0] = 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_op_without_bias_or_lengths(dtype):
    """proj_bias None (the product without bias) and lengths None (every step valid)."""
    args, x_clean = _op_args(11, 6, 5, 6, 0, 4, False, True, dtype, seed=9)
    args.update(proj_bias=None, lengths=None, x=x_clean)
    with nan_filled_empty():
        out = torch.ops.lstm_fused.attentive_lstm_inference(*args.values(), 4)
    _check(out, _truth(args, x_clean), dtype)


def test_cpu_op_refuses_autograd():
    args, _ = _op_args(5, 3, 2, 4, 0, 2, False, True, torch.float64, seed=10)
    args["proj_weight"].requires_grad_()
    context = torch.ops.lstm_fused.attentive_lstm_inference(*args.values(), 4)[0]
    with pytest.raises(RuntimeError, match="inference only"):
        context.sum().backward()


@pytest.mark.parametrize("T,B", [(0, 3), (5, 0)])
def test_cpu_op_empty(T, B):
    args, _ = _op_args(T, B, 3, 4, 0, 2, False, True, torch.float32, seed=1)
    args["lengths"] = torch.zeros(B, dtype=torch.int64)
    context, alpha, lse, h_n, c_n = torch.ops.lstm_fused.attentive_lstm_inference(*args.values(), 4)
    assert context.shape == (B, 4) and (context == 0).all()
    assert alpha.shape == (B, T) and lse.shape == (B,) and (lse == float("-inf")).all()
    torch.testing.assert_close(h_n, args["h0"])
    torch.testing.assert_close(c_n, args["c0"])


def test_cpu_op_bad_arguments():
    args, _ = _op_args(5, 3, 2, 4, 0, 2, False, True, torch.float32, seed=2)
    op = torch.ops.lstm_fused.attentive_lstm_inference
    with pytest.raises(ValueError, match="chunk_size"):
        op(*args.values(), 0)
    with pytest.raises(ValueError, match="proj_weight"):
        op(*{**args, "proj_weight": torch.randn(2, 5)}.values(), 4)
    with pytest.raises(ValueError, match="qproj"):
        op(*{**args, "qproj": torch.randn(2, 2)}.values(), 4)
    with pytest.raises(TypeError, match="dtype"):
        op(*{**args, "v": torch.randn(2, dtype=torch.float64)}.values(), 4)
    two = {
        **args,
        "h0": torch.randn(2, 3, 4),
        "c0": torch.randn(2, 3, 4),
        "w_ih": torch.randn(2, 16, 2),
        "w_hh": torch.randn(2, 16, 4),
        "bias": torch.randn(2, 16),
    }
    with pytest.raises(ValueError, match="one direction"):
        op(*two.values(), 4)


def test_cpu_opcheck():
    args, _ = _op_args(6, 4, 3, 5, 0, 3, True, True, torch.float64, seed=3)
    torch.library.opcheck(
        torch.ops.lstm_fused.attentive_lstm_inference.default, (*args.values(), 4)
    )


@pytest.mark.parametrize("query", [False, True])
def test_module_inference_takes_the_fused_op(monkeypatch, query):
    """In no_grad the module calls the CPU backend's fused op (and never writes the last
    layer's output); its results equal the training path's (layer, then pooling)."""
    calls = spy_calls(
        monkeypatch, implementation("lstm_layer", "cpu").kernels, "attentive_inference"
    )
    torch.manual_seed(4)
    T, B, I, H, A, Q = 13, 5, 4, 8, 6, 3
    model = lstm_fused.AttentiveLSTM(
        I, H, A, num_layers=2, query_size=Q if query else 0, chunk_size=5, backend="cpu"
    ).double()
    lengths = lengths_with_edges(B, T)
    x = torch.randn(T, B, I, dtype=torch.float64)
    q = torch.randn(B, Q, dtype=torch.float64) if query else None
    trained = model(x, lengths, query=q)
    assert calls == []
    with torch.no_grad():
        inferred = model(x, lengths, query=q)
    assert calls == [True]
    for got, want in zip(
        (inferred[0], inferred[1], *inferred[2]), (trained[0], trained[1], *trained[2])
    ):
        torch.testing.assert_close(got, want.detach(), **tol("attention", torch.float64))


# ------------------------------------------------------------------------------------ Triton

TRITON_CASES = [
    # (T, B, I, H, P, A, peephole, query)
    (7, 5, 3, 6, 0, 4, False, True),
    (6, 18, 4, 5, 3, 20, True, False),  # two batch blocks, projection, A over one dot block
]


@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_triton_op_matches_reference(case, dtype):
    device = triton_device("lstm_layer")
    T, B, I, H, P, A, peephole, query = case
    args, x_clean = _op_args(T, B, I, H, P, A, peephole, query, dtype, seed=T + B)
    on_device = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    with switches.override(poison="1"):
        out = triton_op("attentive_lstm_inference")(*on_device.values(), 4)
    _check(out, _truth(args, x_clean), dtype)


def test_triton_op_without_bias_or_lengths_and_empty():
    device = triton_device("lstm_layer")
    op = triton_op("attentive_lstm_inference")
    args, x_clean = _op_args(7, 5, 3, 6, 0, 4, False, True, torch.float32, seed=12)
    args.update(proj_bias=None, lengths=None, x=x_clean)
    out = op(*(v.to(device) if isinstance(v, torch.Tensor) else v for v in args.values()), 4)
    _check(out, _truth(args, x_clean), torch.float32)
    for T, B in ((0, 3), (5, 0)):
        args, _ = _op_args(T, B, 3, 4, 0, 2, False, True, torch.float32, seed=13)
        args["lengths"] = torch.zeros(B, dtype=torch.int64)
        context, alpha, lse, h_n, c_n = op(
            *(v.to(device) if isinstance(v, torch.Tensor) else v for v in args.values()), 4
        )
        assert context.shape == (B, 4) and (context == 0).all() and alpha.shape == (B, T)
        assert (lse == float("-inf")).all()
        torch.testing.assert_close(h_n.cpu(), args["h0"])
    with pytest.raises(ValueError, match="qproj"):
        op(*({**args, "qproj": torch.randn(B + 1, 2)}.values()), 4)


def test_triton_module_inference_matches_training_path(monkeypatch):
    device = triton_device("lstm_layer")
    calls = spy_calls(
        monkeypatch, implementation("lstm_layer", "triton").kernels, "attentive_inference"
    )
    torch.manual_seed(6)
    T, B, I, H, A = 6, 4, 3, 5, 4
    model = lstm_fused.AttentiveLSTM(I, H, A, num_layers=2, backend="triton").to(device)
    lengths = lengths_with_edges(B, T).to(device)
    x = torch.randn(T, B, I, device=device)
    trained = model(x, lengths)
    with torch.no_grad():
        inferred = model(x, lengths)
    assert calls == [True]
    for got, want in zip(
        (inferred[0], inferred[1], *inferred[2]), (trained[0], trained[1], *trained[2])
    ):
        torch.testing.assert_close(got, want.detach(), **tol("attention_online", torch.float32))
