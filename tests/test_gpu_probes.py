"""The GPU probes (tools/gpu_probes/) without a GPU: their emulated builds run on the CPU (the
same sources, tests/cuda_emu/ underneath csrc/cuda/tc_primitives.cuh), their checks can fail,
the result table puts the model's prediction beside each measurement, and (slow_compile) the
GPU builds compile with nvcc for sm_80 and sm_90 without spills.

What only a GPU can tell (tools/gpu_session.sh runs it first): whether the hardware's fragment
layout is the emulation's (the self-test's GPU D against its emulated D), and every timing.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cuda_build_helpers as cb

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "tools" / "gpu_probes"
DOC = ROOT / "docs" / "gpu_performance.md"
CXX = shutil.which("g++") or shutil.which("c++")

needs_cxx = pytest.mark.skipif(CXX is None, reason="no host C++ compiler (g++/c++)")


def _run(cmd, **kw):
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, cwd=ROOT, **kw
    )


def _emu_build(out: Path, src: str, *defines: str) -> Path:
    exe = out / (src + "".join(d.lower() for d in defines) + ".emu")
    cmd = [
        CXX,
        "-x",
        "c++",
        "-std=c++17",
        "-O1",
        "-pthread",
        "-DLSTM_FUSED_CUDA_EMULATION",
        *[f"-D{d}" for d in defines],
        f"-I{ROOT / 'csrc'}",
        f"-I{ROOT / 'tests' / 'cuda_emu'}",
        f"-I{PROBES}",
        PROBES / f"{src}.cu",
        "-o",
        exe,
    ]
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """{probe: emulated executable}, built with build.sh (the way the GPU session builds them)."""
    if CXX is None:
        pytest.skip("no host C++ compiler")
    out = tmp_path_factory.mktemp("probes")
    proc = _run(["bash", PROBES / "build.sh", out, "emu"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {p: out / f"{p}.emu" for p in ("mma_selftest", "exchange")}


def _results(stdout: str):
    return [line.split("\t") for line in stdout.splitlines() if line.startswith("RESULT\t")]


# ------------------------------------------------------------------ (a) mma + ldmatrix self-test


def test_emulated_mma_selftest_matches_float64_in_every_way(emu, tmp_path):
    d_file = tmp_path / "d.txt"
    proc = _run([emu["mma_selftest"], "--write", d_file])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _results(proc.stdout)
    # 2 dtypes x 4 ways (hand-packed fragments, ldmatrix, ldmatrix.trans of B, of A)
    assert len(rows) == 8 and all(r[4] == "ok" for r in rows), proc.stdout
    assert all(float(r[2]) == 0.0 for r in rows)  # exact inputs: exact products and sums
    assert {r[1].split("/")[1] for r in rows} == {"bf16", "f16"}
    # the file the GPU build compares against: one line per (dtype, way), 256 values each
    lines = d_file.read_text().splitlines()
    assert len(lines) == 8 and all(len(line.split()) == 2 + 256 for line in lines)
    # against itself: agrees
    proc = _run([emu["mma_selftest"], "--against", d_file])
    assert proc.returncode == 0 and "max |D - D(" in proc.stdout, proc.stdout


def test_mma_selftest_fails_on_a_wrong_fragment_layout(tmp_path):
    if CXX is None:
        pytest.skip("no host C++ compiler")
    wrong = _emu_build(tmp_path, "mma_selftest", "MMA_SELFTEST_WRONG_LAYOUT")
    proc = _run([wrong])
    assert proc.returncode == 1, proc.stdout
    status = {r[1].split("/", 3)[3]: r[4] for r in _results(proc.stdout)}
    assert status["ptx-layout"] == "FAIL"  # the way whose B fragments were packed wrongly
    assert status["ldsm(A)+ldsm(Bt)"] == "ok"


def test_mma_selftest_fails_when_the_other_build_disagrees(emu, tmp_path):
    d_file = tmp_path / "d.txt"
    assert _run([emu["mma_selftest"], "--write", d_file]).returncode == 0
    lines = d_file.read_text().splitlines()
    fields = lines[1].split()
    fields[2 + 37] = repr(float(fields[2 + 37]) + 0.5)  # one element of (bf16, way 1)
    lines[1] = " ".join(fields)
    d_file.write_text("\n".join(lines) + "\n")
    proc = _run([emu["mma_selftest"], "--against", d_file])
    assert proc.returncode == 1
    failed = [r[1] for r in _results(proc.stdout) if r[4] == "FAIL"]
    assert failed == ["mma_selftest/bf16/emulated/ldsm(A)+ldsm(Bt)"], proc.stdout


def test_mma_selftest_reports_a_missing_comparison_file(emu, tmp_path):
    proc = _run([emu["mma_selftest"], "--against", tmp_path / "absent.txt"])
    assert proc.returncode == 1 and "cannot read" in proc.stdout


# ------------------------------------------------------------------ (b) exchange microkernel

TINY = [
    "--units",
    "4",
    "--batch",
    "2",
    "--hidden",
    "16",
    "--warps",
    "2",
    "--kslice",
    "8",
    "--steps",
    "6",
    "--check",
]


def test_emulated_exchange_protocol_delivers_every_step(emu):
    """Every mode, every fetched word checked against (step, row, unit): flags, double
    buffering and the grid barrier deliver h_s at step s (4 CTAs x 2 warps, 6 steps)."""
    proc = _run([emu["exchange"], *TINY, "--shape-name", "tiny"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _results(proc.stdout)
    modes = [r[1].rsplit("/", 1)[1] for r in rows]
    assert modes == [
        "local",
        "flags",
        "flags+fetch",
        "flags+fetch+stores-after",
        "flags+fetch+stores-before",
        "grid",
        "grid+fetch",
    ]
    assert all(r[4] == "ok" and "errors 0" in r[5] for r in rows), proc.stdout
    assert rows[0][1].startswith("exchange/tiny/ctas=4,U=4,B=2,H=16,warps=2,K=8,T=6/")


def test_emulated_exchange_uneven_slices(emu):
    """H not a multiple of the units per CTA (the last CTA owns fewer), warps with no K-slice."""
    proc = _run(
        [
            emu["exchange"],
            "--units",
            "6",
            "--batch",
            "3",
            "--hidden",
            "40",
            "--warps",
            "3",
            "--kslice",
            "24",
            "--steps",
            "5",
            "--check",
            "--modes",
            "flags+fetch,grid+fetch",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r[4] for r in _results(proc.stdout)] == ["ok", "ok"]


def test_exchange_check_counts_wrong_words(emu):
    """The checker itself: told to expect the next step's values, it flags every word."""
    proc = _run([emu["exchange"], *TINY, "--modes", "flags+fetch", "--check-offset", "1"])
    assert proc.returncode == 1
    (row,) = _results(proc.stdout)
    # 4 CTAs x 2 warps x 6 steps x (2 rows x 8 columns) words, every one wrong
    assert row[4] == "FAIL" and "errors 768" in row[5], row


