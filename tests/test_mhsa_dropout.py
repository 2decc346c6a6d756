"""Attention dropout inside the fused self-attention kernels (training): the counter-based mask
of csrc/attention_dropout.h, the same on the CPU kernel, the Triton kernel (under the
interpreter without a GPU) and the reference (reference_mhsa.dropout_keep_mask). Each kernel is
checked against the float64 reference that applies that mask, forward and backward, with
lengths 0, 1, T and NaN padding; gradcheck; the mask's rate and the output's mean over seeds;
the module in training against backend="reference" with the same torch seed."""

import pytest
import torch

from lstm_fused import reference_mhsa
from lstm_fused.mhsa import MultiheadSelfAttention
from backends import needs, resolve, triton_device, triton_op
from helpers import lengths_with_edges, nan_filled_empty
from tolerances import tol

# The operators take the seed as a one-element int64 tensor; both halves of it matter.
SEED = torch.tensor(-0x1234_5678_9ABC_DEF1)


def _qkv(B, N, T, Dh, dtype, seed, lengths):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, N, T, Dh, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (k, v):  # padded keys and values hold NaN: never read
        for b, n in enumerate(lengths.tolist()):
            t[b, :, n:] = float("nan")
    return tuple(t.to(dtype) for t in (q, k, v))


def _truth(q, k, v, lengths, scale, p, seed):
    k, v = (t.double().nan_to_num(0.0) for t in (k, v))
    return reference_mhsa.attention_core(q.double(), k, v, lengths, scale, p, True, seed=seed)[0]


def test_keep_mask_rate_and_edges():
    for p in (0.1, 0.5, 0.9):
        keep = reference_mhsa.dropout_keep_mask(SEED, 4, 3, 64, p)
        assert keep.shape == (4, 3, 64, 64)
        assert abs(keep.double().mean().item() - (1 - p)) < 0.01
        # rows and columns are not copies of one another
        assert keep[0, 0, 0].ne(keep[0, 0, 1]).any() and keep[0, 0, :, 0].ne(keep[0, 0, :, 1]).any()
    assert reference_mhsa.dropout_keep_mask(SEED, 2, 2, 5, 0.0).all()
    assert not reference_mhsa.dropout_keep_mask(SEED, 2, 2, 5, 1.0).any()
    other = reference_mhsa.dropout_keep_mask(SEED + (1 << 32), 4, 3, 64, 0.5)
    assert other.ne(reference_mhsa.dropout_keep_mask(SEED, 4, 3, 64, 0.5)).any()


def _check_op(forward, backward, dtype, device, T=19, seed=SEED):
    B, N, Dh, p, scale = 4, 2, 5, 0.3, 0.45
    lengths = lengths_with_edges(B, T)
    q, k, v = (t.to(device).requires_grad_() for t in _qkv(B, N, T, Dh, dtype, T, lengths))
    with nan_filled_empty():
        out, lse = forward(q, k, v, lengths.to(device), scale, p, seed)
    truth_q, truth_k, truth_v = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    truth = _truth(truth_q, truth_k, truth_v, lengths, scale, p, seed)
    t = tol("attention_online", dtype)
    torch.testing.assert_close(out.detach().cpu().double(), truth, **t)
    grad = torch.randn(out.shape, dtype=torch.float64)
    with nan_filled_empty():
        got = backward(
            grad.to(device, dtype),
            q.detach(),
            k.detach(),
            v.detach(),
            lengths.to(device),
            scale,
            p,
            seed,
            out.detach(),
            lse,
        )
    want = torch.autograd.grad(truth, (truth_q, truth_k, truth_v), grad)
    for name, g, w in zip("qkv", got, want):
        w = w.nan_to_num(0.0)
        # atol relative to the gradient's largest entry (float16 rounds each product to it)
        scaled = dict(rtol=t["rtol"], atol=t["atol"] * max(1.0, w.abs().max().item()))
        torch.testing.assert_close(
            g.cpu().double(), w, **scaled, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_kernel_matches_reference(dtype):
    _check_op(torch.ops.lstm_fused.mhsa_forward, torch.ops.lstm_fused.mhsa_backward, dtype, "cpu")


def test_cpu_kernel_long_rows():
    """More query rows than one block of the CPU kernel (256): row numbers past the block."""
    _check_op(
        torch.ops.lstm_fused.mhsa_forward,
        torch.ops.lstm_fused.mhsa_backward,
        torch.float64,
        "cpu",
        T=300,
    )


def test_cpu_gradcheck_with_dropout():
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(2, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    lengths = torch.tensor([5, 2])
    assert torch.autograd.gradcheck(
        lambda q, k, v: torch.ops.lstm_fused.mhsa_forward(q, k, v, lengths, 0.6, 0.4, SEED)[0],
        (q, k, v),
    )


def test_cpu_opcheck_with_dropout():
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 2, 5, 3, generator=g, requires_grad=True) for _ in range(3))
    torch.library.opcheck(
        torch.ops.lstm_fused.mhsa_forward.default, (q, k, v, torch.tensor([3, 0]), 0.5, 0.25, SEED)
    )


