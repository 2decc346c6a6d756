"""The interleaved modes of the runner: `python -m bench --interleaved MODE [--smoke]`.

A mode is a few cases and the providers to compare on them. The runner builds and checks each
provider against the float64 reference as in every other run, then times those that passed
together, one call of each in turn (bench.timing.time_interleaved), so that a slow spell of a
shared machine (this suite's CPU numbers come from a 2-core VM) hits them all alike; one
provider after the other, as `python -m bench` times them, a disturbance lands on one row.
Rows go to the same files, in the same format, as `python -m bench`'s.

| mode | what is compared | cases |
| --- | --- | --- |
| cpu_loops | nn.LSTM and the CPU backend with each of its time loops forced (rows, fused_gemm: the input projection by one GEMM before the loop, fused_input: in the loop's register tiles), `lstm_fused.switches.override(cpu_loop=...)` | the LSTM cases of --quick on the CPU, fwd and fwd+bwd |
| mhsa_dropout | self-attention in training with attention dropout p=0.1: nn.MultiheadAttention(dropout=0.1) and lstm_fused.MultiheadSelfAttention(dropout=0.1) on each attention backend | B=32,T=100,E=256,N=4 and B=8,T=400; fwd+bwd |
| attentive | the attentive LSTM (lstm_fused.AttentiveLSTM) and nn.LSTM + the unfused pooling | the attentive_lstm cases of --quick, fwd and fwd+bwd |
| pooling | additive attention pooling (lstm_fused.AttentionPooling) and the unfused PyTorch pooling | the attention_pooling cases of --quick, fwd and fwd+bwd |
| overhead | one step of nn.LSTM / nn.LSTMCell against lstm_fused's on each backend but the reference (per-call overhead) | the overhead cases of --quick, fwd and fwd+bwd |
| threads | nn.LSTM and lstm_fused:cpu at torch's thread count and at 1 thread (`[1 thread]`: torch.set_num_threads(1) around each call): what threads gain, or on a busy machine (`--load N`) what they lose | the LSTM cases of --quick on the CPU, fwd and fwd+bwd; CPU only |
| inference | nn.LSTM, lstm_fused:cpu, onnxruntime (nn.LSTM exported), the frozen LSTM with float32, bfloat16 and int8 weights and torch.ao's dynamically quantized LSTM (bench/workloads/inference_onnx.py) | the inference_onnx cases of --quick (B = 1, 8, 32; T=100, I=H=256, L=2); CPU only |
| roofline | nn.LSTM, lstm_fused:cpu and `torch.mm[roofline]`: as many multiply-adds as the case (x3 for fwd+bwd) done by torch.mm on the recurrent product's shape (B, H) x (H, 4H) with the same threads, the rate a time loop could reach; each LSTM row's note says its fraction of it | the large LSTM shapes of the grids (B=32, T=100, I=256, H=512, L=2, and H=1024, L=1), fwd and fwd+bwd; CPU only |

With --smoke, tiny shapes of the same families (the suite's own tests). The dropout check runs
in eval mode (dropout off) against the reference; the timed calls run in training mode, where
each provider draws its own mask (the kernel's dropout is checked against the reference with
the same mask in tests/test_mhsa_dropout.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .cases import Case, full_cases, grid, quick_cases, smoke_cases
from .workloads import WORKLOADS
from .workloads.attention import SelfAttentionWorkload, TorchMHA
from .workloads.base import (
    Impl,
    Options,
    Provider,
    Workload,
    attention_backends,
    backend_providers,
    load_module,
    lstm_fused_attr,
    lstm_fused_backends,
)

# The CPU time loops a cpu_loops run forces, each a value of the switch cpu_loop.
CPU_LOOPS = ("rows", "fused_gemm", "fused_input")
DROPOUT = 0.1


@dataclass(frozen=True)
class Mode:
    name: str
    workload: Workload
    cases: Callable[[str], List[Case]]  # device type -> cases
    smoke_cases: Callable[[str], List[Case]]  # device type -> tiny cases
    providers: Callable[[Workload, Case, torch.device, Options], List[Provider]]
    devices: tuple = ("cpu", "cuda")  # device types it runs on
    # With --full: the whole grid's cases of the mode's family (None: --full is refused).
    full_cases: Optional[Callable[[str], List[Case]]] = None
    # Reference points timed with the providers but not checked (they compute no answer of
    # the case): (case, device) -> {name: (fn(i), note)}.
    references: Optional[Callable[[Case, torch.device], Dict[str, Tuple[Callable, str]]]] = None


def _family(cases: Callable[[str], List[Case]], family: str) -> Callable[[str], List[Case]]:
    return lambda device_type: [c for c in cases(device_type) if c.family == family]


# ---- cpu_loops ----------------------------------------------------------------------------


def _with_cpu_loop(provider: Provider, loop: str) -> Provider:
    """lstm_fused:cpu with the time loop `loop` forced for its every call (and backward)."""
    from lstm_fused import switches

    def build(case, state, dtype, device):
        impl = provider.build(case, state, dtype, device)
        impl.context = lambda: switches.override(cpu_loop=loop)
        impl.note = f"switches.override(cpu_loop={loop!r})"
        return impl

    return Provider(f"{provider.name}[{loop}]", build)


def _cpu_loop_providers(wl, case, device, options) -> List[Provider]:
    by_name = {p.name: p for p in wl.providers(case, device, options)}
    return [by_name[wl.baseline]] + [
        _with_cpu_loop(by_name["lstm_fused:cpu"], loop) for loop in CPU_LOOPS
    ]


# ---- mhsa_dropout -------------------------------------------------------------------------


class SelfAttentionDropoutWorkload(SelfAttentionWorkload):
    """Self-attention in training with attention dropout DROPOUT: the self_attention
    workload's state, inputs and reference; providers checked in eval mode, timed in train."""

    family = "self_attention_dropout"

    @staticmethod
    def _dropout_impl(impl: Impl, module) -> Impl:
        module.eval()  # the check: dropout off, against the reference
        impl.before_timing = module.train
        impl.note = f"training mode, attention dropout p={DROPOUT} (checked in eval mode)"
        return impl

    def providers(self, case, device, options) -> List[Provider]:
        d = case.dims

        def torch_mha(case, state, dtype, device):
            module = load_module(TorchMHA(d["E"], d["N"], dropout=DROPOUT), state, dtype, device)
            return self._dropout_impl(self._wrap(module), module)

        def fused(case, state, dtype, device, backend):
            cls = lstm_fused_attr("MultiheadSelfAttention")
            module = load_module(
                cls(d["E"], d["N"], dropout=DROPOUT, backend=backend), state, dtype, device
            )
            return self._dropout_impl(self._wrap(module, returns_tuple=True), module)

        return [Provider("nn.MultiheadAttention", torch_mha)] + backend_providers(
            attention_backends(device), fused
        )


