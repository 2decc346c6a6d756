"""`python -m bench`: time lstm_fused against its peers and write the results.

    python -m bench                      # --quick: a few minutes on a 2-core CPU
    python -m bench --full               # the whole grid
    python -m bench --filter 'lstm/'     # cases whose family/mode/shape/dtype match a regex
    python -m bench --providers 'cpu|nn' # providers whose name matches (the baseline is kept)
    python -m bench --list               # print the cases and exit

Results: bench/results/<device>/<UTC time>_<preset>.{csv,json} (or --out DIR); plots from them
with `python -m bench.plot`. bench/README.md says how to read them.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from . import env
from .cases import PRESETS, select
from .report import add_speedups, table, write
from .timing import TimingBudget
from .workloads.base import Options

RESULTS = Path(__file__).resolve().parent / "results"

BUDGETS = {
    "quick": TimingBudget(warmup_s=0.1, warmup_calls=2, min_reps=10, min_time_s=0.5,
                          max_time_s=2.0),
    "smoke": TimingBudget(warmup_s=0.0, warmup_calls=1, min_reps=3, min_time_s=0.0,
                          max_time_s=0.05),
    "full": TimingBudget(warmup_s=0.5, warmup_calls=3, min_reps=25, min_time_s=2.0,
                         max_time_s=10.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="the default: a few minutes on a 2-core CPU")
    preset.add_argument("--full", dest="preset", action="store_const", const="full",
                        help="every case of the grid (sweeps over B, T, H, L, D and dtypes)")
    preset.add_argument("--smoke", dest="preset", action="store_const", const="smoke",
                        help="tiny shapes of every case, minimal timing: checks the suite works")
    p.set_defaults(preset="quick")
    p.add_argument("--filter", default=None, help="regex on family/mode/shape/dtype")
    p.add_argument("--providers", default=None, help="regex on provider names")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default=None, help="results folder (default bench/results/<device>)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="time torch.compile of the reference (default: on with --full, and "
                        "with --quick on CUDA; compiling takes minutes on a small CPU)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--timer", choices=("events", "do_bench"), default="events",
                   help="on CUDA: CUDA events per call (default) or triton.testing.do_bench")
    p.add_argument("--reps", type=int, default=None, help="minimum timed calls per provider")
    p.add_argument("--min-time", type=float, default=None, help="minimum timed seconds")
    p.add_argument("--max-time", type=float, default=None, help="cap on timed seconds")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads on the CPU (default: torch's choice); on a "
                        "machine shared with other work, 1 thread gives steadier timings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="print the selected cases and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = PRESETS[args.preset](device.type)
    cases = select(cases, args.filter)
    if args.list:
        for c in cases:
            print(c.key)
        return 0
    if not cases:
        print(f"no case matches --filter {args.filter!r}", file=sys.stderr)
        return 2
    budget = BUDGETS[args.preset]
    if args.reps is not None:
        budget.min_reps = args.reps
    if args.min_time is not None:
        budget.min_time_s = args.min_time
    if args.max_time is not None:
        budget.max_time_s = args.max_time
    compile_ref = args.compile if args.compile is not None else (
        args.preset == "full" or device.type == "cuda")
    options = Options(compile=compile_ref, providers=args.providers)

    import lstm_fused
    from .runner import CaseRunner

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    common = dict(device=env.device_name(device), git_commit=env.git_commit(),
                  threads=torch.get_num_threads() if device.type == "cpu" else None,
                  **env.versions())
    meta = dict(device=common["device"], device_slug=env.device_slug(device), preset=args.preset,
                argv=sys.argv[1:] if argv is None else list(argv), started=stamp,
                filter=args.filter, providers=args.providers, compile=compile_ref,
                timer=args.timer if device.type == "cuda" else "perf_counter",
                budget=vars(budget), seed=args.seed, python=platform.python_version(),
                platform=platform.platform(), lstm_fused_backends=lstm_fused.available_backends(),
                load_average_start=env.load_average(), **{k: v for k, v in common.items()
                                                         if k != "device"})
    out_dir = Path(args.out) if args.out else RESULTS / meta["device_slug"]

    try:
        from tqdm import tqdm
        bar = tqdm(total=len(cases), disable=args.no_progress, file=sys.stderr, unit="case",
                   dynamic_ncols=True)
    except ImportError:  # tqdm is in tools/setup.sh; the suite still runs without it
        bar = None
    runner = CaseRunner(device, options, budget, seed=args.seed, timer=args.timer, common=common,
                        on_provider=(lambda name: bar.set_postfix_str(name)) if bar else None)
    rows = []
    t0 = time.perf_counter()
    for case in cases:
        if bar:
            bar.set_description(f"{case.family} {case.mode} {case.dtype}")
        rows.extend(runner.run(case))
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    add_speedups(rows)
    meta.update(seconds=round(time.perf_counter() - t0, 1), load_average_end=env.load_average())
    paths = write(rows, meta, out_dir, f"{stamp}_{args.preset}")
    print(f"lstm_fused benchmark on {meta['device']} | torch {common['torch_version']} | "
          f"commit {common['git_commit']} | {args.preset} | {meta['seconds']} s | "
          f"load {meta['load_average_start']} -> {meta['load_average_end']}")
    print(table(rows))
    print(f"\nwrote {paths['csv']} and {paths['json']}")
    bad = [r for r in rows if r["status"] in ("wrong", "error")]
    if bad:
        print(f"{len(bad)} provider/case pairs were wrong or raised: see the status column",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
