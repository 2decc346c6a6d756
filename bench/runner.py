"""Run cases x providers: build, check against the float64 reference, measure memory, time.

For every case: one canonical float64 state (parameters) and several input sets (rotated
between calls so caches do not flatter); the reference runs once in float64 on set 0. Each
provider is built from the same state in the case's dtype, checked on set 0 (outputs and, for
fwd+bwd / train, the gradients of every input and parameter for one fixed random output
gradient), and only when the check passes is its peak memory measured and its time taken.

Each row goes to the `on_row` callback as soon as it is made (the results files are written
row by row). The baseline provider of a case runs first, so every later row of the case gets
its speedup at once. With a provider timeout, one provider (its build, check and timing) that
runs longer is stopped and reported as an error, and not run again in later cases.
"""
from __future__ import annotations

import math
import re
import signal
import time
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .cases import Case
from .report import make_row
from .timing import TimingBudget, measure, peak_memory_mb
from .workloads import WORKLOADS
from .workloads.base import DTYPES, Absent, Impl, Options, Provider, Unsupported, Workload

# Normalised tolerance of the check: max |got - want| / max |want| over every compared tensor.
# float32 on CUDA allows TF32 (cuDNN uses it by default). A wrong answer is O(0.1) or more.
TOLERANCE = {"float64": 1e-8, "float32": 2e-4, "float16": 3e-2, "bfloat16": 1e-1}
CUDA_FLOAT32_TOLERANCE = 1e-2
FLOOR = 1e-3                  # see compare()
ROTATION_BYTES = 64 * 2**20   # enough input sets to exceed a last-level cache of 64 MB ...
MAX_SETS = 8                  # ... but at most this many


def tolerance(dtype: str, device: torch.device) -> float:
    if dtype == "float32" and device.type == "cuda":
        return CUDA_FLOAT32_TOLERANCE
    return TOLERANCE[dtype]


class ProviderTimeout(BaseException):
    """A provider ran past the runner's provider_timeout_s. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way (the suite's own, torch's)
    swallows it."""


def classify(exc: BaseException) -> Tuple[str, str]:
    """(status, note) of an exception raised while building or running a provider."""
    msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if isinstance(exc, ProviderTimeout):
        return "error", str(exc)
    if isinstance(exc, Absent):
        return "absent", str(exc)
    if isinstance(exc, Unsupported):
        return "unsupported", str(exc)
    if isinstance(exc, RuntimeError) and re.search(r"cannot run|no backend can run", str(exc)):
        return "unsupported", msg
    return "error", msg[:400]


def to_device(inputs: Dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device,
              diff: Tuple[str, ...], requires_grad: bool) -> Dict[str, torch.Tensor]:
    out = {}
    for name, t in inputs.items():
        if t.is_floating_point():
            t = t.to(device=device, dtype=dtype)
            if requires_grad and name in diff:
                t.requires_grad_(True)
        else:
            t = t.to(device)
        out[name] = t
    return out


def grad_targets(impl: Impl, inputs, diff) -> Tuple[List[str], List[torch.Tensor]]:
    names, tensors = [], []
    for n in diff:
        names.append(f"input:{n}")
        tensors.append(inputs[n])
    if impl.module is not None:
        for n, p in sorted(impl.module.named_parameters()):
            names.append(f"param:{n}")
            tensors.append(p)
    return names, tensors


def forward_backward(impl: Impl, inputs, gys, targets):
    """Outputs and the gradients of `targets` for output gradients `gys`."""
    outs = impl.call(inputs)
    pairs = [(o, g) for o, g in zip(outs, gys) if o.requires_grad]
    grads = torch.autograd.grad([o for o, _ in pairs], targets, [g for _, g in pairs],
                                allow_unused=True)
    return outs, grads


def evaluate(impl: Impl, inputs, mode: str, diff, gys=None):
    """(outputs, {target name: gradient}) of one checked call."""
    if mode == "fwd":
        with torch.no_grad():
            return impl.call(inputs), {}
    names, targets = grad_targets(impl, inputs, diff)
    outs, grads = forward_backward(impl, inputs, gys, targets)
    return outs, dict(zip(names, grads))


def normalised_error(got: Optional[torch.Tensor], want: Optional[torch.Tensor],
                     mask: Optional[torch.Tensor] = None, floor: float = 1e-12) -> float:
    """max |got - want| / max(max |want|, floor); inf on a shape mismatch or a non-finite value."""
    if want is None and got is None:
        return 0.0
    if want is None or got is None:
        ref = want if want is not None else got
        want = torch.zeros_like(ref) if want is None else want
        got = torch.zeros_like(ref) if got is None else got
    got = got.detach().to(device="cpu", dtype=torch.float64)
    want = want.detach().to(device="cpu", dtype=torch.float64)
    if got.shape != want.shape:
        return math.inf
    if mask is not None:
        mask = mask.cpu()
        got, want = torch.where(mask, got, 0.0), torch.where(mask, want, 0.0)
    if not torch.isfinite(got).all():
        return math.inf
    if got.numel() == 0:
        return 0.0
    scale = max(want.abs().max().item(), floor, 1e-12)
    return (got - want).abs().max().item() / scale


