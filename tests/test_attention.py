"""Attention ops (docs/contract.md, section 2) on the C++ backends and the reference: masked
softmax, additive attention pooling, channel attention. Each is checked against the float64
reference on random inputs with lengths 0, 1, T and random ones, with padding poisoned by NaN /
inf and every fresh allocation NaN-filled; gradients by gradcheck in float64 and against the
reference; the operators by torch.library.opcheck; bad input by the error it raises."""

import math

import pytest
import torch
import torch.nn.functional as F

import lstm_fused
from lstm_fused import functional, reference, switches
from backends import cases, device_of, resolve
from helpers import lengths_with_edges, nan_filled_empty, poison_padding
from tolerances import tol

NATIVE = ["cpu", "cuda"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


# ------------------------------------------------------------------------------ masked softmax


def _softmax_truth(scores, lengths, mask, scale, dim):
    """float64 reference along `dim`, padding zeroed first."""
    s = scores.double().movedim(dim, -1)
    keep = torch.ones_like(s, dtype=torch.bool)
    if lengths is not None:
        keep = keep & (torch.arange(s.shape[-1]) < lengths.view(-1, *[1] * (s.dim() - 1)))
    if mask is not None:
        keep = keep & mask.expand(scores.shape).movedim(dim, -1)
    return reference.masked_softmax(s, keep, scale).movedim(-1, dim)


@pytest.mark.parametrize("backend", cases("masked_softmax", NATIVE + ["reference"]))
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax_lengths_match_reference(backend, dtype):
    torch.manual_seed(0)
    B, N, T = 6, 3, 37
    lengths = lengths_with_edges(B, T)
    scores = torch.randn(B, N, T, dtype=torch.float64) * 3
    poisoned = poison_padding(scores.transpose(1, 2), lengths).transpose(1, 2)
    poisoned = poisoned.to(dtype).to(device_of(backend))
    with nan_filled_empty():
        out = functional.masked_softmax(
            poisoned, lengths.to(poisoned.device), scale=0.7, backend=backend
        )
    truth = _softmax_truth(poisoned.cpu().nan_to_num(0, 0, 0), lengths, None, 0.7, -1)
    assert out.dtype == dtype and out.shape == scores.shape
    assert not out.isnan().any()
    torch.testing.assert_close(out.cpu().double(), truth, **tol("attention", dtype))
    assert (out.cpu()[0] == 0).all()  # length 0: a zero row
    pad = torch.arange(T) >= lengths.view(B, 1, 1)
    assert (out.cpu()[pad.expand(B, N, T)] == 0).all()  # padding: exactly 0


@pytest.mark.parametrize("backend", cases("masked_softmax", NATIVE + ["reference"]))
def test_masked_softmax_mask_and_other_dim(backend):
    torch.manual_seed(1)
    B, T, C = 4, 9, 5
    scores = torch.randn(B, T, C, device=device_of(backend))
    mask = torch.rand(B, T, 1, device=scores.device) > 0.4
    mask[0] = False  # an empty row
    lengths = torch.tensor([T, 3, 1, 0])
    scores = scores.masked_fill(~mask.expand(B, T, C), float("nan"))
    with nan_filled_empty():
        out = functional.masked_softmax(scores, lengths, mask=mask, dim=1, backend=backend)
    truth = _softmax_truth(scores.cpu().nan_to_num(0), lengths, mask.cpu(), 1.0, 1)
    torch.testing.assert_close(out.cpu().double(), truth, **tol("attention", torch.float32))
    assert not out.isnan().any()
    assert (out[0] == 0).all()


def test_masked_softmax_without_masking_is_softmax():
    x = torch.randn(3, 4, 11, dtype=torch.float64)
    torch.testing.assert_close(
        functional.masked_softmax(x, scale=2.0, backend="cpu"), torch.softmax(2.0 * x, -1)
    )


def test_masked_softmax_large_scores_stay_finite():
    x = torch.tensor([[1e4, -1e4, 1e4 - 1.0, 0.0]])
    out = functional.masked_softmax(x, torch.tensor([3]), backend="cpu")
    torch.testing.assert_close(
        out, torch.tensor([[1 / (1 + math.exp(-1)), 0.0, math.exp(-1) / (1 + math.exp(-1)), 0.0]])
    )


@pytest.mark.parametrize("backend", cases("masked_softmax", NATIVE))
def test_masked_softmax_backward_matches_reference(backend):
    torch.manual_seed(2)
    B, T = 5, 13
    lengths = lengths_with_edges(B, T)
    scores = poison_padding(torch.randn(B, T, dtype=torch.float64), lengths)
    grad = torch.randn(B, T, dtype=torch.float64)
    grad_poisoned = poison_padding(grad, lengths)  # the backward must not read padding either
    s1 = scores.clone().requires_grad_()
    out = functional.masked_softmax(s1, lengths, scale=1.3, backend=backend)
    with nan_filled_empty():
        (g_kernel,) = torch.autograd.grad(out, s1, grad_poisoned)
    s2 = scores.nan_to_num(0, 0, 0).requires_grad_()
    truth = _softmax_truth(s2, lengths, None, 1.3, -1)
    (g_truth,) = torch.autograd.grad(truth, s2, grad.nan_to_num(0, 0, 0))
    torch.testing.assert_close(g_kernel, g_truth, **tol("attention", torch.float64))
    assert (g_kernel[torch.arange(T) >= lengths.view(B, 1)] == 0).all()


@pytest.mark.parametrize("backend", cases("masked_softmax", NATIVE))
def test_masked_softmax_gradcheck(backend):
    torch.manual_seed(3)
    scores = torch.randn(4, 2, 6, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([0, 1, 6, 4])
    mask = torch.rand(4, 2, 6) > 0.3
    assert torch.autograd.gradcheck(
        lambda s: functional.masked_softmax(s, lengths, mask=mask, scale=0.5, backend=backend),
        (scores,),
    )


# --------------------------------------------------------------------------- attention pooling


def _pooling_truth(x, module, lengths, query=None):
    """float64 reference of AttentionPooling from its parameters; x (B, T, D)."""
    xd = x.double().nan_to_num(0, 0, 0)
    proj = xd @ module.proj.weight.double().t() + module.proj.bias.double()
    qproj = None if query is None else query.double() @ module.query_proj.weight.double().t()
    c, alpha, _ = reference.attention_pooling(
        xd, proj, module.score.weight.double().view(-1), qproj, lengths
    )
    return c, alpha


@pytest.mark.parametrize("backend", cases("attention_pooling", NATIVE + ["reference"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_query", [False, True])
@pytest.mark.parametrize("D, A", [(10, 7), (75, 37)])  # 75, 37: whole vector blocks and tails
def test_attention_pooling_matches_reference(backend, dtype, with_query, D, A):
    torch.manual_seed(4)
    check_pooling(backend, dtype, B=6, T=23, D=D, A=A, Q=5 if with_query else 0)


def check_pooling(backend, dtype, B, T, D, A, Q):
    """AttentionPooling(D, A, Q) on `backend` against the float64 reference, lengths 0, 1, T
    and random, padding poisoned, fresh allocations NaN-filled: a zero row for length 0."""
    device = device_of(backend)
    module = lstm_fused.AttentionPooling(D, A, Q, batch_first=True, backend=backend).to(
        device, dtype
    )
    lengths = lengths_with_edges(B, T)
    x = poison_padding(torch.randn(B, T, D), lengths).to(device, dtype)
    query = torch.randn(B, Q, device=device, dtype=dtype) if Q else None
    with nan_filled_empty():
        c, alpha = module(x, lengths.to(device), query)
    c_ref, alpha_ref = _pooling_truth(
        x.cpu(), module.cpu(), lengths, None if query is None else query.cpu()
    )
    assert c.dtype == dtype and c.shape == (B, D) and alpha.shape == (B, T)
    assert not c.isnan().any() and not alpha.isnan().any()
    t = tol("attention_online", dtype)
    torch.testing.assert_close(alpha.cpu().double(), alpha_ref, **t)
    torch.testing.assert_close(c.cpu().double(), c_ref, **t)
    assert (alpha.cpu()[0] == 0).all() and (c.cpu()[0] == 0).all()
    assert (alpha.cpu()[torch.arange(T) >= lengths.view(B, 1)] == 0).all()


@pytest.mark.parametrize("backend", cases("attention_pooling", NATIVE + ["reference"]))
def test_attention_pooling_time_major_view(backend):
    """batch_first=False: the (T, B, D) input is read through a transposed view."""
    torch.manual_seed(5)
    T, B, D, A = 8, 4, 6, 3
    module = lstm_fused.AttentionPooling(D, A, backend=backend).double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    lengths = torch.tensor([8, 0, 1, 5])
    c, alpha = module(x, lengths)
    c_ref, alpha_ref = _pooling_truth(x.transpose(0, 1), module, lengths)
    torch.testing.assert_close(c, c_ref, **tol("attention", torch.float64))
    torch.testing.assert_close(alpha, alpha_ref, **tol("attention", torch.float64))


@pytest.mark.parametrize("backend", cases("attention_pooling", NATIVE))
@pytest.mark.parametrize("with_query", [False, True])
@pytest.mark.parametrize("D, A", [(6, 4), (75, 37)])  # 75, 37: whole vector blocks and tails
def test_attention_pooling_backward_matches_reference(backend, with_query, D, A):
    torch.manual_seed(6)
    B, T, Q = 5, 11, 3
    module = lstm_fused.AttentionPooling(
        D, A, Q if with_query else 0, batch_first=True, backend=backend
    ).double()
    lengths = lengths_with_edges(B, T)
    x_clean = torch.randn(B, T, D, dtype=torch.float64)
    query = torch.randn(B, Q, dtype=torch.float64, requires_grad=True) if with_query else None
    gc, ga = torch.randn(B, D, dtype=torch.float64), torch.randn(B, T, dtype=torch.float64)
    params = list(module.parameters())

    x = poison_padding(x_clean, lengths).requires_grad_()
    c, alpha = module(x, lengths, query)
    inputs = [x] + params + ([query] if with_query else [])
    with nan_filled_empty():
        grads = torch.autograd.grad((c, alpha), inputs, (gc, poison_padding(ga, lengths)))
    x2 = x_clean.clone().requires_grad_()
    c2, alpha2 = _pooling_truth(x2, module, lengths, query)
    truth = torch.autograd.grad(
        (c2, alpha2), [x2] + params + ([query] if with_query else []), (gc, ga)
    )
    for g, t in zip(grads, truth):
        assert not g.isnan().any()
        torch.testing.assert_close(g, t, **tol("attention", torch.float64))
    assert (grads[0][torch.arange(T) >= lengths.view(B, 1)] == 0).all()


@pytest.mark.parametrize("backend", cases("attention_pooling", NATIVE))
def test_attention_pooling_gradcheck(backend):
    torch.manual_seed(7)
    B, T, D, A, Q = 4, 5, 3, 4, 2
    lengths = torch.tensor([0, 1, 5, 3])
    dd = dict(dtype=torch.float64)
    x = torch.randn(B, T, D, **dd, requires_grad=True)
    w = torch.randn(A, D, **dd, requires_grad=True)
    b = torch.randn(A, **dd, requires_grad=True)
    v = torch.randn(A, **dd, requires_grad=True)
    q = torch.randn(B, Q, **dd, requires_grad=True)
    wq = torch.randn(A, Q, **dd, requires_grad=True)

    def fn(x, w, b, v, q, wq):
        c, alpha, lse = functional.attention_pooling(
            x,
            w,
            b,
            v,
            lengths,
            query=q,
            query_weight=wq,
            batch_first=True,
            backend=backend,
            return_lse=True,
        )
        assert lse[0] == float("-inf")  # the empty row; finite differences cannot handle it
        return c, alpha, lse[1:]

    assert torch.autograd.gradcheck(fn, (x, w, b, v, q, wq))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cpu_gemm", ["", "aten"])
def test_attention_pooling_cpu_float32_backward(batch_first, cpu_gemm):
    """The CPU backend in float32, whose projection and its gradients run on oneDNN (or on
    ATen with cpu_gemm="aten"): every gradient against the float64 reference, time-major and
    batch-first, padding of x and of grad_alpha poisoned (the weight gradient reads x)."""
    torch.manual_seed(8)
    B, T, D, A, Q = 6, 13, 40, 24, 3
    module = lstm_fused.AttentionPooling(D, A, Q, batch_first=batch_first, backend="cpu")
    lengths = lengths_with_edges(B, T)
    x_clean = torch.randn(B, T, D)
    query = torch.randn(B, Q, requires_grad=True)
    gc, ga = torch.randn(B, D), torch.randn(B, T)
    x = poison_padding(x_clean, lengths)
    x = (x if batch_first else x.transpose(0, 1).contiguous()).requires_grad_()
    with switches.override(cpu_gemm=cpu_gemm), nan_filled_empty():
        c, alpha = module(x, lengths, query)
        grads = torch.autograd.grad(
            (c, alpha), [x, *module.parameters(), query], (gc, poison_padding(ga, lengths))
        )
    m64 = lstm_fused.AttentionPooling(D, A, Q, batch_first=True, backend="reference").double()
    m64.load_state_dict(module.state_dict())
    x64, q64 = x_clean.double().requires_grad_(), query.detach().double().requires_grad_()
    truth = torch.autograd.grad(
        _pooling_truth(x64, m64, lengths, q64),
        [x64, *m64.parameters(), q64],
        (gc.double(), ga.double()),
    )
    grad_x = grads[0] if batch_first else grads[0].transpose(0, 1)
    for g, t in zip([grad_x, *grads[1:]], truth):
        assert g.dtype == torch.float32 and not g.isnan().any()
        torch.testing.assert_close(g.double(), t, **tol("attention_online", torch.float32))
    assert (grad_x[torch.arange(T) >= lengths.view(B, 1)] == 0).all()


# --------------------------------------------------------------------------- channel attention


def _channel_truth(x, module, lengths):
    """float64 channel attention from the module's parameters; x (B, T, C)."""
    xd = x.double()
    B, T, C = xd.shape
    keep = (torch.arange(T) < lengths.view(B, 1)).unsqueeze(2)
    xd = torch.where(keep, xd, torch.zeros_like(xd))
    mean = xd.sum(1) / keep.sum(1).clamp(min=1).double()
    if module.mode == "eca":
        w = torch.sigmoid(
            F.conv1d(
                mean.unsqueeze(1), module.conv.weight.double(), padding=module.kernel_size // 2
            ).squeeze(1)
        )
    else:
        h = torch.relu(mean @ module.fc1.weight.double().t() + module.fc1.bias.double())
        w = torch.sigmoid(h @ module.fc2.weight.double().t() + module.fc2.bias.double())
    return xd * w.unsqueeze(1)


@pytest.mark.parametrize("backend", cases("channel_attention", NATIVE + ["reference"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["eca", "se"])
def test_channel_attention_matches_reference(backend, dtype, mode):
    torch.manual_seed(8)
    B, T, C = 5, 17, 32
    device = device_of(backend)
    module = lstm_fused.ChannelAttention(
        C, mode, reduction=4, batch_first=True, backend=backend
    ).to(device, dtype)
    lengths = lengths_with_edges(B, T)
    x = poison_padding(torch.randn(B, T, C), lengths).to(device, dtype)
    with nan_filled_empty():
        y = module(x, lengths.to(device))
    truth = _channel_truth(x.cpu().nan_to_num(0, 0, 0), module.cpu(), lengths)
    assert y.dtype == dtype and y.shape == x.shape and not y.isnan().any()
    torch.testing.assert_close(y.cpu().double(), truth, **tol("attention", dtype))


def check_channel_backward(module, x_clean, grad, lengths):
    """Gradients of a float64 time-major ChannelAttention at x_clean (T, B, C), its padding
    poisoned, for the output gradient `grad` (T, B, C) poisoned likewise, against the float64
    reference."""
    x = poison_padding(x_clean.transpose(0, 1), lengths).transpose(0, 1).requires_grad_()
    y = module(x, lengths)
    params = list(module.parameters())
    with nan_filled_empty():
        grads = torch.autograd.grad(
            y, [x] + params, poison_padding(grad.transpose(0, 1), lengths).transpose(0, 1)
        )
    x2 = x_clean.clone().requires_grad_()
    truth_y = _channel_truth(x2.transpose(0, 1), module, lengths).transpose(0, 1)
    truth = torch.autograd.grad(truth_y, [x2] + params, grad)
    for g, t in zip(grads, truth):
        torch.testing.assert_close(g, t, **tol("attention", torch.float64))


@pytest.mark.parametrize("backend", cases("channel_attention", NATIVE))
@pytest.mark.parametrize("mode", ["eca", "se"])
def test_channel_attention_backward_and_gradcheck(backend, mode):
    torch.manual_seed(9)
    T, B, C = 6, 4, 8
    module = lstm_fused.ChannelAttention(
        C, mode, kernel_size=3, reduction=2, backend=backend
    ).double()
    lengths = torch.tensor([0, 1, 6, 3])
    check_channel_backward(
        module,
        torch.randn(T, B, C, dtype=torch.float64),
        torch.randn(T, B, C, dtype=torch.float64),
        lengths,
    )
    xg = torch.randn(3, 3, C, dtype=torch.float64, requires_grad=True)
    small = torch.tensor([0, 1, 3])
    assert torch.autograd.gradcheck(lambda x: module(x, small), (xg,))


def test_eca_kernel_size_rule():
    assert [lstm_fused.attention.eca_kernel_size(c) for c in (1, 16, 64, 256, 512)] == [
        1,
        3,
        3,
        5,
        5,
    ]
    assert lstm_fused.ChannelAttention(256).conv.weight.shape == (1, 1, 5)


# ------------------------------------------------------------------------------------ opcheck


def op_inputs(seed, device="cpu"):
    """Float64 leaves (x, proj, v, q, w, scores) and lengths for the operators' opchecks:
    B, T, D, A = 3, 5, 4, 3; scores (4, 6)."""
    torch.manual_seed(seed)
    B, T, D, A = 3, 5, 4, 3
    dd = dict(dtype=torch.float64, device=device, requires_grad=True)
    leaves = dict(
        x=torch.randn(B, T, D, **dd),
        proj=torch.randn(B, T, A, **dd),
        v=torch.randn(A, **dd),
        q=torch.randn(B, A, **dd),
        w=torch.rand(B, D, **dd),
        scores=torch.randn(4, 6, **dd),
    )
    return leaves, torch.tensor([0, 2, 5], device=device)


def _op_samples():
    B, T, D = 3, 5, 4
    dd = dict(dtype=torch.float64)
    leaves, lengths = op_inputs(10)
    x, proj, v, q, w, scores = leaves.values()
    ops = torch.ops.lstm_fused
    return [
        (ops.masked_softmax_forward, (scores, torch.tensor([0, 1, 6, 3]), None, 0.5)),
        (ops.masked_softmax_forward, (scores, None, torch.rand(4, 6) > 0.5, 1.0)),
        (ops.masked_softmax_backward, (torch.randn(4, 6, **dd), torch.rand(4, 6, **dd), 2.0)),
        (ops.attention_pooling_forward, (x, proj, v, q, lengths)),
        (ops.attention_pooling_forward, (x, proj, v, None, None)),
        (
            ops.attention_pooling_backward,
            (
                torch.randn(B, D, **dd),
                torch.randn(B, T, **dd),
                torch.randn(B, **dd),
                x.detach(),
                proj.detach(),
                v.detach(),
                q.detach(),
                lengths,
                torch.rand(B, T, **dd),
                torch.randn(B, D, **dd),
            ),
        ),
        (ops.channel_masked_mean_forward, (x, lengths)),
        (ops.channel_masked_mean_backward, (torch.randn(B, D, **dd), x.detach(), lengths)),
        (ops.channel_rescale_forward, (x, w, lengths)),
        (
            ops.channel_rescale_backward,
            (torch.randn(B, T, D, **dd), x.detach(), w.detach(), lengths),
        ),
    ]


@pytest.mark.parametrize("index", range(10))
def test_opcheck(index):
    op, args = _op_samples()[index]
    torch.library.opcheck(op, args)


# ---------------------------------------------------------------------------------- bad input


def test_masked_softmax_bad_input():
    s = torch.randn(3, 4)
    with pytest.raises(ValueError, match="lengths"):
        functional.masked_softmax(s, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="lengths"):
        functional.masked_softmax(s, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="lengths"):
        functional.masked_softmax(s, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="mask"):
        functional.masked_softmax(s, mask=torch.ones(3, 4))
    with pytest.raises(ValueError, match="mask"):
        functional.masked_softmax(s, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dim"):
        functional.masked_softmax(s, torch.tensor([1, 2, 3]), dim=0)
    with pytest.raises(ValueError, match="dim"):
        functional.masked_softmax(s, dim=2)
    with pytest.raises(TypeError, match="scores"):
        functional.masked_softmax(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="lengths"):
        functional.masked_softmax(s, torch.tensor([1, 2, 3], device="meta"))
    with pytest.raises(ValueError, match="backend"):
        functional.masked_softmax(s, backend="fast")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_backend_unavailable_says_why():
    with pytest.raises(RuntimeError, match="cuda"):
        functional.masked_softmax(torch.randn(2, 3), backend="cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        lstm_fused.ChannelAttention(4, backend="cuda")(torch.randn(3, 2, 4))


def test_backend_switch_is_honoured():
    with switches.override(backend="reference"):
        impl = resolve("auto", "attention_pooling", "cpu", torch.float32)
    assert impl.name == "reference"
    if not torch.cuda.is_available():
        with switches.override(backend="cuda"), pytest.raises(RuntimeError, match="cuda"):
            functional.masked_softmax(torch.randn(2, 3))


def test_attention_pooling_bad_input():
    m = lstm_fused.AttentionPooling(4, 3)
    x = torch.randn(5, 2, 4)
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(5, 4))
    with pytest.raises(ValueError, match="weight"):
        m(torch.randn(5, 2, 6))
    with pytest.raises(ValueError, match="lengths"):
        m(x, torch.tensor([6, 1]))
    with pytest.raises(TypeError, match="dtype"):
        m(x.double())
    with pytest.raises(ValueError, match="query"):
        m(x, query=torch.randn(2, 3))
    mq = lstm_fused.AttentionPooling(4, 3, query_size=2)
    with pytest.raises(ValueError, match="query"):
        mq(x)
    with pytest.raises(ValueError, match="query"):
        mq(x, query=torch.randn(3, 2))
    with pytest.raises(ValueError, match="attention_size"):
        lstm_fused.AttentionPooling(4, 0)


def test_channel_attention_bad_input():
    with pytest.raises(ValueError, match="mode"):
        lstm_fused.ChannelAttention(8, mode="cbam")
    with pytest.raises(ValueError, match="kernel_size"):
        lstm_fused.ChannelAttention(8, kernel_size=4)
    m = lstm_fused.ChannelAttention(8)
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(3, 2, 7))
    with pytest.raises(ValueError, match="lengths"):
        m(torch.randn(3, 2, 8), torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(3, 8))


@pytest.mark.parametrize(
    "backend", cases("attention_pooling", NATIVE + ["reference"], cpu_tensors=True)
)
def test_empty_batch_and_empty_time(backend):
    m = lstm_fused.AttentionPooling(4, 3, batch_first=True, backend=backend)
    c, a = m(torch.randn(0, 5, 4), torch.zeros(0, dtype=torch.int64))
    assert c.shape == (0, 4) and a.shape == (0, 5)
    c, a = m(torch.randn(2, 0, 4))
    assert (c == 0).all() and a.shape == (2, 0)
    y = lstm_fused.ChannelAttention(4, backend=backend)(torch.randn(0, 3, 4))
    assert y.shape == (0, 3, 4)
    p = functional.masked_softmax(
        torch.randn(0, 3), torch.zeros(0, dtype=torch.int64), backend=backend
    )
    assert p.shape == (0, 3)


def test_modules_compile_with_fake_kernels():
    """torch.compile traces through the operators' fake kernels (aot_eager: no codegen)."""
    torch.manual_seed(16)
    pool = lstm_fused.AttentionPooling(4, 3, backend="cpu")
    chan = lstm_fused.ChannelAttention(4, backend="cpu")
    x = torch.randn(6, 2, 4, requires_grad=True)
    lengths = torch.tensor([6, 3])

    def run(x):
        c, alpha = pool(chan(x, lengths), lengths)
        return c, alpha, functional.masked_softmax(alpha, lengths, scale=2.0, backend="cpu")

    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(x), run(x)):
        torch.testing.assert_close(got, want)
    (g1,) = torch.autograd.grad(compiled(x)[0].sum(), x)
    (g2,) = torch.autograd.grad(run(x)[0].sum(), x)
    torch.testing.assert_close(g1, g2)


def test_operator_level_errors_name_the_argument():
    ops = torch.ops.lstm_fused
    x, proj, v = torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(5)
    with pytest.raises(ValueError, match="lengths"):
        ops.attention_pooling_forward(x, proj, v, None, torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="v has shape"):
        ops.attention_pooling_forward(x, proj, torch.randn(4), None, None)
    with pytest.raises(ValueError, match="qproj"):
        ops.attention_pooling_forward(x, proj, v, torch.randn(2, 4), None)
    with pytest.raises(TypeError, match="mask"):
        ops.masked_softmax_forward(torch.randn(2, 3), None, torch.ones(2, 3), 1.0)
    with pytest.raises(ValueError, match="w has shape"):
        ops.channel_rescale_forward(x, torch.randn(2, 5), None)
    with pytest.raises(TypeError, match="lengths"):
        ops.channel_masked_mean_forward(x, torch.tensor([1, 2], dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_softmax_cpu_vector_lanes(dtype):
    """The CPU kernel's vector path (attention_cpu.cpp masked_softmax_row_vec): rows of 70 (four
    full vectors of float, eight of double, and a tail), a random mask with NaN where it is
    False, lengths that end inside a vector, a row whose first vector is all masked."""
    torch.manual_seed(5)
    R, T = 5, 70
    scores = torch.randn(R, T, dtype=dtype) * 4
    mask = torch.rand(R, T) > 0.3
    mask[1, :20] = False
    lengths = torch.tensor([70, 45, 17, 0, 1])
    scores = scores.masked_fill(~mask, float("nan"))
    pad = torch.arange(T) >= lengths.view(R, 1)
    scores = scores.masked_fill(pad, float("inf"))
    out = functional.masked_softmax(scores, lengths, mask=mask, backend="cpu")
    truth = _softmax_truth(scores.nan_to_num(0, 0, 0), lengths, mask, 1.0, -1)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), truth, **tol("attention", dtype))
    assert (out[~mask | pad] == 0).all()
