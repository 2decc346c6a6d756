"""`python -m bench --callgrind`: instructions per call of one case, counted by valgrind.

On a shared machine timings move by tens of per cent from run to run; an instruction count
does not, so a change to a kernel can be judged on it while the machine is busy. For the first
case that --filter selects and each provider (after --providers), two child processes run the
provider under `valgrind --tool=callgrind`, one making 1 call after a warm-up call and one
making 1 + `calls` calls; the difference of their instruction counts (Ir), divided by `calls`,
is the count of one call, free of the start-up (import, build, warm-up).

Counts are for one thread (torch.set_num_threads(1): under valgrind threads run one at a time
and a waiting thread's spinning would be counted) and for the instruction set valgrind
emulates: AVX2 at most, so the AVX2 kernels of lstm_fused and of oneDNN are the ones counted,
not the AVX-512 ones a timed run uses. The inputs are not checked here (a timed run checks
them); nothing is written to bench/results/.

    python -m bench --callgrind --filter '^lstm/fwd/B=16,T=50,I=128,H=128,L=1,D=2'
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

import torch

from .cases import Case, parse_shape

CALLS = 2  # calls counted beyond the reference run's


def _case_from_key(key: str) -> Case:
    family, mode, shape, dtype = key.split("/")
    return Case(family, mode, tuple(parse_shape(shape).items()), dtype)


def _total_ir(out_file: str) -> int:
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out_file}")


def count(case: Case, provider: str, calls: int = CALLS, timeout_s: float = 1800) -> float:
    """Instructions (Ir) of one call of `provider` on `case`, on 1 thread, under callgrind."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 1 + calls):
            out = os.path.join(tmp, f"callgrind.{n}.out")
            cmd = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.callgrind",
                "--child",
                case.key,
                provider,
                str(n),
            ]
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{provider} under callgrind failed: {proc.stderr.strip()[-500:]}"
                )
            totals.append(_total_ir(out))
    return (totals[1] - totals[0]) / calls


def run(cases: List[Case], providers: Optional[str]) -> int:
    """Prints the Ir per call of each provider on the first case; 0 on success."""
    from .runner import CaseRunner
    from .timing import TimingBudget
    from .workloads.base import Options

    case = cases[0]
    runner = CaseRunner(torch.device("cpu"), Options(providers=providers), TimingBudget())
    _, provs = runner.providers(case)
    print(
        f"callgrind, 1 thread, Ir per call (valgrind's instruction set: AVX2 at most): {case.key}",
        flush=True,
    )
    failed = 0
    for p in provs:
        try:
            ir = count(case, p.name)
            print(f"  {p.name:32s} {ir / 1e6:12.2f} M Ir", flush=True)
        except Exception as exc:  # reported, the other providers still run
            failed += 1
            print(f"  {p.name:32s} failed: {exc}", flush=True)
    return 1 if failed else 0


def _child(key: str, provider: str, n_calls: int) -> None:
    """Builds `provider` for the case and makes one warm-up call and n_calls - 1 more."""
    from .runner import CaseRunner, to_device
    from .timing import TimingBudget
    from .workloads.base import DTYPES, Options
    import zlib

    torch.set_num_threads(1)
    case = _case_from_key(key)
    runner = CaseRunner(torch.device("cpu"), Options(), TimingBudget())
    wl, provs = runner.providers(case)
    (prov,) = [p for p in provs if p.name == provider]
    gen = torch.Generator().manual_seed(zlib.crc32(case.key.encode()))
    state = wl.make_state(case, gen)
    inputs = wl.make_inputs(case, gen)
    dtype = DTYPES[case.dtype]
    grads = case.mode != "fwd"
    impl = prov.build(case, state, dtype, torch.device("cpu"))
    sets = [to_device(inputs, dtype, torch.device("cpu"), wl.diff_inputs, grads)]
    gys = None
    if grads:
        with torch.no_grad():
            outs = impl.call(sets[0])
        gys = [torch.randn(o.shape, generator=gen).to(dtype) for o in outs]
    fn = runner._timed_fn(impl, case.mode, wl.diff_inputs, sets, gys)
    for i in range(n_calls):
        fn(i)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3, metavar=("CASE", "PROVIDER", "CALLS"))
    a = ap.parse_args()
    _child(a.child[0], a.child[1], int(a.child[2]))