def _dropout_cases(device_type: str) -> List[Case]:
    base = {"B": 32, "T": 100, "E": 256, "N": 4}
    return grid("self_attention_dropout", ("fwd+bwd",), ("float32",), base) + grid(
        "self_attention_dropout", ("fwd+bwd",), ("float32",), {**base, "B": 8, "T": 400}
    )


def _dropout_smoke_cases(device_type: str) -> List[Case]:
    return grid(
        "self_attention_dropout", ("fwd+bwd",), ("float32",), {"B": 3, "T": 6, "E": 8, "N": 2}
    )


def _all_providers(wl, case, device, options) -> List[Provider]:
    return wl.providers(case, device, options)


# ---- attentive ----------------------------------------------------------------------------


def _attentive_providers(wl, case, device, options) -> List[Provider]:
    """The baseline (the unfused model; torch.nn) and lstm_fused on each backend but the (slow)
    reference."""
    fast = {f"lstm_fused:{b}" for b in lstm_fused_backends(device) if b != "reference"}
    return [
        p for p in wl.providers(case, device, options) if p.name == wl.baseline or p.name in fast
    ]


# ---- threads ------------------------------------------------------------------------------


@contextlib.contextmanager
def _num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_threads(provider: Provider, n: int) -> Provider:
    """`provider` with torch.set_num_threads(n) around its every call (and backward)."""

    def build(case, state, dtype, device):
        impl = provider.build(case, state, dtype, device)
        outer = impl.context

        @contextlib.contextmanager
        def context():
            with outer(), _num_threads(n):
                yield

        impl.context = context
        impl.note = "; ".join(filter(None, [impl.note, f"torch.set_num_threads({n})"]))
        return impl

    return Provider(f"{provider.name}[{n} thread{'s' if n > 1 else ''}]", build)


def _thread_providers(wl, case, device, options) -> List[Provider]:
    by_name = {p.name: p for p in wl.providers(case, device, options)}
    base, fused = by_name[wl.baseline], by_name["lstm_fused:cpu"]
    return [base, fused, _with_threads(fused, 1), _with_threads(base, 1)]


# ---- inference ----------------------------------------------------------------------------


def _inference_providers(wl, case, device, options) -> List[Provider]:
    """Every provider of inference_onnx but lstm_fused:reference and onnxruntime running the
    export of lstm_fused.LSTM (the same ONNX graph as nn.LSTM's)."""
    skip = ("lstm_fused:reference", "onnxruntime(lstm_fused)")
    return [p for p in wl.providers(case, device, options) if p.name not in skip]


