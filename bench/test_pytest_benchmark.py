"""A small pytest-benchmark set of the suite's cases, on the CPU (or the GPU when present).

    python -m pytest bench/test_pytest_benchmark.py            # time them (pytest-benchmark)
    python -m pytest bench/test_pytest_benchmark.py --benchmark-disable   # run once each

Every benchmark first checks its provider against the float64 reference (bench.runner), so a
wrong answer fails the test instead of being timed. Providers not in this build are skipped
with the reason.
"""

from __future__ import annotations

import pytest
import torch

from bench.cases import Case
from bench.runner import compare, evaluate, forward_backward, grad_targets, to_device, tolerance
from bench.workloads import WORKLOADS
from bench.workloads.base import DTYPES, Absent, Options

pytest.importorskip("pytest_benchmark")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

CASES = [
    Case("lstm", "fwd", (("B", 8), ("T", 20), ("I", 32), ("H", 64), ("L", 2), ("D", 1)), "float32"),
    Case(
        "lstm",
        "fwd+bwd",
        (("B", 8), ("T", 20), ("I", 32), ("H", 64), ("L", 1), ("D", 2)),
        "float32",
    ),
    Case("lstm_cell", "fwd+bwd", (("B", 16), ("I", 64), ("H", 64)), "float32"),
    Case("masked_softmax", "fwd", (("B", 8), ("T", 32)), "float32"),
    Case("attention_pooling", "fwd+bwd", (("B", 8), ("T", 32), ("D", 32), ("A", 16)), "float32"),
    Case("self_attention", "fwd", (("B", 8), ("T", 32), ("E", 32), ("N", 4)), "float32"),
    Case(
        "model_step",
        "train",
        (("B", 4), ("T", 16), ("V", 50), ("E", 16), ("H", 16), ("N", 2), ("A", 8), ("C", 3)),
        "float32",
    ),
]

PROVIDERS = {
    "lstm": ["nn.LSTM", "lstm_fused:cpu", "lstm_fused:cuda"],
    "lstm_cell": ["nn.LSTMCell", "lstm_fused:cpu", "lstm_fused:cuda"],
    "masked_softmax": ["torch.unfused", "lstm_fused:auto", "lstm_fused:cpu", "lstm_fused:cuda"],
    "attention_pooling": ["torch.unfused", "lstm_fused:cpu", "lstm_fused:cuda"],
    "self_attention": ["nn.MultiheadAttention", "torch.sdpa", "lstm_fused:cpu", "lstm_fused:cuda"],
    "model_step": ["torch.nn", "lstm_fused:cpu", "lstm_fused:cuda"],
}

PARAMS = [
    pytest.param(c, p, id=f"{c.family}-{c.mode}-{p}") for c in CASES for p in PROVIDERS[c.family]
]


@pytest.mark.parametrize("case,provider_name", PARAMS)
def test_benchmark(benchmark, case, provider_name):
    wl = WORKLOADS[case.family]
    providers = {p.name: p for p in wl.providers(case, DEVICE, Options())}
    if provider_name not in providers:
        pytest.skip(f"{provider_name} is not a provider on {DEVICE.type} in this build")
    gen = torch.Generator().manual_seed(0)
    state, inputs = wl.make_state(case, gen), wl.make_inputs(case, gen)
    try:
        impl = providers[provider_name].build(case, state, DTYPES[case.dtype], DEVICE)
    except Absent as exc:
        pytest.skip(str(exc))
    grads = case.mode != "fwd"
    ref = wl.reference(case, state, DEVICE)
    ref_in = to_device(inputs, torch.float64, DEVICE, wl.diff_inputs, grads)
    with torch.no_grad():
        outs = ref.call(ref_in)
    gys = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(DEVICE) for o in outs]
    check_mode = "fwd" if case.mode == "fwd" else "fwd+bwd"
    want = evaluate(ref, ref_in, check_mode, wl.diff_inputs, gys)
    dev_in = to_device(inputs, DTYPES[case.dtype], DEVICE, wl.diff_inputs, grads)
    dev_gys = [g.to(DTYPES[case.dtype]) for g in gys]
    got = evaluate(impl, dev_in, check_mode, wl.diff_inputs, dev_gys)
    err, where = compare(got, want, wl.output_masks(case, inputs))
    assert err <= tolerance(case.dtype, DEVICE), f"{provider_name}: error {err:.3g} in {where}"

    if case.mode == "fwd":

        def run():
            with torch.no_grad():
                return impl.call(dev_in)
    elif case.mode == "train":

        def run():
            return impl.train_step(dev_in)
    else:
        targets = grad_targets(impl, dev_in, wl.diff_inputs)[1]

        def run():
            return forward_backward(impl, dev_in, dev_gys, targets)

    def timed():
        out = run()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark(timed)
