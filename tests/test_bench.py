"""The benchmark suite (bench/): its reduced mode runs on the CPU and writes well-formed files,
plots are drawn from them, a wrong provider is reported and not timed, a missing or failing one
is reported without stopping the suite, and the pytest-benchmark set runs."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import __main__ as bench_main
from bench import plot as bench_plot
from bench.cases import MAIN_LSTM, PRESETS, quick_cases, select, smoke_cases
from bench.report import COLUMNS, read
from bench.runner import CaseRunner, normalised_error
from bench.timing import TimingBudget, percentiles
from bench.workloads import WORKLOADS
from bench.workloads.base import Absent, Impl, Options, Provider

REPO = Path(__file__).resolve().parent.parent
STATUSES = {"ok", "wrong", "absent", "unsupported", "error"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One `python -m bench --smoke` run into a temp folder (in process; threads restored)."""
    out = tmp_path_factory.mktemp("bench_results")
    threads = torch.get_num_threads()
    try:
        rc = bench_main.main(["--smoke", "--device", "cpu", "--threads", "1", "--no-progress",
                              "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return out


def _files(out: Path):
    csvs, jsons = sorted(out.glob("*_smoke.csv")), sorted(out.glob("*_smoke.json"))
    assert len(csvs) == 1 and len(jsons) == 1, (csvs, jsons)
    return csvs[0], jsons[0]


def test_smoke_run_writes_well_formed_csv_and_json(smoke_run):
    csv_path, json_path = _files(smoke_run)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        csv_rows = list(reader)
    with open(json_path) as f:
        data = json.load(f)
    assert data["columns"] == COLUMNS
    assert len(data["rows"]) == len(csv_rows) > 0
    # The CSV reads back to the JSON's rows, value for value ("" and None both mean blank).
    for from_csv, from_json in zip(read(csv_path), data["rows"]):
        assert {k: (v if v != "" else None) for k, v in from_csv.items()} == \
            {k: (v if v != "" else None) for k, v in from_json.items()}
    meta = data["meta"]
    assert meta["preset"] == "smoke" and meta["device"].startswith("CPU")
    assert meta["torch_version"] == torch.__version__

    rows = data["rows"]
    expected = {(c.family, c.mode, c.shape_str) for c in smoke_cases("cpu")}
    assert {(r["case"], r["mode"], r["shape"]) for r in rows} == expected
    for r in rows:
        assert r["status"] in STATUSES, r
        assert r["device"].startswith("CPU") and r["torch_version"] == torch.__version__
        if r["status"] == "ok":
            assert 0 < r["p20_ms"] <= r["p50_ms"] <= r["p80_ms"], r
            assert r["reps"] >= 3 and r["max_err"] <= r["tol"], r
            assert r["gbps"] is None or r["gbps"] > 0
        else:
            assert r["p50_ms"] is None and r["speedup"] is None and r["note"], r
        if r["provider"] == r["baseline"]:
            assert r["status"] == "ok" and math.isclose(r["speedup"], 1.0), r


def test_smoke_run_times_lstm_fused_cpu_against_nn_lstm(smoke_run):
    rows = json.loads(_files(smoke_run)[1].read_text())["rows"]
    lstm = [r for r in rows if r["case"] == "lstm"]
    for provider in ("nn.LSTM", "lstm_fused:cpu", "lstm_fused:reference"):
        mine = [r for r in lstm if r["provider"] == provider]
        assert mine and all(r["status"] == "ok" and r["speedup"] > 0 for r in mine), mine
    flash = [r for r in lstm if r["provider"] == "flashrnn"]
    assert flash and all(r["status"] in ("absent", "unsupported", "ok") for r in flash)


def test_plot_command_draws_pngs_from_written_results(smoke_run, tmp_path):
    rc = bench_plot.main([str(smoke_run), "--out", str(tmp_path)])
    assert rc == 0
    pngs = sorted(tmp_path.glob("*.png"))
    names = {p.name for p in pngs}
    assert "lstm_fwd_float32_vs_B.png" in names and "lstm_fwdbwd_float32_vs_H.png" in names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reports_when_nothing_to_plot(tmp_path, smoke_run):
    rows = json.loads(_files(smoke_run)[1].read_text())
    rows["rows"] = [r for r in rows["rows"] if r["case"] == "masked_softmax"]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(rows))
    assert bench_plot.main([str(one), "--out", str(tmp_path / "plots")]) == 1


CELL_CASE = select(smoke_cases("cpu"), r"^lstm_cell/fwd\+bwd")[0]


def _run_with_extra_providers(monkeypatch, *extra: Provider):
    wl = WORKLOADS["lstm_cell"]
    original = wl.providers
    monkeypatch.setattr(wl, "providers", lambda case, device, options:
                        original(case, device, options) + list(extra))
    case = CELL_CASE
    budget = TimingBudget(warmup_s=0, warmup_calls=1, min_reps=3, min_time_s=0, max_time_s=0.05)
    return {r["provider"]: r for r in CaseRunner(CPU, Options(), budget).run(case)}


def _scaled(impl: Impl, factor: float) -> Impl:
    return Impl(lambda inputs: tuple(o * factor for o in impl.call(inputs)), impl.module)


def test_wrong_answer_is_reported_and_not_timed(monkeypatch):
    wl = WORKLOADS["lstm_cell"]
    nn_cell = next(p for p in wl.providers(CELL_CASE, CPU, Options()) if p.name == "nn.LSTMCell")
    wrong = Provider("off_by_one_percent",
                     lambda *a: _scaled(nn_cell.build(*a), 1.01))
    rows = _run_with_extra_providers(monkeypatch, wrong)
    r = rows["off_by_one_percent"]
    assert r["status"] == "wrong" and r["max_err"] > r["tol"]
    assert r["p50_ms"] is None and r["speedup"] is None and "not timed" in r["note"]
    assert rows["nn.LSTMCell"]["status"] == "ok"


def test_absent_and_failing_providers_are_reported_not_raised(monkeypatch):
    def absent(*a):
        raise Absent("not installed here")

    def broken_call(*a):
        return Impl(lambda inputs: (_ for _ in ()).throw(ValueError("boom")))

    rows = _run_with_extra_providers(monkeypatch, Provider("missing", absent),
                                     Provider("broken", broken_call))
    assert rows["missing"]["status"] == "absent" and rows["missing"]["note"] == "not installed here"
    assert rows["broken"]["status"] == "error" and "boom" in rows["broken"]["note"]


def test_quick_preset_has_the_issue_2_case_with_cpu_and_nn_lstm():
    main_shape = ",".join(f"{k}={v}" for k, v in MAIN_LSTM.items())
    assert main_shape == "B=32,T=100,I=256,H=512,L=2,D=1"
    modes = {c.mode for c in quick_cases("cpu")
             if c.family == "lstm" and c.shape_str == main_shape and c.dtype == "float32"}
    assert modes == {"fwd", "fwd+bwd"}
    case = select(quick_cases("cpu"), r"^lstm/fwd/B=32,T=100,I=256,H=512,L=2")[0]
    names = [p.name for p in WORKLOADS["lstm"].providers(case, CPU, Options())]
    assert "nn.LSTM" in names and "lstm_fused:cpu" in names and "lstm_fused:triton" not in names
    for preset in PRESETS.values():  # every family on every preset
        assert {c.family for c in preset("cpu")} == set(WORKLOADS)
        assert {c.family for c in preset("cuda")} == set(WORKLOADS)


def test_filter_and_list(capsys):
    assert bench_main.main(["--list", "--filter", "masked_softmax/fwd/", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines == ["masked_softmax/fwd/B=32,T=100/float32"]
    assert bench_main.main(["--filter", "no-such-case", "--device", "cpu"]) == 2


def test_percentiles_and_normalised_error():
    assert percentiles([5.0]) == (5.0, 5.0, 5.0)
    p20, p50, p80 = percentiles([float(x) for x in range(1, 12)])  # 1..11
    assert (p20, p50, p80) == (3.0, 6.0, 9.0)
    want = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    assert normalised_error(want.clone(), want) == 0.0
    assert normalised_error(want + torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64), want) == \
        pytest.approx(0.1)
    assert normalised_error(torch.tensor([1.0, float("nan"), 4.0]), want) == math.inf
    assert normalised_error(want[:2], want) == math.inf


def test_pytest_benchmark_set_runs_on_the_cpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/test_pytest_benchmark.py",
                           "-q", "--benchmark-disable", "-p", "no:cacheprovider", "-x",
                           "-k", "lstm_cell or masked_softmax"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_cpu_loops_checks_and_times_every_loop(monkeypatch, capsys):
    """`python -m bench.cpu_loops` on tiny shapes: each loop's output is checked against
    nn.LSTM before timing, and one line per shape names nn.LSTM and every loop."""
    from bench import cpu_loops

    monkeypatch.setattr(cpu_loops, "SHAPES", [(3, 5, 7, 20, 2, True)])
    cpu_loops.main(["--reps", "2", "--fwd-bwd"])
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("B=3,T=5,I=7,H=20,L=2,D=2:")
    for name in ("nn.LSTM", *cpu_loops.LOOPS):
        assert f" {name} " in line
    assert "LSTM_FUSED_CPU_LOOP" not in os.environ
