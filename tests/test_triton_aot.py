"""Triton's real compiler, ahead of time, without a GPU: every @triton.jit kernel of
lstm_fused/triton_kernels, compiled for sm_80 and sm_90 exactly as its launcher configures it
for the shapes of the benchmark grid (bench/cases.py, CUDA presets quick and full), in
float32, float16, bfloat16 and float64 (where the launcher takes it), lengths on and off.

The configurations come from the launchers' own choice functions (launch_config.py), called
with target=80 / 90; deduplicated, they are compiled by a process pool in a subprocess without
TRITON_INTERPRET (tests/conftest.py sets it for this process, and kernels defined under it are
interpreter functions). Each must compile, fit the target's shared memory
(launch_config.SHARED_MEMORY_LIMIT) and spill no registers. The sizes at the edge of the
sequence kernel's rule (tuning.SEQUENCE_MAX_WEIGHT_ELEMENTS) are compiled too, so the rule
admits only what fits. A table of registers, spills, shared memory and compile time is printed.

Cached: Triton's own cache skips the compile of an unchanged kernel; each result row is kept in
$LSTM_FUSED_COMPILE_CACHE/triton_aot (default .cicache/compile/triton_aot), named by a hash of
Triton's version, the kernel's source with what it calls and the configuration, so a second
run reads the rows back instead of running ptxas again (measured on 2 shared cores: 61 s with
Triton's cache warm, 3.5 s with both).

Run by hand: python tests/test_triton_aot.py [--jobs N] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "float16", "bfloat16", "float64")


# ------------------------------------------------------------------ the configurations


def _grid_cases():
    sys.path.insert(0, str(ROOT))
    from bench.cases import full_cases, quick_cases

    seen, out = set(), []
    for case in quick_cases("cuda") + full_cases("cuda"):
        key = (case.family, case.mode, case.shape)
        if key not in seen:  # the dtype of the case is replaced by every dtype below
            seen.add(key)
            out.append(case)
    return out


def _lstm_layers(I, H, L, D):
    """(input size, H) of each layer."""
    return [(I if layer == 0 else D * H, H) for layer in range(L)]


def case_configs(case, dtype, target):
    """(where, KernelConfig) for every launch one benchmark case makes on `target`."""
    import torch

    from lstm_fused.triton_kernels import attention_ops as ao
    from lstm_fused.triton_kernels import mhsa as fa
    from lstm_fused.triton_kernels import lstm_layer as ll

    dt = getattr(torch, dtype)
    d = case.dims
    train = case.mode != "fwd"
    out = []

    def lstm(T, B, H, L, D, has_len):
        for _ in _lstm_layers(d.get("I", 0), H, L, D):
            out.extend(
                ll.layer_configs(
                    T,
                    B,
                    H,
                    H,
                    dt,
                    proj=False,
                    peep=False,
                    has_len=has_len,
                    train=train,
                    target=target,
                )
            )

    def pooling(T, Dx, A, has_len):
        out.append(ao.attention_pooling_forward_config(T, Dx, A, dt, False, has_len, target))
        if train:
            out.append(ao.attention_pooling_backward_config(T, Dx, A, dt, False, has_len, target))

    def attention(T, E, N, has_len):
        head = E // N
        if fa.unsupported_reason(dt, head, target) is not None:
            return  # refused: the backend reports it (lstm_fused/ops/mhsa.py)
        for drop in (False, True) if train else (False,):
            cfgs = fa.flash_configs(head, dt, has_len, drop, target)
            out.append(cfgs["fwd"])
            if train:
                out.extend([cfgs["delta"], cfgs["dkdv"], cfgs["dq"]])

    for has_len in (False, True):
        f = case.family
        if f == "lstm":
            lstm(d["T"], d["B"], d["H"], d["L"], d["D"], has_len)
        elif f == "lstm_cell":
            lstm(1, d["B"], d["H"], 1, 1, False)
        elif f == "masked_softmax":
            out.append(ao.masked_softmax_forward_config(d["T"], dt, has_len, False, target))
            if train:
                out.append(ao.masked_softmax_backward_config(d["T"], dt, target))
        elif f == "attention_pooling":
            pooling(d["T"], d["D"], d["A"], has_len)
            out.extend(ao.channel_configs(d["D"], dt, has_len, target).values())
        elif f == "self_attention" and dt != torch.float64:
            attention(d["T"], d["E"], d["N"], has_len)
        elif f == "attentive_lstm":
            H, L = d["H"], d["L"]
            lstm(d["T"], d["B"], H, L - 1, 1, has_len) if L > 1 else None
            if not train and ll.attentive_supported(H, H, d["A"], False, dt, target):
                out.extend(
                    ll.attentive_configs(
                        d["B"],
                        H,
                        H,
                        d["A"],
                        dt,
                        proj=False,
                        peep=False,
                        has_len=has_len,
                        has_pb=True,
                        has_q=False,
                        target=target,
                    )
                )
            else:
                lstm(d["T"], d["B"], H, 1, 1, has_len)
                pooling(d["T"], H, d["A"], has_len)
        elif f == "model_step" and has_len:  # the model passes lengths to its attention
            lstm(d["T"], d["B"], d["H"], 1, 2, False)
            if dt != torch.float64:
                attention(d["T"], 2 * d["H"], d["N"], True)
            pooling(d["T"], 2 * d["H"], d["A"], True)
    return out


def boundary_configs(dtype, target):
    """The largest sequence-kernel sizes tuning.sequence_fits / attentive_fits admit on
    `target` (powers of two, R < H with a projection; a size is largest when doubling any of
    H, R, A leaves the rule), every switch on, forward and backward."""
    import torch

    from lstm_fused.triton_kernels import lstm_layer as ll
    from lstm_fused.triton_kernels import tuning

    dt = getattr(torch, dtype)
    sizes = [16 * 2**k for k in range(6)]  # 16 .. 512

    def fits(h, r, a):
        if r > h:
            return False
        if a == 0:
            return tuning.sequence_fits(h, r, r < h, dt, target)
        return tuning.attentive_fits(h, r, a, r < h, dt, target)

    out = []
    for a_sizes in ([0], sizes):
        for h in sizes:
            for r in sizes:
                for a in a_sizes:
                    grown = [(2 * h, r, a), (h, 2 * r, a)] + ([(h, r, 2 * a)] if a else [])
                    if not fits(h, r, a) or any(fits(*g) for g in grown):
                        continue
                    if a == 0:
                        out += ll.layer_configs(
                            2,
                            16,
                            h,
                            r,
                            dt,
                            proj=r < h,
                            peep=True,
                            has_len=True,
                            train=True,
                            target=target,
                            path="sequence",
                        )
                    else:
                        out += ll.attentive_configs(
                            16,
                            h,
                            r,
                            a,
                            dt,
                            proj=r < h,
                            peep=True,
                            has_len=True,
                            has_pb=True,
                            has_q=True,
                            target=target,
                        )
    return out


def table_configs(target):
    """Every entry of mhsa's tile table for `target` (head sizes beyond the grid's
    too), dropout and lengths on."""
    from lstm_fused.triton_kernels import mhsa as fa

    table = fa._TILES[fa._tile_target(target)]
    return [cfg for dt, d in table for cfg in fa.flash_configs(d, dt, True, True, target).values()]


def all_configs():
    """{key: (target, KernelConfig)}, deduplicated, in a stable order."""
    from lstm_fused.triton_kernels.launch_config import AOT_TARGETS

    configs = {}
    cases = _grid_cases()
    for target in AOT_TARGETS:
        for dtype in DTYPES:
            found = [c for case in cases for c in case_configs(case, dtype, target)]
            found += boundary_configs(dtype, target)
            for cfg in found:
                configs.setdefault(config_key(target, cfg), (target, cfg))
        for cfg in table_configs(target):
            configs.setdefault(config_key(target, cfg), (target, cfg))
    return configs


def config_key(target, cfg):
    return (
        target,
        cfg.name,
        tuple((k, str(v)) for k, v in cfg.constexprs),
        tuple(sorted(cfg.options().items())),
        tuple(sorted(cfg.types)),
    )


# ------------------------------------------------------------------ compiling

_PTXAS = re.compile(
    r"(\d+) bytes spill stores, (\d+) bytes spill loads.*?Used (\d+) registers", re.S
)


def _result_file(job, kernel):
    """Where the result row of `job` is cached: named by a hash of Triton's version, the
    kernel's source with everything it calls (JITFunction.cache_key) and the job (target,
    constexprs, options, signature), in $LSTM_FUSED_COMPILE_CACHE/triton_aot (default
    .cicache/compile/triton_aot). Triton's own cache skips the compile; this skips the ptxas
    report too."""
    import hashlib

    import triton

    text = json.dumps([triton.__version__, kernel.cache_key, job], sort_keys=True, default=str)
    base = Path(os.environ.get("LSTM_FUSED_COMPILE_CACHE") or ROOT / ".cicache" / "compile")
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return base / "triton_aot" / f"{job[2]}-{digest}.json"


def compile_one(job):
    """Compile one (target, kernel module, kernel name, constexprs, warps, stages, signature)
    in this (interpreter-free) process. Returns a result row (read back from the cache when
    nothing it depends on changed)."""
    target, module, name, constexprs, options, signature = job
    import importlib

    kernel = getattr(importlib.import_module(module), name)
    cached = _result_file(job, kernel)
    if cached.exists():
        return dict(json.loads(cached.read_text()), cached=True)
    row = _compile_uncached(job, kernel)
    if "error" not in row:  # a failure is compiled again next time, with its message
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(row))
        tmp.replace(cached)
    return row


def _compile_uncached(job, kernel):
    target, module, name, constexprs, options, signature = job
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {k: _constexpr_value(v) for k, v in constexprs.items()}
    # pointers 16-byte aligned, as torch allocates them (what a launch specialises on)
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, t in enumerate(signature.values())
        if t.startswith("*")
    }
    knobs.nvidia.dump_ptxas_log = True  # printed by the compiler: captured below
    log = io.StringIO()
    t0 = time.perf_counter()
    row = dict(
        target=target,
        kernel=name,
        constexprs=constexprs_text(constexprs),
        warps=options["num_warps"],
        stages=options["num_stages"],
        maxnreg=options.get("maxnreg"),
        dtype=_main_dtype(signature),
    )
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                target=GPUTarget("cuda", target, 32),
                options=options,
            )
    except Exception as exc:  # reported as a failed row, with the compiler's message
        row.update(
            error=f"{type(exc).__name__}: {str(exc)[-2000:]}", seconds=time.perf_counter() - t0
        )
        return row
    report = log.getvalue()
    if not _PTXAS.search(report):  # from Triton's cache: ptxas did not run, run it on the PTX
        report = _ptxas_report(compiled.asm["ptx"], target)
    row["seconds"] = time.perf_counter() - t0
    match = _PTXAS.search(report)
    if match is None:
        row["error"] = "no ptxas report: " + report[-500:]
        return row
    row.update(
        spill_stores=int(match.group(1)),
        spill_loads=int(match.group(2)),
        registers=int(match.group(3)),
        shared=int(compiled.metadata.shared),
    )
    return row


def _ptxas_report(ptx, target):
    """ptxas -v's report on `ptx` (what Triton's compile prints when it runs ptxas itself)."""
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        proc = subprocess.run(
            [
                get_ptxas(target).path,
                "-v",
                f"--gpu-name={sm_arch_from_capability(target)}",
                str(src),
                "-o",
                str(Path(tmp) / "kernel.o"),
            ],
            capture_output=True,
            text=True,
        )
    return proc.stdout + proc.stderr


def _main_dtype(signature):
    ptrs = [
        t[1:]
        for t in signature.values()
        if t.startswith("*") and t[1:] in ("fp16", "bf16", "fp32", "fp64")
    ]
    return max(set(ptrs), key=ptrs.count) if ptrs else ""


def constexprs_text(constexprs):
    return " ".join(f"{k}={_short(v)}" for k, v in sorted(constexprs.items()))


def _short(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v).replace("tl.", "").replace("triton.language.", "")


def _constexpr_value(v):
    """Constexprs travel to the workers as text where they are Triton dtypes."""
    if isinstance(v, str) and v.startswith("dtype:"):
        import triton.language as tl

        return tl.dtype(v[len("dtype:") :])
    return v


def _portable(v):
    import triton.language as tl

    return f"dtype:{v.name}" if isinstance(v, tl.dtype) else v


def _jobs(configs):
    jobs = []
    for target, cfg in configs.values():
        jobs.append(
            (
                target,
                cfg.kernel.__module__,
                cfg.name,
                {k: _portable(v) for k, v in cfg.constexprs},
                cfg.options(),
                cfg.signature(),
            )
        )
    return jobs


def failures(row, limits):
    """What is wrong with one compiled configuration (empty: nothing)."""
    if "error" in row:
        return [row["error"]]
    bad = []
    if row["shared"] > limits[row["target"]]:
        bad.append(f"shared memory {row['shared']} > {limits[row['target']]} bytes")
    if row["spill_stores"] or row["spill_loads"]:
        bad.append(f"spills {row['spill_stores']} B stores / {row['spill_loads']} B loads")
    return bad


def table(rows):
    lines = [
        f"{'sm':>3} {'kernel':<32} {'dtype':<5} {'w':>2} {'st':>2} {'regs':>4} "
        f"{'spill':>6} {'smem':>7} {'s':>5}  constexprs"
    ]
    for r in sorted(rows, key=lambda r: (r["kernel"], r["target"], r["dtype"], r["constexprs"])):
        if "error" in r:
            lines.append(
                f"{r['target']:>3} {r['kernel']:<32} {r['dtype']:<5} {r['warps']:>2} "
                f"{r['stages']:>2} FAILED {r['seconds']:5.1f}  {r['constexprs']}"
            )
            continue
        lines.append(
            f"{r['target']:>3} {r['kernel']:<32} {r['dtype']:<5} {r['warps']:>2} "
            f"{r['stages']:>2} {r['registers']:>4} {r['spill_stores']:>6} "
            f"{r['shared']:>7} {r['seconds']:5.1f}  {r['constexprs']}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write the result rows here")
    parser.add_argument(
        "--only", help="compile only the kernels whose name matches this regular expression"
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: the interpreter compiles nothing")
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from lstm_fused.triton_kernels.launch_config import SHARED_MEMORY_LIMIT

    t0 = time.perf_counter()
    jobs = [j for j in _jobs(all_configs()) if re.search(args.only or "", j[2])]
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(compile_one, job) for job in jobs]):
            rows.append(future.result())
            print(table(rows[-1:]).splitlines()[1], file=sys.stderr, flush=True)  # progress
    wall = time.perf_counter() - t0
    print(table(rows))
    bad = [(r, failures(r, SHARED_MEMORY_LIMIT)) for r in rows]
    bad = [(r, why) for r, why in bad if why]
    print(
        f"\n{len(rows)} configurations compiled in {wall:.0f} s wall ({args.jobs} processes); "
        f"{len(bad)} fail"
    )
    for r, why in bad:
        print(
            f"FAIL sm_{r['target']} {r['kernel']} {r['dtype']} [{r['constexprs']}] "
            f"warps={r['warps']}: {'; '.join(why)}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows=rows, wall_s=wall), indent=1))
    return 1 if bad else 0


# ------------------------------------------------------------------ the test


def _kernels_in_package():
    """Every @triton.jit kernel (name ending in _kernel) of lstm_fused.triton_kernels."""
    import importlib
    import pkgutil

    import lstm_fused.triton_kernels as pkg

    names = set()
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for attr, value in vars(module).items():
            fn = getattr(value, "fn", None)
            if attr.endswith("_kernel") and getattr(fn, "__module__", None) == module.__name__:
                names.add(attr)
    return names


@pytest.mark.slow_compile
def test_every_kernel_compiles_fits_and_does_not_spill(tmp_path):
    pytest.importorskip("triton", reason="the AOT compile needs Triton")
    covered = {cfg.name for _, cfg in all_configs().values()}
    assert covered == _kernels_in_package(), "kernels without a configuration in the grid"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "aot.json"
    proc = subprocess.run(
        [sys.executable, __file__, "--json", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2700,
    )
    print(proc.stdout)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