def test_cpu_dropout_is_unbiased():
    """Mean over seeds of the dropped-out output = the output without dropout (the 1 / (1 - p)
    scaling), within 5 standard errors."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 1, 8, 4, generator=g, dtype=torch.float64) for _ in range(3))
    plain = torch.ops.lstm_fused.mhsa_forward(q, k, v, None, 0.5)[0]
    runs = torch.stack(
        [
            torch.ops.lstm_fused.mhsa_forward(q, k, v, None, 0.5, 0.3, torch.tensor(s))[0]
            for s in range(2000)
        ]
    )
    stderr = runs.std(dim=0) / 2000**0.5
    assert ((runs.mean(dim=0) - plain).abs() <= 5 * stderr + 1e-12).all()


def test_dropout_one_drops_everything():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 2, 4, 3, generator=g) for _ in range(3))
    out, _ = torch.ops.lstm_fused.mhsa_forward(q, k, v, None, 0.5, 1.0, SEED)
    assert (out == 0).all()
    with pytest.raises(ValueError, match="dropout_p"):
        torch.ops.lstm_fused.mhsa_forward(q, k, v, None, 0.5, 1.5, SEED)


@pytest.mark.parametrize("need_weights", [False, True])
def test_module_training_matches_reference_backend(need_weights):
    """Same torch seed -> same dropout on backend "cpu" (the fused kernel) and "reference";
    eval mode drops nothing."""
    torch.manual_seed(7)
    E, N, T, B = 8, 2, 9, 4
    module = MultiheadSelfAttention(E, N, dropout=0.35, backend="cpu").double().train()
    x = torch.randn(T, B, E, dtype=torch.float64, requires_grad=True)
    lengths = lengths_with_edges(B, T)
    results = {}
    for backend in ("cpu", "reference"):
        module.backend = backend
        torch.manual_seed(8)
        out, weights = module(x, lengths, need_weights=need_weights)
        grads = torch.autograd.grad(out.sum(), [x] + list(module.parameters()))
        results[backend] = (out, weights, grads)
    (o1, w1, g1), (o2, w2, g2) = results["cpu"], results["reference"]
    torch.testing.assert_close(o1, o2, **tol("attention", torch.float64))
    if need_weights:
        torch.testing.assert_close(w1, w2, **tol("attention", torch.float64))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **tol("attention", torch.float64))
    module.backend = "cpu"
    torch.manual_seed(8)
    dropped = module(x, lengths)[0]
    module.eval()
    assert not torch.allclose(dropped, module(x, lengths)[0])
    assert resolve("auto", "mhsa", "cpu", torch.float32, dropout=True).name == "cpu"


# ------------------------------------------------------------------------------------ Triton


@pytest.mark.parametrize(
    "dtype,seed",
    [
        (torch.float32, SEED),
        (torch.float16, SEED),
        (torch.float32, torch.tensor(1)),
        (torch.float32, torch.tensor(1 << 32)),
    ],
)
def test_triton_kernel_matches_reference(dtype, seed):
    device = triton_device("mhsa")
    _check_op(triton_op("mhsa_forward"), triton_op("mhsa_backward"), dtype, device, seed=seed)


@needs("mhsa", "cuda")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_kernel_matches_reference(dtype):
    _check_op(
        torch.ops.lstm_fused.mhsa_forward, torch.ops.lstm_fused.mhsa_backward, dtype, "cuda", T=70
    )


def test_seed_of_any_form_gives_the_same_mask():
    """self_attention_core takes the seed as an int or a tensor; the kernels get a CPU tensor;
    a CUDA or float seed given to the operator itself is refused with a clear message."""
    from lstm_fused.mhsa import self_attention_core

    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 2, 6, 3, generator=g) for _ in range(3))
    outs = [
        self_attention_core(q, k, v, None, 0.5, dropout_p=0.4, training=True, seed=s, backend="cpu")
        for s in (123, torch.tensor(123), torch.tensor([123]))
    ]
    ref = self_attention_core(
        q, k, v, None, 0.5, dropout_p=0.4, training=True, seed=123, backend="reference"
    )
    for out in outs:
        torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="int64 CPU tensor"):
        torch.ops.lstm_fused.mhsa_forward(q, k, v, None, 0.5, 0.4, torch.tensor(1.0))
