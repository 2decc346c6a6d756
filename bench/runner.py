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

run_interleaved (`python -m bench --interleaved MODE`) builds and checks a case's providers
the same way, then times those that passed together, call by call in turn.
"""

from __future__ import annotations

import math
import re
import signal
import statistics
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .cases import Case
from .report import make_row
from .timing import TimingBudget, measure, peak_memory_mb, percentiles, time_interleaved
from .workloads import WORKLOADS
from .workloads.base import DTYPES, Absent, Impl, Options, Provider, Unsupported, Workload

# Normalised tolerance of the check: max |got - want| / max |want| over every compared tensor.
# float32 on CUDA allows TF32 (cuDNN uses it by default). A wrong answer is O(0.1) or more.
TOLERANCE = {"float64": 1e-8, "float32": 2e-4, "float16": 3e-2, "bfloat16": 1e-1}
CUDA_FLOAT32_TOLERANCE = 1e-2
FLOOR = 1e-3  # see compare()
ROTATION_BYTES = 64 * 2**20  # enough input sets to exceed a last-level cache of 64 MB ...
MAX_SETS = 8  # ... but at most this many


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


def to_device(
    inputs: Dict[str, torch.Tensor],
    dtype: torch.dtype,
    device: torch.device,
    diff: Tuple[str, ...],
    requires_grad: bool,
) -> Dict[str, torch.Tensor]:
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
    grads = torch.autograd.grad(
        [o for o, _ in pairs], targets, [g for _, g in pairs], allow_unused=True
    )
    return outs, grads


def evaluate(impl: Impl, inputs, mode: str, diff, gys=None):
    """(outputs, {target name: gradient}) of one checked call."""
    if mode == "fwd":
        with torch.no_grad():
            return impl.call(inputs), {}
    names, targets = grad_targets(impl, inputs, diff)
    outs, grads = forward_backward(impl, inputs, gys, targets)
    return outs, dict(zip(names, grads))


def normalised_error(
    got: Optional[torch.Tensor],
    want: Optional[torch.Tensor],
    mask: Optional[torch.Tensor] = None,
    floor: float = 1e-12,
) -> float:
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
    out_floor = FLOOR * max(
        [w.abs().max().item() for w in w_outs if w is not None and w.numel()] or [0.0]
    )
    grad_floor = FLOOR * max(
        [w.abs().max().item() for w in w_grads.values() if w is not None and w.numel()] or [0.0]
    )
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
        raise ProviderTimeout(
            f"{self.what} ran past {self.seconds:g} s (the provider "
            f"timeout): stopped, and not run again in later cases"
        )

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


@dataclass
class Prepared:
    """What every provider of one case is built from and checked against."""

    wl: Workload
    state: Dict[str, torch.Tensor]  # canonical float64 parameters
    sets: List[Dict[str, torch.Tensor]]  # input sets (float64 / int64, CPU), rotated
    gys: List[torch.Tensor]  # one fixed random gradient per output
    want: tuple  # the reference's (outputs, {target: gradient})
    masks: List[Optional[torch.Tensor]]  # per output, the elements compared


@dataclass
class Checked:
    """A provider that passed the check: its row so far and its timed callable."""

    row: dict
    impl: Impl
    fn: Callable[[int], object]


class CaseRunner:
    def __init__(
        self,
        device: torch.device,
        options: Options,
        budget: TimingBudget,
        seed: int = 0,
        timer: str = "events",
        common: Optional[dict] = None,
        on_provider: Optional[Callable[[str], None]] = None,
        on_row: Optional[Callable[[dict], None]] = None,
        provider_timeout_s: Optional[float] = None,
    ):
        self.device, self.options, self.budget = device, options, budget
        self.seed, self.timer, self.common = seed, timer, common or {}
        self.on_provider = on_provider or (lambda name: None)
        self.on_row = on_row or (lambda row: None)
        self.provider_timeout_s = provider_timeout_s
        self.baseline_ms: Dict[str, float] = {}  # case key -> the baseline's p50
        self.timed_out: set = set()  # providers stopped by the timeout

    def select(self, wl: Workload, providers: List[Provider]) -> List[Provider]:
        """`providers` after --providers (the baseline kept), the baseline first."""
        if self.options.providers:
            rx = re.compile(self.options.providers)
            providers = [p for p in providers if rx.search(p.name) or p.name == wl.baseline]
        return sorted(providers, key=lambda p: p.name != wl.baseline)

    def providers(self, case: Case) -> Tuple[Workload, List[Provider]]:
        """The case's workload and its providers after --providers, the baseline first."""
        wl: Workload = WORKLOADS[case.family]
        return wl, self.select(wl, wl.providers(case, self.device, self.options))

    def has_late(self, case: Case) -> bool:
        return any(p.late for p in self.providers(case)[1])

    def run(self, case: Case, late: Optional[bool] = None) -> List[dict]:
        """Rows of the case's providers, each timed on its own: all of them (late=None), only
        the early ones (late=False: the baseline always among them) or only the late ones
        (late=True)."""
        wl, providers = self.providers(case)
        if late is not None:
            providers = [
                p for p in providers if p.late == late and not (late and p.name == wl.baseline)
            ]
        if not providers:
            return []
        prep = self.prepare(case, wl)
        rows = []
        for provider in providers:
            self.on_provider(provider.name)
            row = self._guarded(
                provider, case, wl, lambda p=provider: self._timed_row(case, prep, p)
            )
            rows.append(self._finish(case, wl, row))
        return rows

    def run_interleaved(
        self,
        case: Case,
        wl: Workload,
        providers: List[Provider],
        references: Optional[Dict[str, Tuple[Callable, str]]] = None,
    ) -> List[dict]:
        """Rows of `providers` (after --providers) on `case` of workload `wl`: each is built
        and checked as in run(), then all that passed are timed together, call by call in turn
        (bench.timing.time_interleaved), so that a slow spell of a shared machine hits them
        all alike. The rows come when the case is done. The provider timeout bounds each
        provider's build and check; the timing together is bounded by the budget.
        references: {name: (fn(i), note)}, reference points (a roofline) timed with them and
        given rows of their own, unchecked (they compute no answer of the case)."""
        providers = self.select(wl, providers)
        if not providers:
            return []
        prep = self.prepare(case, wl)
        done: Dict[str, dict] = {}
        checked: Dict[str, Checked] = {}
        for name, (fn, note) in (references or {}).items():
            row = self._base_row(case, wl, Provider(name, None))
            checked[name] = Checked(row, Impl(fn, note=note), fn)
        for provider in providers:
            self.on_provider(provider.name)
            got = self._guarded(provider, case, wl, lambda p=provider: self._check(case, prep, p))
            if isinstance(got, Checked):
                checked[provider.name] = got
            else:
                done[provider.name] = got
        if checked:
            names = ", ".join(checked)
            try:
                samples = time_interleaved(
                    {n: c.fn for n, c in checked.items()}, self.budget, self.device
                )
            except Exception as exc:  # one call raised: no provider of the case is timed
                status, note = classify(exc)
                samples = None
                for n, c in checked.items():
                    done[n] = make_row(
                        status=status, note=f"{note} (timed interleaved with {names})", **c.row
                    )
            if samples is not None:
                for n, c in checked.items():
                    others = ", ".join(o for o in checked if o != n) or "nothing else"
                    done[n] = self._ok_row(
                        case,
                        wl,
                        c,
                        *percentiles(samples[n]),
                        len(samples[n]),
                        interleaved_with=others,
                        mean=statistics.fmean(samples[n]),
                    )
        for ref in references or {}:  # each row's rate as a fraction of the reference's
            ref_ms = done[ref]["p50_ms"] if done[ref]["status"] == "ok" else None
            for p in providers:
                row = done[p.name]
                if ref_ms and row["status"] == "ok" and row["p50_ms"]:
                    row["note"] = "; ".join(
                        filter(None, [row["note"], f"{ref_ms / row['p50_ms']:.2f} of {ref}'s rate"])
                    )
        return [
            self._finish(case, wl, done[n])
            for n in [p.name for p in providers] + list(references or {})
        ]

    def _finish(self, case: Case, wl: Workload, row: dict) -> dict:
        """The row with its speedup over the case's baseline, handed to on_row."""
        if row["provider"] == wl.baseline and row["status"] == "ok":
            self.baseline_ms[case.key] = row["p50_ms"]
        base = self.baseline_ms.get(case.key)
        if row["status"] == "ok" and base and row["p50_ms"]:
            row["speedup"] = base / row["p50_ms"]
        self.on_row(row)
        return row

    def prepare(self, case: Case, wl: Workload) -> Prepared:
        """The case's state, input sets, output gradients and the float64 reference's answer."""
        gen = torch.Generator().manual_seed(self.seed * 1000003 + zlib.crc32(case.key.encode()))
        state = wl.make_state(case, gen)
        first = wl.make_inputs(case, gen)
        dtype = DTYPES[case.dtype]
        set_bytes = sum(
            t.numel()
            * (
                t.element_size()
                if not t.is_floating_point()
                else torch.empty((), dtype=dtype).element_size()
            )
            for t in first.values()
        )
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
        want = evaluate(
            ref, ref_inputs, case.mode, wl.diff_inputs, [g.to(self.device) for g in gys]
        )
        return Prepared(wl, state, sets, gys, want, masks)

    def _guarded(self, provider: Provider, case: Case, wl: Workload, work):
        """work() under the provider timeout; a provider stopped once is not rerun."""
        if provider.name in self.timed_out:
            return make_row(
                status="error",
                note="not run: it ran past the provider timeout in an earlier case",
                **self._base_row(case, wl, provider),
            )
        try:
            with _Deadline(self.provider_timeout_s, provider.name):
                return work()
        except ProviderTimeout as exc:
            self.timed_out.add(provider.name)
            status, note = classify(exc)
            return make_row(status=status, note=note, **self._base_row(case, wl, provider))

    def _base_row(self, case, wl, provider) -> dict:
        return dict(
            provider=provider.name,
            case=case.family,
            mode=case.mode,
            shape=case.shape_str,
            dtype=case.dtype,
            baseline=wl.baseline,
            tol=tolerance(case.dtype, self.device),
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.common,
        )

    def _check(self, case: Case, prep: Prepared, provider: Provider):
        """Build the provider, check it against the reference, measure its peak memory:
        a Checked to time, or the finished row (wrong, absent, unsupported, error)."""
        wl, dtype, device = prep.wl, DTYPES[case.dtype], self.device
        tol = tolerance(case.dtype, device)
        row = self._base_row(case, wl, provider)
        try:
            impl = provider.build(case, prep.state, dtype, device)
        except Exception as exc:  # reported in the row: one provider never stops the suite
            status, note = classify(exc)
            return make_row(status=status, note=note, **row)
        grads_needed = case.mode != "fwd"
        dev_sets = [to_device(s, dtype, device, wl.diff_inputs, grads_needed) for s in prep.sets]
        dev_gys = [g.to(device=device, dtype=dtype) for g in prep.gys]
        check_mode = "fwd" if case.mode == "fwd" else "fwd+bwd"
        try:
            with impl.context():
                got = evaluate(impl, dev_sets[0], check_mode, wl.diff_inputs, dev_gys)
            err, where = compare(got, prep.want, prep.masks)
        except Exception as exc:
            status, note = classify(exc)
            return make_row(status=status, note=note, **row)
        row["max_err"] = err
        if impl.tolerance is not None:  # a provider that computes another function on purpose
            tol = row["tol"] = impl.tolerance
        if not err <= tol:
            return make_row(
                status="wrong",
                note=f"max normalised error {err:.3g} in {where} (tolerance {tol:g}): not timed",
                **row,
            )
        fn = self._timed_fn(impl, case.mode, wl.diff_inputs, dev_sets, dev_gys)
        try:
            if impl.before_timing is not None:
                impl.before_timing()
            row["peak_mb"], row["peak_mem_method"] = peak_memory_mb(lambda: fn(0), device)
        except Exception as exc:
            status, note = classify(exc)
            return make_row(status=status, note=note, **row)
        return Checked(row, impl, fn)

    def _timed_row(self, case: Case, prep: Prepared, provider: Provider) -> dict:
        """The provider's row, checked and timed on its own."""
        got = self._check(case, prep, provider)
        if not isinstance(got, Checked):
            return got
        try:
            p20, p50, p80, reps = measure(got.fn, self.device, self.budget, self.timer)
        except Exception as exc:
            status, note = classify(exc)
            return make_row(status=status, note=note, **got.row)
        return self._ok_row(case, prep.wl, got, p20, p50, p80, reps)

    @staticmethod
    def _ok_row(
        case: Case,
        wl: Workload,
        checked: Checked,
        p20,
        p50,
        p80,
        reps,
        interleaved_with: str = "",
        mean=None,
    ) -> dict:
        """An ok row. mean (interleaved runs): the mean time, which on a busy machine does not
        depend, as the percentiles can, on where each provider's calls fall in the scheduler's
        time slices (the providers' calls take turns in a fixed order)."""
        flops, nbytes = wl.flops(case), wl.bytes_moved(case)
        if case.mode != "fwd":
            flops = None if flops is None else 3 * flops
            saved = getattr(wl, "saved_bytes", lambda c: 0)(case)
            nbytes = None if nbytes is None else 2 * nbytes + 2 * saved
        seconds = p50 / 1e3
        note = checked.impl.note
        if interleaved_with:
            note = "; ".join(
                filter(None, [note, f"interleaved call by call with {interleaved_with}"])
            )
        return make_row(
            **{**checked.row, "note": note},
            status="ok",
            p20_ms=p20,
            p50_ms=p50,
            p80_ms=p80,
            mean_ms=mean,
            reps=reps,
            tflops=None if flops is None else flops / seconds / 1e12,
            gbps=None if nbytes is None else nbytes / seconds / 1e9,
        )

    @staticmethod
    def _timed_fn(impl: Impl, mode: str, diff, sets, gys) -> Callable[[int], object]:
        """fn(i): one call on input set i (mod the number of sets), inside impl.context()."""
        n = len(sets)
        if mode == "fwd":

            def fwd(i):
                with impl.context(), torch.no_grad():
                    return impl.call(sets[i % n])

            return fwd
        if mode == "train":

            def train(i):
                with impl.context():
                    return impl.train_step(sets[i % n])

            return train
        targets = [grad_targets(impl, s, diff)[1] for s in sets]

        def fwd_bwd(i):
            with impl.context():
                return forward_backward(impl, sets[i % n], gys, targets[i % n])

        return fwd_bwd