def compare(got, want, masks) -> Tuple[float, str]:
    """Largest normalised error over outputs and gradients, and what it was in.

    Each tensor is normalised by its own largest expected value, but never by less than
    FLOOR x the largest of its kind (outputs, gradients): a gradient that is nearly zero by
    cancellation (e.g. of a pooling layer whose inputs barely vary over time) is compared in
    absolute terms instead of amplifying rounding noise."""
    (g_outs, g_grads), (w_outs, w_grads) = got, want
    out_floor = FLOOR * max([w.abs().max().item() for w in w_outs if w is not None and w.numel()]
                            or [0.0])
    grad_floor = FLOOR * max([w.abs().max().item() for w in w_grads.values()
                              if w is not None and w.numel()] or [0.0])
    if len(g_outs) != len(w_outs):
        return math.inf, f"{len(g_outs)} outputs, expected {len(w_outs)}"
    worst, where = 0.0, ""
    for k, (g, w) in enumerate(zip(g_outs, w_outs)):
        e = normalised_error(g, w, masks[k] if k < len(masks) else None, out_floor)
        if e > worst:
            worst, where = e, f"output {k}"
    for name, w in w_grads.items():
        if name not in g_grads:
            return math.inf, f"no gradient for {name}"
        e = normalised_error(g_grads[name], w, floor=grad_floor)
        if e > worst:
            worst, where = e, f"gradient of {name}"
    return worst, where


class _Deadline:
    """SIGALRM-based time limit of a block (main thread, POSIX); None or 0: no limit.

    The exception is raised in Python code, so a long call into C++ or CUDA ends first; a
    compile run as a subprocess (torch.utils.cpp_extension, Triton) is interrupted."""

    def __init__(self, seconds: Optional[float], what: str):
        self.seconds, self.what = seconds, what
        self.armed = bool(seconds) and hasattr(signal, "setitimer")

    def _fire(self, signum, frame):
        raise ProviderTimeout(f"{self.what} ran past {self.seconds:g} s (the provider "
                              f"timeout): stopped, and not run again in later cases")

    def __enter__(self):
        if self.armed:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)
        return False