def test_exchange_refuses_bad_shapes(emu):
    proc = _run([emu["exchange"], "--hidden", "20", "--kslice", "8", "--warps", "2"])
    assert proc.returncode == 2 and "multiples of 8" in proc.stderr
    proc = _run([emu["exchange"], "--modes", "flags,bogus"])
    assert proc.returncode == 2 and "unknown mode 'bogus'" in proc.stderr


# ------------------------------------------------------------------ the result table


def _rows_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_probe_rows", PROBES / "rows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_put_the_prediction_beside_each_measurement(tmp_path):
    rows = _rows_module()
    log = tmp_path / "probe.log"
    log.write_text(
        "noise\n"
        "RESULT\texchange/fwd-headline/ctas=128,U=6,B=16,H=768,warps=8,K=96,T=1024/flags+fetch"
        "\t0.812\tus/step\tok\tmedian of 10 launches\n"
        "RESULT\tmma_selftest/bf16/gpu/ptx-layout\t0\tmax|D-f64|\tok\t0 of 256 inexact\n"
        "RESULT\tsomething/new\t1\tx\tok\t\n"
    )
    results = tmp_path / "results.tsv"
    assert rows.main(["--stage", "probes", "--results", str(results), str(log)]) == 0
    assert (
        rows.main(
            [
                "--stage",
                "tests",
                "--results",
                str(results),
                "--key",
                "stage/tests",
                "--status",
                "FAILED",
                "--value",
                "12",
                "--unit",
                "s",
            ]
        )
        == 0
    )
    with open(results, newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    assert table[0] == rows.COLUMNS
    by_key = {r[1]: r for r in table[1:]}
    assert (
        by_key["exchange/fwd-headline/ctas=128,U=6,B=16,H=768,warps=8,K=96,T=1024/flags+fetch"][5]
        == "0.50-1.40 us/step (5.2)"
    )
    assert by_key["mma_selftest/bf16/gpu/ptx-layout"][5].startswith("0 (exact")
    assert by_key["something/new"][5] == "-"
    assert by_key["stage/tests"][:5] == ["tests", "stage/tests", "12", "s", "FAILED"]
    md = rows.markdown(results)
    assert md.splitlines()[0].startswith("| stage | measurement | measured |")
    assert len(md.splitlines()) == 2 + 4


def test_rows_from_a_bench_csv(tmp_path):
    rows = _rows_module()
    from bench.report import COLUMNS

    bench_csv = tmp_path / "headline.csv"
    with open(bench_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerow(
            {c: "" for c in COLUMNS}
            | dict(
                provider="lstm_fused:cuda",
                case="lstm",
                mode="fwd",
                shape="B=16,T=1024,I=768,H=768,L=1,D=1",
                dtype="bfloat16",
                status="ok",
                p20_ms="1.1",
                p50_ms="1.2",
                p80_ms="1.3",
                reps="20",
                baseline="nn.LSTM",
            )
        )
        w.writerow(
            {c: "" for c in COLUMNS}
            | dict(
                provider="lstm_fused:cuda[gates]",
                case="lstm",
                mode="fwd+bwd",
                shape="B=16,T=1024,I=768,H=768,L=1,D=1",
                dtype="float16",
                status="error",
            )
        )
    out = rows.bench_rows(bench_csv)
    assert [(r["key"], r["value"], r["status"]) for r in out] == [
        ("time/fwd/B=16,T=1024,I=768,H=768,L=1,D=1/bfloat16/lstm_fused:cuda", "1.2", "ok"),
        (
            "time/fwd+bwd/B=16,T=1024,I=768,H=768,L=1,D=1/float16/lstm_fused:cuda[gates]",
            "nan",
            "error",
        ),
    ]
    predictions = rows.load_predictions()
    assert rows.predict(out[0]["key"], predictions).startswith("0.87-1.96 ms")
    assert rows.predict(out[1]["key"], predictions).startswith("20-30 ms")


def test_every_prediction_is_a_figure_of_the_performance_document():
    """predictions.tsv and docs/gpu_performance.md state the same model: each prediction's
    figure (its text before any parenthesis) is written in the document."""
    rows = _rows_module()
    doc = DOC.read_text()
    missing = []
    for pattern, value, section in rows.load_predictions():
        figure = value.split(" (")[0]
        if figure not in doc:
            missing.append(f"{pattern.pattern}: {figure!r}")
        assert re.fullmatch(r"\d(\.\d)?", section), section
        assert f"## {section.split('.')[0]}." in doc or f"### {section} " in doc, section
    assert not missing, "predictions not in docs/gpu_performance.md:\n" + "\n".join(missing)


# ------------------------------------------------------------------ nvcc (slow_compile)


@pytest.mark.slow_compile
@pytest.mark.skipif(cb.NVCC is None, reason="nvcc (CUDA toolkit) not found")
def test_probes_compile_for_sm80_and_sm90_without_spills(tmp_path):
    proc = _run(
        ["bash", PROBES / "build.sh", tmp_path, "gpu", "80 90"], env={**os.environ, "NVCC": cb.NVCC}
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for probe in ("mma_selftest", "exchange"):
        output = (tmp_path / f"{probe}.ptxas.txt").read_text()
        assert "warning" not in output.lower(), output
        kernels = cb.parse_resource_usage(output)
        archs = {k["arch"] for k in kernels}
        assert archs == {"sm_80", "sm_90"}, output
        for k in kernels:
            assert k["spill_stores"] == 0 and k["spill_loads"] == 0 and k["stack"] == 0, k
        assert (tmp_path / probe).exists()


def test_file_results_names_the_device_folder_as_the_benchmark_does(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_file_results", PROBES / "file_results.py")
    fr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fr)
    session = "date: x\ndevice: NVIDIA H100 80GB HBM3, capability 9.0, 132 SMs, 79.2 GiB\n"
    assert fr.device_slug(session) == "nvidia-h100-80gb-hbm3"
    (tmp_path / "session.log").write_text(session)
    rows = _rows_module()
    rows.main(
        [
            "--stage",
            "probes",
            "--results",
            str(tmp_path / "results.tsv"),
            "--key",
            "exchange/fwd-headline/x/flags",
            "--value",
            "0.5",
            "--unit",
            "us/step",
        ]
    )
    assert fr.main([str(tmp_path), "--dry", "--commit", "abc123"]) == 0
    out = capsys.readouterr().out
    assert "bench/results/nvidia-h100-80gb-hbm3/" in out and "_gpu_session_results.tsv" in out
    assert "| probes | exchange/fwd-headline/x/flags | 0.5 | us/step |" in out
    assert "commit abc123" in out
    (tmp_path / "session.log").write_text("no device line\n")
    with pytest.raises(SystemExit, match="no 'device: ...' line"):
        fr.main([str(tmp_path), "--dry"])


def test_headline_check_runs_on_the_cpu():
    """tools/gpu_probes/headline_check.py --dry: the same code with backend "cpu" at a tiny
    shape (a check of the script; on a GPU it compares the CUDA paths)."""
    proc = _run([sys.executable, PROBES / "headline_check.py", "--dry"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _results(proc.stdout)
    assert [r[1] for r in rows] == [
        f"correctness/tiny:B=3,T=9,I=5,H=8/float32/{p}" for p in ("nn.LSTM", "tc", "gates")
    ]
    assert [r[4] for r in rows] == ["info", "ok", "ok"], proc.stdout
    assert all(0 <= float(r[2]) < 1e-4 for r in rows)
