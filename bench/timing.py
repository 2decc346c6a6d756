"""Timing and peak memory of one callable, or of several interleaved call by call.

CPU: time.perf_counter around each call after a warm-up, repeated until both a minimum count
and a minimum time are reached (or a time cap), then the 20th, 50th and 80th percentiles.
CUDA: one pair of CUDA events around each call, the L2 cache flushed between calls (outside the
timed region), or triton.testing.do_bench with timer="do_bench".
time_interleaved times several callables in turns of one call each, under the same budget
(counted in turns), for `python -m bench --interleaved`.
The callable takes the call index so it can rotate its inputs (caches do not flatter).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch


@dataclass
class TimingBudget:
    warmup_s: float = 0.2  # warm-up time (at least warmup_calls calls)
    warmup_calls: int = 2
    min_reps: int = 10
    min_time_s: float = 0.5
    max_time_s: float = 3.0  # stop here once at least 3 calls are timed
    max_reps: int = 1000


def percentiles(samples_ms: List[float]) -> Tuple[float, float, float]:
    """p20, p50, p80 (linear interpolation between order statistics)."""
    if len(samples_ms) == 1:
        return samples_ms[0], samples_ms[0], samples_ms[0]
    q = statistics.quantiles(samples_ms, n=10, method="inclusive")  # deciles
    return q[1], statistics.median(samples_ms), q[7]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm_up(call: Callable[[int], object], budget: TimingBudget) -> int:
    """Untimed call(i), i = 0, 1, ..., until both the warm-up count and time are reached;
    returns the next i."""
    i = 0
    start = time.perf_counter()
    while i < budget.warmup_calls or time.perf_counter() - start < budget.warmup_s:
        call(i)
        i += 1
    return i


def _timed_until_done(timed: Callable[[int], None], first: int, budget: TimingBudget) -> int:
    """timed(i), i = first, first + 1, ..., until the budget says stop: at least min_reps
    calls and min_time_s, or max_time_s once 3 calls are in, or max_reps. Returns the count."""
    n = 0
    begin = time.perf_counter()
    while True:
        timed(first + n)
        n += 1
        elapsed = time.perf_counter() - begin
        if n >= budget.max_reps:
            return n
        if n >= budget.min_reps and elapsed >= budget.min_time_s:
            return n
        if n >= 3 and elapsed >= budget.max_time_s:
            return n


def call_timer(device: torch.device) -> Callable[[Callable[[int], object], int], float]:
    """timer(fn, i): the time in ms of the one call fn(i). CPU: time.perf_counter around it.
    CUDA: a pair of CUDA events around it, the L2 cache flushed (a 256 MB write) before it,
    outside the timed region."""
    if device.type != "cuda":

        def wall_ms(fn, i):
            t0 = time.perf_counter()
            fn(i)
            return (time.perf_counter() - t0) * 1e3

        return wall_ms
    flush = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device=device)

    def event_ms(fn, i):
        flush.zero_()
        ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ev0.record()
        fn(i)
        ev1.record()
        ev1.synchronize()
        return ev0.elapsed_time(ev1)

    return event_ms


def time_calls(
    fn: Callable[[int], object], budget: TimingBudget, device: torch.device
) -> List[float]:
    """Per-call times in ms of fn(i), i = 0, 1, ... (the warm-up calls included in i)."""
    timer = call_timer(device)
    first = _warm_up(fn, budget)
    _sync(device)
    samples: List[float] = []
    _timed_until_done(lambda i: samples.append(timer(fn, i)), first, budget)
    return samples


def time_interleaved(
    fns: Dict[str, Callable[[int], object]], budget: TimingBudget, device: torch.device
) -> Dict[str, List[float]]:
    """Per-call times in ms of each fn, timed call by call in turn (one round: one call of
    each, in order), so that a slow spell of a shared machine hits them all alike. The
    budget counts rounds: warm-up rounds, then timed rounds until the budget says stop."""
    timer = call_timer(device)

    def warm_round(i):
        for fn in fns.values():
            fn(i)

    samples: Dict[str, List[float]] = {name: [] for name in fns}

    def timed_round(i):
        for name, fn in fns.items():
            samples[name].append(timer(fn, i))

    first = _warm_up(warm_round, budget)
    _sync(device)
    _timed_until_done(timed_round, first, budget)
    return samples


def time_do_bench(
    fn: Callable[[int], object], budget: TimingBudget
) -> Tuple[Tuple[float, float, float], Optional[int]]:
    """triton.testing.do_bench (it flushes L2 itself); returns (p20, p50, p80), reps unknown."""
    from triton.testing import do_bench

    counter = [0]

    def call():
        fn(counter[0])
        counter[0] += 1

    q = do_bench(
        call,
        warmup=max(1, int(budget.warmup_s * 1e3)),
        rep=max(1, int(budget.min_time_s * 1e3)),
        quantiles=[0.2, 0.5, 0.8],
    )
    return (q[0], q[1], q[2]), None


def measure(
    fn: Callable[[int], object], device: torch.device, budget: TimingBudget, timer: str = "events"
) -> Tuple[float, float, float, Optional[int]]:
    """(p20, p50, p80 in ms, number of timed calls) of fn on `device`."""
    if device.type == "cuda" and timer == "do_bench":
        (p20, p50, p80), reps = time_do_bench(fn, budget)
        return p20, p50, p80, reps
    samples = time_calls(fn, budget, device)
    p20, p50, p80 = percentiles(samples)
    return p20, p50, p80, len(samples)


# ---- peak memory -------------------------------------------------------------------------


def _rss_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the peak resident size (VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS so that the peak counts this call's pages."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> Tuple[Optional[float], str]:
    """Memory one call of fn needs above what was resident before it, in MB, and the method.

    CUDA: torch.cuda.max_memory_allocated - memory_allocated before the call (exact, tensors
    only). CPU: peak resident set size (VmHWM) - resident size before the call, after a
    malloc_trim (approximate: it counts pages touched, includes allocator effects, and is blank
    where /proc/self/clear_refs cannot be written).
    """
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak / 2**20, "cuda.max_memory_allocated"
    _malloc_trim()
    if not _reset_rss_peak():
        return None, "unavailable (no /proc/self/clear_refs)"
    base = _rss_kb("VmRSS")
    out = fn()
    peak = _rss_kb("VmHWM")
    del out
    if base is None or peak is None:
        return None, "unavailable (no /proc/self/status)"
    return max(0, peak - base) / 1024, "rss_peak_delta"
