"""`python -m bench`: time lstm_fused against its peers and write the results.

    python -m bench                      # --quick: a few minutes on a 2-core CPU
    python -m bench --full               # the whole grid
    python -m bench --headline           # the headline LSTM shape alone (B=16, T=1024, I=H=768)
    python -m bench --filter 'lstm/'     # cases whose family/mode/shape/dtype match a regex
    python -m bench --providers 'cpu|nn' # providers whose name matches (the baseline is kept)
    python -m bench --list               # print the cases and exit
    python -m bench --interleaved cpu_loops   # a few cases, providers timed call by call in turn
    python -m bench --interleaved threads --load 2   # beside 2 spinning processes
    python -m bench --callgrind --filter 'lstm/fwd/'  # instructions per call (valgrind)

Results: bench/results/<device>/<UTC time>_<preset>.{csv,json} (<UTC time>_<mode> for
--interleaved; or --out DIR, --name STEM),
written row by row as they are measured; plots from them with `python -m bench.plot`.
bench/README.md says how to read them.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch

from . import env
from .cases import PRESETS, select
from .interleaved import MODES
from .load import spinning_load
from .report import ResultWriter, add_speedups, table
from .timing import TimingBudget
from .workloads.base import Options

RESULTS = Path(__file__).resolve().parent / "results"

BUDGETS = {
    # --quick: the budget that keeps the whole grid within about 2 minutes on 2 busy cores.
    "quick": TimingBudget(
        warmup_s=0.05, warmup_calls=1, min_reps=5, min_time_s=0.25, max_time_s=1.0
    ),
    "smoke": TimingBudget(
        warmup_s=0.0, warmup_calls=1, min_reps=3, min_time_s=0.0, max_time_s=0.05
    ),
    "headline": TimingBudget(
        warmup_s=0.2, warmup_calls=2, min_reps=10, min_time_s=1.0, max_time_s=3.0
    ),
    "full": TimingBudget(
        warmup_s=0.5, warmup_calls=3, min_reps=25, min_time_s=2.0, max_time_s=10.0
    ),
    # --interleaved: counted in rounds (one call of each provider), so a round of the
    # LSTM(256, 512, num_layers=2) case's fwd+bwd takes about 1.6 s on a 2-core CPU.
    "interleaved": TimingBudget(
        warmup_s=0.5, warmup_calls=3, min_reps=15, min_time_s=2.0, max_time_s=60.0
    ),
}


# What --quick times when --providers is not given: every provider but lstm_fused:reference.
QUICK_PROVIDERS = r"^(?!lstm_fused:reference$)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = p.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="the default: a few minutes on a 2-core CPU",
    )
    preset.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="every case of the grid (sweeps over B, T, H, L, D and dtypes)",
    )
    preset.add_argument(
        "--smoke",
        dest="preset",
        action="store_const",
        const="smoke",
        help="tiny shapes of every case, minimal timing: checks the suite works",
    )
    preset.add_argument(
        "--headline",
        dest="preset",
        action="store_const",
        const="headline",
        help="the headline LSTM (B=16, T=1024, I=H=768; bf16 and fp16 on CUDA)",
    )
    p.set_defaults(preset="quick")
    p.add_argument("--filter", default=None, help="regex on family/mode/shape/dtype")
    p.add_argument("--providers", default=None, help="regex on provider names")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default=None, help="results folder (default bench/results/<device>)")
    p.add_argument(
        "--name", default=None, help="file stem of the results (default <UTC time>_<preset>)"
    )
    p.add_argument(
        "--compile",
        dest="compile",
        action="store_true",
        default=None,
        help="time torch.compile of the reference (default: on with --full only; "
        "its compiles take minutes)",
    )
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument(
        "--timer",
        choices=("events", "do_bench"),
        default="events",
        help="on CUDA: CUDA events per call (default) or triton.testing.do_bench",
    )
    p.add_argument("--reps", type=int, default=None, help="minimum timed calls per provider")
    p.add_argument("--min-time", type=float, default=None, help="minimum timed seconds")
    p.add_argument("--max-time", type=float, default=None, help="cap on timed seconds")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads on the CPU (default: torch's choice); on a "
        "machine shared with other work, 1 thread gives steadier timings",
    )
    p.add_argument(
        "--provider-timeout",
        type=float,
        default=None,
        metavar="S",
        help="stop a provider whose build, check and timing of one case take over "
        "S seconds (reported as an error, not run in later cases)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="print the selected cases and exit")
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per call (valgrind's callgrind, 1 thread) of each "
        "provider on the first selected case, instead of timings",
    )
    p.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="run beside N processes that spin on the CPU for the whole run "
        "(stopped at its end, also on an error or Ctrl-C): a busy machine",
    )
    p.add_argument(
        "--interleaved",
        choices=sorted(MODES),
        default=None,
        metavar="MODE",
        help="time the providers of a few cases call by call in turn, one call of "
        f"each at a time: {', '.join(MODES)} (bench/interleaved.py says what "
        "each compares); with --smoke, tiny shapes",
    )
    args = p.parse_args(argv)
    if args.interleaved and args.preset not in ("quick", "smoke", "full"):
        p.error(f"--interleaved takes --smoke, --full or no preset, not --{args.preset}")
    mode = MODES.get(args.interleaved)
    if mode is not None and args.preset == "full" and mode.full_cases is None:
        p.error(f"--interleaved {mode.name} has no --full grid")
    return args


def _device(args) -> torch.device:
    """--device, else cuda when available (and the interleaved mode runs there), else cpu."""
    if args.device:
        return torch.device(args.device)
    mode = MODES.get(args.interleaved)
    if torch.cuda.is_available() and (mode is None or "cuda" in mode.devices):
        return torch.device("cuda")
    return torch.device("cpu")


def main(argv=None) -> int:
    args = parse_args(argv)
    with spinning_load(args.load):
        return _main(args, argv)


def _main(args, argv) -> int:
    device = _device(args)
    mode = MODES.get(args.interleaved)
    if mode is not None and device.type not in mode.devices:
        print(
            f"--interleaved {mode.name} runs on {' or '.join(mode.devices)}, not {device.type}",
            file=sys.stderr,
        )
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if mode is None:
        cases = PRESETS[args.preset](device.type)
    elif args.preset == "smoke":
        cases = mode.smoke_cases(device.type)
    elif args.preset == "full":
        cases = mode.full_cases(device.type)
    else:
        cases = mode.cases(device.type)
    cases = select(cases, args.filter)
    if args.list:
        for c in cases:
            print(c.key)
        return 0
    if not cases:
        print(f"no case matches --filter {args.filter!r}", file=sys.stderr)
        return 2
    if args.callgrind:
        from .callgrind import run as run_callgrind

        return run_callgrind(cases, args.providers)
    budget_name = "interleaved" if mode is not None and args.preset != "smoke" else args.preset
    budget = dataclasses.replace(BUDGETS[budget_name])  # a copy: the switches below change it
    if args.reps is not None:
        budget.min_reps = args.reps
    if args.min_time is not None:
        budget.min_time_s = args.min_time
    if args.max_time is not None:
        budget.max_time_s = args.max_time
    # torch.compile of the reference only when asked for or with --full (not interleaved): its
    # compiles take minutes, which a --quick run (or a lent GPU's few minutes) cannot spend.
    compile_ref = (
        args.compile if args.compile is not None else args.preset == "full" and mode is None
    )
    # --quick times no float64-speed reference backend (it checks every provider all the same).
    providers = args.providers
    if providers is None and args.preset == "quick" and mode is None:
        providers = QUICK_PROVIDERS
    options = Options(compile=compile_ref, providers=providers)

    import lstm_fused
    from .runner import CaseRunner

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    common = dict(
        device=env.device_name(device),
        git_commit=env.git_commit(),
        threads=torch.get_num_threads() if device.type == "cpu" else None,
        **env.versions(),
    )
    timer = (
        args.timer
        if device.type == "cuda" and mode is None
        else ("events" if device.type == "cuda" else "perf_counter")
    )
    meta = dict(
        device=common["device"],
        device_slug=env.device_slug(device),
        preset=args.preset,
        interleaved=args.interleaved,
        load_processes=args.load,
        argv=sys.argv[1:] if argv is None else list(argv),
        started=stamp,
        filter=args.filter,
        providers=providers,
        compile=compile_ref,
        provider_timeout_s=args.provider_timeout,
        timer=timer + (", interleaved call by call" if mode is not None else ""),
        budget=vars(budget),
        seed=args.seed,
        python=platform.python_version(),
        platform=platform.platform(),
        lstm_fused_backends=lstm_fused.available_backends(),
        load_average_start=env.load_average(),
        **{k: v for k, v in common.items() if k != "device"},
    )
    out_dir = Path(args.out) if args.out else RESULTS / meta["device_slug"]

    try:
        from tqdm import tqdm

        bar = tqdm(
            total=len(cases),
            disable=args.no_progress,
            file=sys.stderr,
            unit="case",
            dynamic_ncols=True,
        )
    except ImportError:  # tqdm is in tools/setup.sh; the suite still runs without it
        bar = None
    if mode is None:
        stem = f"{stamp}_{args.preset}"
    else:
        stem = f"{stamp}_{mode.name}" + ("_smoke" if args.preset == "smoke" else "")
    if args.load:
        stem += f"_load{args.load}"
    writer = ResultWriter(out_dir, args.name or stem, meta)

    def on_row(row):
        writer.add(row)
        print(_row_line(row), flush=True)

    runner = CaseRunner(
        device,
        options,
        budget,
        seed=args.seed,
        timer=args.timer,
        common=common,
        on_provider=(lambda name: bar.set_postfix_str(name)) if bar else None,
        on_row=on_row,
        provider_timeout_s=args.provider_timeout,
    )
    t0 = time.perf_counter()
    for case in cases:
        if bar:
            bar.set_description(f"{case.family} {case.mode} {case.dtype}")
        if mode is None:
            runner.run(case, late=False)
        else:
            runner.run_interleaved(
                case,
                mode.workload,
                mode.providers(mode.workload, case, device, options),
                mode.references(case, device) if mode.references else None,
            )
        if bar:
            bar.update(1)
    # Providers that compile at first use (Provider.late) run after all the others.
    for case in cases:
        if mode is None and runner.has_late(case):
            runner.run(case, late=True)
    if bar:
        bar.close()
    rows = writer.rows
    add_speedups(rows)
    meta.update(seconds=round(time.perf_counter() - t0, 1), load_average_end=env.load_average())
    paths = writer.close()
    print(
        f"lstm_fused benchmark on {meta['device']} | torch {common['torch_version']} | "
        f"commit {common['git_commit']} | {args.interleaved or args.preset}"
        f"{' ' + args.preset if mode is not None else ''} | {meta['seconds']} s | "
        f"load {meta['load_average_start']} -> {meta['load_average_end']}"
        f"{f' (with {args.load} spinning processes)' if args.load else ''}"
    )
    print(table(rows))
    print(f"\nwrote {paths['csv']} and {paths['json']}")
    bad = [r for r in rows if r["status"] in ("wrong", "error")]
    if bad:
        print(
            f"{len(bad)} provider/case pairs were wrong or raised: see the status column",
            file=sys.stderr,
        )
    return 0


def _row_line(r: dict) -> str:
    """One line per measured row, printed as it comes (the log of a run that is stopped)."""
    p50 = "" if r["p50_ms"] is None else f" p50 {r['p50_ms']:.3f} ms"
    speed = "" if r["speedup"] is None else f" {r['speedup']:.2f}x"
    err = "" if r["max_err"] is None else f" err {r['max_err']:.2g}"
    note = f" ({r['note'][:200]})" if r["note"] and r["status"] != "ok" else ""
    return (
        f"row: {r['case']} {r['mode']} [{r['shape']}] {r['dtype']} {r['provider']}: "
        f"{r['status']}{p50}{speed}{err}{note}"
    )


if __name__ == "__main__":
    sys.exit(main())