# ---- roofline -----------------------------------------------------------------------------

# The largest LSTM shapes of the grids: the one of every grid and --full's H=1024.
ROOFLINE_SHAPES = (
    {"B": 32, "T": 100, "I": 256, "H": 512, "L": 2, "D": 1},
    {"B": 32, "T": 100, "I": 256, "H": 1024, "L": 1, "D": 1},
)


def _roofline_cases(device_type: str) -> List[Case]:
    out = []
    for shape in ROOFLINE_SHAPES:
        out += grid("lstm", ("fwd", "fwd+bwd"), ("float32",), shape)
    return out


def _roofline_smoke_cases(device_type: str) -> List[Case]:
    return grid(
        "lstm", ("fwd", "fwd+bwd"), ("float32",), {"B": 4, "T": 5, "I": 8, "H": 16, "L": 1, "D": 1}
    )


def roofline_mm(case: Case, device: torch.device) -> Tuple[Callable[[int], object], int]:
    """fn(i) doing the case's matrix-product multiply-adds (x3 for fwd+bwd) as torch.mm calls
    on the recurrent product's shape, h (B, H) x W_hh^T (H, 4H), one weight reused as a time
    loop reuses W_hh; and the number of calls it makes."""
    d = case.dims
    B, H = d["B"], d["H"]
    flops = WORKLOADS["lstm"].flops(case) * (1 if case.mode == "fwd" else 3)
    calls = max(1, round(flops / (2 * B * H * 4 * H)))
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(B, H, generator=gen).to(device)
    w = torch.randn(4 * H, H, generator=gen).to(device) / H**0.5

    def fn(i):
        with torch.no_grad():
            w_t = w.t()
            for _ in range(calls):
                out = torch.mm(h, w_t)
            return out

    return fn, calls


def _roofline_references(case: Case, device: torch.device):
    fn, calls = roofline_mm(case, device)
    d = case.dims
    note = (
        f"the roofline: {calls} torch.mm calls of ({d['B']}, {d['H']}) x ({d['H']}, "
        f"{4 * d['H']}), the case's multiply-adds{' x3' if case.mode != 'fwd' else ''}; "
        f"not an LSTM, not checked"
    )
    return {"torch.mm[roofline]": (fn, note)}


def _roofline_providers(wl, case, device, options) -> List[Provider]:
    return [
        p for p in wl.providers(case, device, options) if p.name in (wl.baseline, "lstm_fused:cpu")
    ]


MODES = {
    m.name: m
    for m in (
        Mode(
            "cpu_loops",
            WORKLOADS["lstm"],
            _family(quick_cases, "lstm"),
            _family(smoke_cases, "lstm"),
            _cpu_loop_providers,
            full_cases=_family(full_cases, "lstm"),
            devices=("cpu",),
        ),
        Mode(
            "mhsa_dropout",
            SelfAttentionDropoutWorkload(),
            _dropout_cases,
            _dropout_smoke_cases,
            _all_providers,
        ),
        Mode(
            "attentive",
            WORKLOADS["attentive_lstm"],
            _family(quick_cases, "attentive_lstm"),
            _family(smoke_cases, "attentive_lstm"),
            _attentive_providers,
            full_cases=_family(full_cases, "attentive_lstm"),
        ),
        Mode(
            "pooling",
            WORKLOADS["attention_pooling"],
            _family(quick_cases, "attention_pooling"),
            _family(smoke_cases, "attention_pooling"),
            _attentive_providers,
            full_cases=_family(full_cases, "attention_pooling"),
        ),
        Mode(
            "overhead",
            WORKLOADS["overhead"],
            _family(quick_cases, "overhead"),
            _family(smoke_cases, "overhead"),
            _attentive_providers,
            full_cases=_family(full_cases, "overhead"),
        ),
        Mode(
            "threads",
            WORKLOADS["lstm"],
            _family(quick_cases, "lstm"),
            _family(smoke_cases, "lstm"),
            _thread_providers,
            full_cases=_family(full_cases, "lstm"),
            devices=("cpu",),
        ),
        Mode(
            "inference",
            WORKLOADS["inference_onnx"],
            _family(quick_cases, "inference_onnx"),
            _family(smoke_cases, "inference_onnx"),
            _inference_providers,
            full_cases=_family(full_cases, "inference_onnx"),
            devices=("cpu",),
        ),
        Mode(
            "roofline",
            WORKLOADS["lstm"],
            _roofline_cases,
            _roofline_smoke_cases,
            _roofline_providers,
            devices=("cpu",),
            references=_roofline_references,
        ),
    )
}
