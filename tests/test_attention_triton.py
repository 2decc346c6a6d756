"""The attention ops on backend="triton" (lstm_fused/triton_kernels/attention_*.py): on a GPU,
or on the CPU under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 there), on
tiny shapes. Same checks as tests/test_attention.py: float64 reference with lengths 0, 1, T,
poisoned padding, NaN-filled fresh allocations, gradients, gradcheck in float64, opcheck."""

import pytest
import torch

import lstm_fused
from lstm_fused import functional
from backends import device_of, needs, require, resolve, triton_op
from helpers import lengths_with_edges, nan_filled_empty, poison_padding
from test_attention import (
    _channel_truth,
    _pooling_truth,
    _softmax_truth,
    check_channel_backward,
    check_pooling,
    op_inputs,
)
from tolerances import tol

pytestmark = needs("masked_softmax", "triton")

DEVICE = device_of("triton")
DTYPES = [torch.float32, torch.float16]
F64 = tol("attention", torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax(dtype):
    torch.manual_seed(20)
    B, N, T = 4, 2, 21  # T > the 16-wide tile: two tiles with an online rescale
    lengths = lengths_with_edges(B, T)
    scores = torch.randn(B, N, T, dtype=torch.float64) * 3
    poisoned = poison_padding(scores.transpose(1, 2), lengths).transpose(1, 2).to(dtype)
    mask = torch.rand(B, 1, T) > 0.2
    with nan_filled_empty():
        out = functional.masked_softmax(
            poisoned.to(DEVICE),
            lengths.to(DEVICE),
            mask=mask.to(DEVICE),
            scale=0.8,
            backend="triton",
        )
    truth = _softmax_truth(poisoned.nan_to_num(0, 0, 0), lengths, mask, 0.8, -1)
    assert out.dtype == dtype and not out.isnan().any()
    torch.testing.assert_close(out.cpu().double(), truth, **tol("attention_online", dtype))
    assert (out.cpu()[0] == 0).all()


def test_masked_softmax_backward_and_gradcheck():
    torch.manual_seed(21)
    B, T = 4, 19
    lengths = lengths_with_edges(B, T)
    scores = poison_padding(torch.randn(B, T, dtype=torch.float64), lengths)
    grad = torch.randn(B, T, dtype=torch.float64)
    s1 = scores.clone().to(DEVICE).requires_grad_()
    out = functional.masked_softmax(s1, lengths.to(DEVICE), scale=1.3, backend="triton")
    with nan_filled_empty():
        (g,) = torch.autograd.grad(out, s1, poison_padding(grad, lengths).to(DEVICE))
    s2 = scores.nan_to_num(0, 0, 0).requires_grad_()
    (g_truth,) = torch.autograd.grad(_softmax_truth(s2, lengths, None, 1.3, -1), s2, grad)
    torch.testing.assert_close(g.cpu(), g_truth, **F64)
    x = torch.randn(3, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    small = torch.tensor([0, 1, 5], device=DEVICE)
    assert torch.autograd.gradcheck(
        lambda s: functional.masked_softmax(s, small, backend="triton"), (x,), fast_mode=True
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_query", [False, True])
def test_attention_pooling(dtype, with_query):
    torch.manual_seed(22)
    check_pooling("triton", dtype, B=4, T=19, D=5, A=3, Q=2 if with_query else 0)


def test_attention_pooling_backward_and_gradcheck():
    torch.manual_seed(23)
    B, T, D, A, Q = 4, 18, 3, 3, 2
    module = (
        lstm_fused.AttentionPooling(D, A, Q, batch_first=True, backend="triton").double().to(DEVICE)
    )
    lengths = lengths_with_edges(B, T).to(DEVICE)
    x_clean = torch.randn(B, T, D, dtype=torch.float64, device=DEVICE)
    query = torch.randn(B, Q, dtype=torch.float64, device=DEVICE, requires_grad=True)
    gc = torch.randn(B, D, dtype=torch.float64, device=DEVICE)
    ga = torch.randn(B, T, dtype=torch.float64, device=DEVICE)
    params = list(module.parameters())
    x = poison_padding(x_clean, lengths).requires_grad_()
    c, alpha = module(x, lengths, query)
    with nan_filled_empty():
        grads = torch.autograd.grad(
            (c, alpha), [x, query] + params, (gc, poison_padding(ga, lengths))
        )
    x2 = x_clean.clone().requires_grad_()
    c2, a2 = _pooling_truth(x2, module, lengths, query)
    truth = torch.autograd.grad((c2, a2), [x2, query] + params, (gc, ga))
    for g, t in zip(grads, truth):
        torch.testing.assert_close(g, t, **F64)

    xs = torch.randn(3, 4, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(2, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    v = torch.randn(2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    small = torch.tensor([0, 1, 4], device=DEVICE)
    assert torch.autograd.gradcheck(
        lambda xs, w, v: functional.attention_pooling(
            xs, w, None, v, small, batch_first=True, backend="triton"
        ),
        (xs, w, v),
        fast_mode=True,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["eca", "se"])
def test_channel_attention(dtype, mode):
    torch.manual_seed(24)
    B, T, C = 4, 18, 8
    module = lstm_fused.ChannelAttention(
        C, mode, kernel_size=3, reduction=2, batch_first=True, backend="triton"
    ).to(DEVICE, dtype)
    lengths = lengths_with_edges(B, T)
    x = poison_padding(torch.randn(B, T, C), lengths).to(DEVICE, dtype)
    with nan_filled_empty():
        y = module(x, lengths.to(DEVICE))
    truth = _channel_truth(x.cpu().nan_to_num(0, 0, 0), module.cpu(), lengths)
    assert not y.isnan().any()
    torch.testing.assert_close(y.cpu().double(), truth, **tol("attention_online", dtype))


def test_channel_attention_backward_and_gradcheck():
    torch.manual_seed(25)
    T, B, C = 17, 4, 5
    module = (
        lstm_fused.ChannelAttention(C, "eca", kernel_size=3, backend="triton").double().to(DEVICE)
    )
    lengths = lengths_with_edges(B, T).to(DEVICE)
    check_channel_backward(
        module,
        torch.randn(T, B, C, dtype=torch.float64, device=DEVICE),
        torch.randn(T, B, C, dtype=torch.float64, device=DEVICE),
        lengths,
    )
    xs = torch.randn(3, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    small = torch.tensor([0, 1, 3], device=DEVICE)
    assert torch.autograd.gradcheck(
        lambda xs: functional.channel_attention(xs, small, gate=torch.sigmoid, backend="triton"),
        (xs,),
        fast_mode=True,
    )


def test_attentive_lstm_pooling_on_triton():
    """The attentive LSTM's pooling (and merge) on backend="triton"; its LSTM layers run
    on whatever "triton" offers for lstm_layer — skipped when that is not available."""
    require("lstm_layer", "triton")
    torch.manual_seed(26)
    T, B, I, H, A = 7, 3, 2, 3, 2
    model = lstm_fused.AttentiveLSTM(I, H, A, chunk_size=3, backend="triton").to(DEVICE)
    ref = lstm_fused.AttentiveLSTM(I, H, A, chunk_size=3, backend="reference").to(DEVICE)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(T, B, I, device=DEVICE)
    lengths = torch.tensor([0, 1, 7], device=DEVICE)
    for got, want in zip(model(x, lengths)[:2], ref(x, lengths)[:2]):
        torch.testing.assert_close(got, want, **tol("attention_online", torch.float32))


def _triton_op_samples():
    leaves, lengths = op_inputs(27, DEVICE)
    x, proj, v, q, w, scores = leaves.values()
    return [
        ("masked_softmax_forward", (scores, torch.tensor([0, 1, 6, 3], device=DEVICE), None, 0.5)),
        ("attention_pooling_forward", (x, proj, v, q, lengths)),
        ("channel_masked_mean_forward", (x, lengths)),
        ("channel_rescale_forward", (x, w, lengths)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_triton_opcheck(index):
    name, args = _triton_op_samples()[index]
    torch.library.opcheck(triton_op(name), args)


@pytest.fixture
def small_tiles(monkeypatch):
    """16-wide tiles everywhere, so tiny shapes cross tile boundaries."""
    from lstm_fused.triton_kernels import attention_ops

    for key in attention_ops.BLOCK_CAPS:
        monkeypatch.setitem(attention_ops.BLOCK_CAPS, key, 16)


def test_multi_tile_paths(small_tiles):
    """Several N tiles (online rescale), several A tiles, several D slices (only the first
    writes alpha), several C slices; forward and backward against the float64 reference."""
    torch.manual_seed(28)
    B, T, D, A, C = 3, 37, 35, 20, 33
    lengths = torch.tensor([0, 1, T])
    scores = poison_padding(torch.randn(B, T, dtype=torch.float64) * 4, lengths)
    out = functional.masked_softmax(scores.to(DEVICE), lengths.to(DEVICE), backend="triton")
    torch.testing.assert_close(
        out.cpu(), _softmax_truth(scores.nan_to_num(0, 0, 0), lengths, None, 1.0, -1), **F64
    )

    module = (
        lstm_fused.AttentionPooling(D, A, batch_first=True, backend="triton").double().to(DEVICE)
    )
    x_clean = torch.randn(B, T, D, dtype=torch.float64)
    x = poison_padding(x_clean, lengths).to(DEVICE).requires_grad_()
    with nan_filled_empty():
        c, alpha = module(x, lengths.to(DEVICE))
    gc, ga = torch.randn(B, D, dtype=torch.float64), torch.randn(B, T, dtype=torch.float64)
    grads = torch.autograd.grad(
        (c, alpha), [x] + list(module.parameters()), (gc.to(DEVICE), ga.to(DEVICE))
    )
    x2 = x_clean.clone().requires_grad_()
    c2, a2 = _pooling_truth(x2, module.cpu(), lengths)
    truth = torch.autograd.grad((c2, a2), [x2] + list(module.parameters()), (gc, ga))
    torch.testing.assert_close(c.cpu(), c2, **F64)
    torch.testing.assert_close(alpha.cpu(), a2, **F64)
    for g, t in zip(grads, truth):
        torch.testing.assert_close(g.cpu(), t, **F64)

    chan = (
        lstm_fused.ChannelAttention(C, "se", reduction=4, batch_first=True, backend="triton")
        .double()
        .to(DEVICE)
    )
    xc = poison_padding(torch.randn(B, T, C, dtype=torch.float64), lengths)
    with nan_filled_empty():
        y = chan(xc.to(DEVICE), lengths.to(DEVICE))
    torch.testing.assert_close(
        y.cpu(), _channel_truth(xc.nan_to_num(0, 0, 0), chan.cpu(), lengths), **F64
    )


# ------------------------------------------------- what the GPU compiler accepts (no GPU run)


def test_flash_tiles_refuse_head_sizes_that_spill(monkeypatch):
    """Tiles come from a table measured by tests/test_triton_aot.py per target; a head size
    without spill-free tiles is refused with a reason, which backend='triton' raises and
    'auto' passes over."""
    from lstm_fused.triton_kernels import mhsa as fa
    from lstm_fused.triton_kernels import launch_config

    assert fa.unsupported_reason(torch.float16, 128, 90) is None
    assert fa.unsupported_reason(torch.float32, 64, 80) is None
    reason = fa.unsupported_reason(torch.float32, 128, 90)
    assert "head sizes up to 64" in reason and "128" in reason
    assert fa.unsupported_reason(torch.float32, 128, None) is None  # interpreter: no limit
    with pytest.raises(ValueError, match="head sizes up to 64"):
        fa.flash_configs(128, torch.float32, True, False, 80)
    cfgs = fa.flash_configs(40, torch.float16, True, True, 90)  # head block 64
    assert {c.meta()["BLOCK_D"] for c in cfgs.values()} == {64}
    assert cfgs["fwd"].meta()["PRECISION"] == "tf32"
    assert (
        fa.flash_configs(64, torch.float32, False, False, 90)["dq"].meta()["PRECISION"] == "tf32x3"
    )

    # The backend asks the device's target: pretend a CUDA device of capability 9.0.
    monkeypatch.setattr(launch_config, "device_target", lambda device: 90)
    cuda = torch.device("cuda")
    with pytest.raises(RuntimeError, match="head sizes up to 64"):
        resolve("triton", "mhsa", cuda, torch.float32, dropout=False, lengths=True, head_dim=128)
    impl = resolve("triton", "mhsa", cuda, torch.float32, dropout=False, lengths=True, head_dim=64)
    assert impl.name == "triton"


def test_triton_twins_run_the_cpp_argument_checks():
    """A Triton operator called directly gets the C++ operator's checks (its <name>_check,
    csrc/check_ops.cpp), with the C++ messages, before its launcher runs."""
    g = torch.Generator().manual_seed(3)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(DEVICE)

    with pytest.raises(ValueError, match="masked_softmax_forward: scores must be 2-D"):
        triton_op("masked_softmax_forward")(rnd(5), None, None, 1.0)
    with pytest.raises(TypeError, match="lengths has dtype torch.int32, expected torch.int64"):
        triton_op("masked_softmax_forward")(
            rnd(2, 5), torch.tensor([1, 2], dtype=torch.int32, device=DEVICE), None, 1.0
        )
    with pytest.raises(ValueError, match=r"attention_pooling_forward: v has shape \[3\]"):
        triton_op("attention_pooling_forward")(rnd(2, 4, 6), rnd(2, 4, 5), rnd(3), None, None)
    with pytest.raises(ValueError, match="channel_rescale_forward: w has shape"):
        triton_op("channel_rescale_forward")(rnd(2, 4, 6), rnd(2, 5), None)
    with pytest.raises(ValueError, match=r"k has shape \(1, 2, 5, 8\), expected q's shape"):
        triton_op("mhsa_forward")(rnd(1, 2, 4, 8), rnd(1, 2, 5, 8), rnd(1, 2, 4, 8), None, 0.3)
    with pytest.raises(ValueError, match=r"lengths has shape \(1,\), expected \(2,\)"):
        triton_op("lstm_layer_forward")(
            rnd(3, 2, 4),
            rnd(1, 2, 5),
            rnd(1, 2, 5),
            rnd(1, 20, 4),
            rnd(1, 20, 5),
            None,
            None,
            None,
            torch.tensor([3], device=DEVICE),
        )