class CaseRunner:
    def __init__(self, device: torch.device, options: Options, budget: TimingBudget,
                 seed: int = 0, timer: str = "events", common: Optional[dict] = None,
                 on_provider: Optional[Callable[[str], None]] = None,
                 on_row: Optional[Callable[[dict], None]] = None,
                 provider_timeout_s: Optional[float] = None):
        self.device, self.options, self.budget = device, options, budget
        self.seed, self.timer, self.common = seed, timer, common or {}
        self.on_provider = on_provider or (lambda name: None)
        self.on_row = on_row or (lambda row: None)
        self.provider_timeout_s = provider_timeout_s
        self.baseline_ms: Dict[str, float] = {}   # case key -> the baseline's p50
        self.timed_out: set = set()               # providers stopped by the timeout

    def providers(self, case: Case) -> Tuple[Workload, List[Provider]]:
        """The case's workload and its providers after --providers, the baseline first."""
        wl: Workload = WORKLOADS[case.family]
        providers = wl.providers(case, self.device, self.options)
        if self.options.providers:
            rx = re.compile(self.options.providers)
            providers = [p for p in providers if rx.search(p.name) or p.name == wl.baseline]
        return wl, sorted(providers, key=lambda p: p.name != wl.baseline)

    def has_late(self, case: Case) -> bool:
        return any(p.late for p in self.providers(case)[1])

    def run(self, case: Case, late: Optional[bool] = None) -> List[dict]:
        """Rows of the case's providers: all of them (late=None), only the early ones
        (late=False: the baseline always among them) or only the late ones (late=True)."""
        wl, providers = self.providers(case)
        if late is not None:
            providers = [p for p in providers
                         if p.late == late and not (late and p.name == wl.baseline)]
        if not providers:
            return []
        gen = torch.Generator().manual_seed(self.seed * 1000003 + zlib.crc32(case.key.encode()))
        state = wl.make_state(case, gen)
        first = wl.make_inputs(case, gen)
        dtype = DTYPES[case.dtype]
        set_bytes = sum(t.numel() * (t.element_size() if not t.is_floating_point()
                                     else torch.empty((), dtype=dtype).element_size())
                        for t in first.values())
        n_sets = max(2, min(MAX_SETS, math.ceil(ROTATION_BYTES / max(set_bytes, 1))))
        sets = [first] + [wl.make_inputs(case, gen) for _ in range(n_sets - 1)]
        grads_needed = case.mode != "fwd"
        masks = wl.output_masks(case, first)

        ref = wl.reference(case, state, self.device)
        ref_inputs = to_device(first, torch.float64, self.device, wl.diff_inputs, grads_needed)
        with torch.no_grad():
            ref_outs = ref.call(ref_inputs)
        gys = []
        for k, o in enumerate(ref_outs):
            g = torch.randn(o.shape, generator=gen, dtype=torch.float64)
            if k < len(masks) and masks[k] is not None:
                g = g * masks[k].cpu()
            gys.append(g)
        want = evaluate(ref, ref_inputs, case.mode, wl.diff_inputs,
                        [g.to(self.device) for g in gys])

        rows = []
        for provider in providers:
            self.on_provider(provider.name)
            row = self._guarded_row(case, wl, provider, state, sets, gys, want, masks)
            if row["provider"] == wl.baseline and row["status"] == "ok":
                self.baseline_ms[case.key] = row["p50_ms"]
            base = self.baseline_ms.get(case.key)
            if row["status"] == "ok" and base and row["p50_ms"]:
                row["speedup"] = base / row["p50_ms"]
            rows.append(row)
            self.on_row(row)
        return rows

    def _guarded_row(self, case, wl, provider, state, sets, gys, want, masks) -> dict:
        """_provider_row under the provider timeout; a provider stopped once is not rerun."""
        if provider.name in self.timed_out:
            return make_row(status="error", note="not run: it ran past the provider timeout "
                            "in an earlier case", **self._base_row(case, wl, provider))
        try:
            with _Deadline(self.provider_timeout_s, provider.name):
                return self._provider_row(case, wl, provider, state, sets, gys, want, masks)
        except ProviderTimeout as exc:
            self.timed_out.add(provider.name)
            status, note = classify(exc)
            return make_row(status=status, note=note, **self._base_row(case, wl, provider))

    def _base_row(self, case, wl, provider) -> dict:
        return dict(provider=provider.name, case=case.family, mode=case.mode,
                    shape=case.shape_str, dtype=case.dtype, baseline=wl.baseline,
                    tol=tolerance(case.dtype, self.device),
                    timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **self.common)

    def _provider_row(self, case, wl, provider, state, sets, gys, want, masks) -> dict:
        dtype, device = DTYPES[case.dtype], self.device
        tol = tolerance(case.dtype, device)
        row = self._base_row(case, wl, provider)
        try:
            impl = provider.build(case, state, dtype, device)
        except Exception as exc:  # reported in the row: one provider never stops the suite
            status, note = classify(exc)
            return make_row(status=status, note=note, **row)
        grads_needed = case.mode != "fwd"
        dev_sets = [to_device(s, dtype, device, wl.diff_inputs, grads_needed) for s in sets]
        dev_gys = [g.to(device=device, dtype=dtype) for g in gys]
        check_mode = "fwd" if case.mode == "fwd" else "fwd+bwd"
        try:
            got = evaluate(impl, dev_sets[0], check_mode, wl.diff_inputs, dev_gys)
            err, where = compare(got, want, masks)
        except Exception as exc:
            status, note = classify(exc)
            return make_row(status=status, note=note, **row)
        row["max_err"] = err
        if not err <= tol:
            return make_row(status="wrong", note=f"max normalised error {err:.3g} in {where} "
                            f"(tolerance {tol:g}): not timed", **row)

        fn = self._timed_fn(impl, case.mode, wl.diff_inputs, dev_sets, dev_gys)
        try:
            peak, method = peak_memory_mb(lambda: fn(0), device)
            p20, p50, p80, reps = measure(fn, device, self.budget, self.timer)
        except Exception as exc:
            status, note = classify(exc)
            return make_row(status=status, note=note, **row)
        flops, nbytes = wl.flops(case), wl.bytes_moved(case)
        if case.mode != "fwd":
            flops = None if flops is None else 3 * flops
            saved = getattr(wl, "saved_bytes", lambda c: 0)(case)
            nbytes = None if nbytes is None else 2 * nbytes + 2 * saved
        seconds = p50 / 1e3
        return make_row(status="ok", p20_ms=p20, p50_ms=p50, p80_ms=p80, reps=reps,
                        peak_mb=peak, peak_mem_method=method,
                        tflops=None if flops is None else flops / seconds / 1e12,
                        gbps=None if nbytes is None else nbytes / seconds / 1e9,
                        note=impl.note, **row)

    @staticmethod
    def _timed_fn(impl: Impl, mode: str, diff, sets, gys) -> Callable[[int], object]:
        n = len(sets)
        if mode == "fwd":
            def fwd(i):
                with torch.no_grad():
                    return impl.call(sets[i % n])
            return fwd
        if mode == "train":
            return lambda i: impl.train_step(sets[i % n])
        targets = [grad_targets(impl, s, diff)[1] for s in sets]

        def fwd_bwd(i):
            return forward_backward(impl, sets[i % n], gys, targets[i % n])
        return fwd_bwd
