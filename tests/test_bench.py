"""The benchmark suite (bench/): its reduced mode runs on the CPU and writes well-formed files,
plots are drawn from them, a wrong provider is reported and not timed, a missing or failing one
is reported without stopping the suite, the interleaved modes check and time their providers
call by call, and the pytest-benchmark set runs."""

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
from bench.cases import (
    GRIDS,
    HEADLINE_LSTM,
    MAIN_LSTM,
    PRESETS,
    full_cases,
    headline_cases,
    quick_cases,
    select,
    smoke_cases,
)
from bench.report import COLUMNS, ResultWriter, read
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
        rc = bench_main.main(
            ["--smoke", "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out)]
        )
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
        assert {k: (v if v != "" else None) for k, v in from_csv.items()} == {
            k: (v if v != "" else None) for k, v in from_json.items()
        }
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
    pytest.importorskip("matplotlib", reason="matplotlib (for bench.plot) is not installed")
    rc = bench_plot.main([str(smoke_run), "--out", str(tmp_path)])
    assert rc == 0
    pngs = sorted(tmp_path.glob("*.png"))
    names = {p.name for p in pngs}
    assert "lstm_fwd_float32_vs_B.png" in names and "lstm_fwdbwd_float32_vs_H.png" in names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reports_when_nothing_to_plot(tmp_path, smoke_run):
    pytest.importorskip("matplotlib", reason="matplotlib (for bench.plot) is not installed")
    rows = json.loads(_files(smoke_run)[1].read_text())
    rows["rows"] = [r for r in rows["rows"] if r["case"] == "masked_softmax"]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(rows))
    assert bench_plot.main([str(one), "--out", str(tmp_path / "plots")]) == 1


CELL_CASE = select(smoke_cases("cpu"), r"^lstm_cell/fwd\+bwd")[0]


def _run_with_extra_providers(monkeypatch, *extra: Provider):
    wl = WORKLOADS["lstm_cell"]
    original = wl.providers
    monkeypatch.setattr(
        wl, "providers", lambda case, device, options: original(case, device, options) + list(extra)
    )
    case = CELL_CASE
    budget = TimingBudget(warmup_s=0, warmup_calls=1, min_reps=3, min_time_s=0, max_time_s=0.05)
    return {r["provider"]: r for r in CaseRunner(CPU, Options(), budget).run(case)}


def _scaled(impl: Impl, factor: float) -> Impl:
    return Impl(lambda inputs: tuple(o * factor for o in impl.call(inputs)), impl.module)


def test_wrong_answer_is_reported_and_not_timed(monkeypatch):
    wl = WORKLOADS["lstm_cell"]
    nn_cell = next(p for p in wl.providers(CELL_CASE, CPU, Options()) if p.name == "nn.LSTMCell")
    wrong = Provider("off_by_one_percent", lambda *a: _scaled(nn_cell.build(*a), 1.01))
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

    rows = _run_with_extra_providers(
        monkeypatch, Provider("missing", absent), Provider("broken", broken_call)
    )
    assert rows["missing"]["status"] == "absent" and rows["missing"]["note"] == "not installed here"
    assert rows["broken"]["status"] == "error" and "boom" in rows["broken"]["note"]


def test_quick_preset_has_the_two_layer_lstm_case_with_cpu_and_nn_lstm():
    main_shape = ",".join(f"{k}={v}" for k, v in MAIN_LSTM.items())
    assert main_shape == "B=32,T=100,I=256,H=512,L=2,D=1"
    modes = {
        c.mode
        for c in quick_cases("cpu")
        if c.family == "lstm" and c.shape_str == main_shape and c.dtype == "float32"
    }
    assert modes == {"fwd", "fwd+bwd"}
    case = select(quick_cases("cpu"), r"^lstm/fwd/B=32,T=100,I=256,H=512,L=2")[0]
    names = [p.name for p in WORKLOADS["lstm"].providers(case, CPU, Options())]
    assert "nn.LSTM" in names and "lstm_fused:cpu" in names and "lstm_fused:triton" not in names
    for grid in GRIDS.values():  # every family on every grid
        assert {c.family for c in grid("cpu")} == set(WORKLOADS)
        assert {c.family for c in grid("cuda")} == set(WORKLOADS)
    assert set(PRESETS) == set(GRIDS) | {"headline"}


def test_headline_preset_is_the_lstm_at_b16_t1024_768_in_bf16_and_fp16():
    assert HEADLINE_LSTM == {"B": 16, "T": 1024, "I": 768, "H": 768, "L": 1, "D": 1}
    keys = {c.key for c in headline_cases("cuda")}
    assert keys == {
        f"lstm/{m}/B=16,T=1024,I=768,H=768,L=1,D=1/{dt}"
        for m in ("fwd", "fwd+bwd")
        for dt in ("bfloat16", "float16")
    }
    assert keys <= {c.key for c in quick_cases("cuda")}  # --quick on CUDA has it too
    case = headline_cases("cuda")[0]
    names = [p.name for p in WORKLOADS["lstm"].providers(case, torch.device("cuda"), Options())]
    assert names[0] == "nn.LSTM" and "flashrnn" in names
    late = {p.name for p in WORKLOADS["lstm"].providers(case, CPU, Options(compile=True)) if p.late}
    assert late == {"flashrnn", "torch.compile(reference)"}


def test_quick_does_not_turn_torch_compile_on(monkeypatch, tmp_path):
    """--quick (the default) never times torch.compile unless asked, on CUDA too; --full does."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_runner(device, options, *a, **k):
        seen["compile"] = options.compile
        raise Stop

    monkeypatch.setattr("bench.runner.CaseRunner", fake_runner)
    for argv, want in (
        (["--quick"], False),
        (["--full"], True),
        (["--quick", "--compile"], True),
        (["--full", "--no-compile"], False),
    ):
        for device in ("cpu", "cuda"):
            # the grid is chosen by --device; no GPU is touched before the runner is built
            monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU", raising=False)
            with pytest.raises(Stop):
                bench_main.main(
                    argv + ["--device", device, "--no-progress", "--out", str(tmp_path)]
                )
            assert seen.pop("compile") is want, (argv, device)


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
    assert normalised_error(
        want + torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64), want
    ) == pytest.approx(0.1)
    assert normalised_error(torch.tensor([1.0, float("nan"), 4.0]), want) == math.inf
    assert normalised_error(want[:2], want) == math.inf


def test_pytest_benchmark_set_runs_on_the_cpu():
    pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "bench/test_pytest_benchmark.py",
            "-q",
            "--benchmark-disable",
            "-p",
            "no:cacheprovider",
            "-x",
            "-k",
            "lstm_cell or masked_softmax",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def _interleaved_smoke(mode: str, out: Path, *extra: str) -> list:
    """Rows of `python -m bench --interleaved MODE --smoke` on the CPU (threads restored)."""
    threads = torch.get_num_threads()
    try:
        assert (
            bench_main.main(
                [
                    "--interleaved",
                    mode,
                    "--smoke",
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                    "--no-progress",
                    "--out",
                    str(out),
                    "--name",
                    mode,
                    *extra,
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    rows = read(out / f"{mode}.csv")
    data = json.loads((out / f"{mode}.json").read_text())
    assert data["columns"] == COLUMNS and len(data["rows"]) == len(rows)
    assert data["meta"]["interleaved"] == mode and data["meta"]["preset"] == "smoke"
    for r in rows:
        assert r["status"] == "ok", r
        assert 0 < r["p20_ms"] <= r["p50_ms"] <= r["p80_ms"] and r["max_err"] <= r["tol"], r
        assert "interleaved call by call with" in r["note"], r
    return rows


def _by_case(rows):
    out = {}
    for r in rows:
        out.setdefault((r["case"], r["mode"], r["shape"]), []).append(r)
    return out


def test_interleaved_cpu_loops_checks_and_times_every_loop_with_nn_lstm(tmp_path):
    """--interleaved cpu_loops: every LSTM smoke case, nn.LSTM and the CPU backend with each
    time loop forced, each checked against the reference, timed in the same number of rounds."""
    from bench.interleaved import CPU_LOOPS

    rows = _interleaved_smoke("cpu_loops", tmp_path, "--filter", "B=2,T=5,I=6,H=8|D=2")
    cases = _by_case(rows)
    assert {(c, m) for c, m, _ in cases} == {("lstm", "fwd"), ("lstm", "fwd+bwd")}
    assert {s for _, _, s in cases} == {"B=2,T=5,I=6,H=8,L=2,D=1", "B=3,T=4,I=5,H=6,L=1,D=2"}
    for case_rows in cases.values():
        assert [r["provider"] for r in case_rows] == ["nn.LSTM"] + [
            f"lstm_fused:cpu[{loop}]" for loop in CPU_LOOPS
        ]
        assert len({r["reps"] for r in case_rows}) == 1  # one sample each per round
        assert math.isclose(case_rows[0]["speedup"], 1.0)
        for r, loop in zip(case_rows[1:], CPU_LOOPS):
            assert f"cpu_loop={loop!r}" in r["note"] and r["speedup"] > 0


def test_cpu_loop_providers_run_every_call_under_the_switch():
    """The forced loop holds for the forward and for the backward autograd runs after it."""
    from bench.interleaved import MODES
    from bench.runner import to_device
    from lstm_fused import switches

    mode = MODES["cpu_loops"]
    case = select(mode.smoke_cases("cpu"), r"^lstm/fwd\+bwd/")[0]
    prep = CaseRunner(CPU, Options(), TimingBudget()).prepare(case, mode.workload)
    rows_loop = mode.providers(mode.workload, case, CPU, Options())[1]
    assert rows_loop.name == "lstm_fused:cpu[rows]"
    impl = rows_loop.build(case, prep.state, torch.float32, CPU)
    seen, real_call = [], impl.call

    def spy(inputs):
        out = real_call(inputs)
        seen.append(("fwd", switches.get("cpu_loop")))
        out[0].register_hook(lambda g: seen.append(("bwd", switches.get("cpu_loop"))))
        return out

    impl.call = spy
    before = switches.get("cpu_loop")
    sets = [to_device(prep.sets[0], torch.float32, CPU, ("x",), True)]
    CaseRunner._timed_fn(impl, case.mode, ("x",), sets, [g.float() for g in prep.gys])(0)
    assert seen == [("fwd", "rows"), ("bwd", "rows")]
    assert switches.get("cpu_loop") == before  # restored after the call


def test_interleaved_mhsa_dropout_checks_in_eval_and_times_in_training(tmp_path):
    rows = _interleaved_smoke("mhsa_dropout", tmp_path)
    assert {(r["case"], r["mode"]) for r in rows} == {("self_attention_dropout", "fwd+bwd")}
    assert [r["provider"] for r in rows] == [
        "nn.MultiheadAttention",
        "lstm_fused:cpu",
        "lstm_fused:reference",
    ]
    assert all("dropout p=0.1" in r["note"] for r in rows)
    # Checked with dropout off (eval mode: the check passed at float32's tolerance), timed in
    # training mode, where dropout draws.
    from bench.interleaved import MODES

    mode = MODES["mhsa_dropout"]
    case = mode.smoke_cases("cpu")[0]
    state = mode.workload.make_state(case, torch.Generator().manual_seed(0))
    for provider in mode.providers(mode.workload, case, CPU, Options()):
        impl = provider.build(case, state, torch.float32, CPU)
        assert not impl.module.training, provider.name
        impl.before_timing()
        assert impl.module.training, provider.name


def test_interleaved_wrong_provider_is_reported_and_the_others_timed():
    wl = WORKLOADS["lstm_cell"]
    providers = wl.providers(CELL_CASE, CPU, Options())
    nn_cell = next(p for p in providers if p.name == "nn.LSTMCell")
    wrong = Provider("off_by_one_percent", lambda *a: _scaled(nn_cell.build(*a), 1.01))
    budget = TimingBudget(warmup_s=0, warmup_calls=1, min_reps=3, min_time_s=0, max_time_s=0.05)
    rows = {
        r["provider"]: r
        for r in CaseRunner(CPU, Options(), budget).run_interleaved(
            CELL_CASE, wl, providers + [wrong]
        )
    }
    assert rows["off_by_one_percent"]["status"] == "wrong"
    assert rows["off_by_one_percent"]["p50_ms"] is None
    ok = [r for name, r in rows.items() if name != "off_by_one_percent"]
    assert ok and all(r["status"] == "ok" and r["speedup"] > 0 for r in ok)
    assert "off_by_one_percent" not in ok[0]["note"] and "lstm_fused:cpu" in ok[0]["note"]


def test_interleaved_attentive_times_the_fused_model_against_the_unfused_one(tmp_path):
    rows = _interleaved_smoke("attentive", tmp_path)
    cases = _by_case(rows)
    assert {m for _, m, _ in cases} == {"fwd", "fwd+bwd"}
    for case_rows in cases.values():
        assert [r["provider"] for r in case_rows] == ["torch.unfused", "lstm_fused:cpu"]


def test_interleaved_pooling_times_the_fused_pooling_against_the_unfused_one(tmp_path):
    rows = _interleaved_smoke("pooling", tmp_path)
    cases = _by_case(rows)
    assert {m for _, m, _ in cases} == {"fwd", "fwd+bwd"}
    for case_rows in cases.values():
        assert [r["provider"] for r in case_rows] == ["torch.unfused", "lstm_fused:cpu"]


def test_interleaved_mode_refuses_other_presets_and_devices(capsys):
    with pytest.raises(SystemExit):
        bench_main.main(["--interleaved", "cpu_loops", "--headline"])
    with pytest.raises(SystemExit):  # no --full grid of its own
        bench_main.main(["--interleaved", "mhsa_dropout", "--full"])
    capsys.readouterr()
    assert bench_main.main(["--interleaved", "threads", "--full", "--list"]) == 0
    assert capsys.readouterr().out.split() == [
        c.key for c in full_cases("cpu") if c.family == "lstm"
    ]
    assert bench_main.main(["--interleaved", "cpu_loops", "--device", "cuda", "--list"]) == 2
    assert "runs on cpu" in capsys.readouterr().err
    assert bench_main.main(["--interleaved", "attentive", "--list", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.split() == [
        c.key for c in quick_cases("cpu") if c.family == "attentive_lstm"
    ]


def test_time_interleaved_times_every_callable_once_a_round():
    from bench.timing import time_interleaved

    calls = []
    budget = TimingBudget(warmup_s=0, warmup_calls=2, min_reps=4, min_time_s=0, max_time_s=10)
    samples = time_interleaved(
        {"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, budget, CPU
    )
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4}
    assert calls == [(name, i) for i in range(6) for name in ("a", "b")]
    assert all(t >= 0 for v in samples.values() for t in v)


def test_rows_are_in_the_files_as_soon_as_measured(tmp_path):
    """ResultWriter: a row added is in the CSV and the JSON at once (a run stopped by a
    timeout keeps it); close() adds the final meta."""
    row = dict.fromkeys(COLUMNS)
    row.update(
        provider="p",
        case="lstm",
        mode="fwd",
        shape="B=1",
        dtype="float32",
        status="ok",
        p20_ms=1.0,
        p50_ms=2.0,
        p80_ms=3.0,
        reps=5,
    )
    writer = ResultWriter(tmp_path, "run", {"preset": "x"})
    assert read(tmp_path / "run.csv") == [] and read(tmp_path / "run.json") == []
    writer.add(row)
    assert read(tmp_path / "run.csv")[0]["p50_ms"] == 2.0
    assert read(tmp_path / "run.json")[0]["p50_ms"] == 2.0
    writer.add(dict(row, provider="q"))
    assert [r["provider"] for r in read(tmp_path / "run.csv")] == ["p", "q"]
    writer.close(seconds=1.5)
    assert json.loads((tmp_path / "run.json").read_text())["meta"] == {
        "preset": "x",
        "seconds": 1.5,
    }


def _add_lstm_cell_providers(monkeypatch, *extra: Provider):
    wl = WORKLOADS["lstm_cell"]
    original = wl.providers
    monkeypatch.setattr(
        wl, "providers", lambda case, device, options: original(case, device, options) + list(extra)
    )


def test_a_stopped_run_keeps_the_rows_before_the_stop(monkeypatch, tmp_path):
    """A run killed in its second (last) case, by an interrupt raised by its last provider,
    leaves every row measured before, with the speedups, in both files."""
    calls = {"n": 0}

    def stop_in_second_case(*a):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("stopped")
        raise Absent("not here")

    _add_lstm_cell_providers(monkeypatch, Provider("stopper", stop_in_second_case))
    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            bench_main.main(
                [
                    "--smoke",
                    "--filter",
                    "^lstm_cell/",
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                    "--no-progress",
                    "--out",
                    str(tmp_path),
                    "--name",
                    "stopped",
                    "--reps",
                    "3",
                    "--max-time",
                    "0.05",
                ]
            )
    finally:
        torch.set_num_threads(threads)
    for path in (tmp_path / "stopped.csv", tmp_path / "stopped.json"):
        rows = read(path)
        assert [(r["mode"], r["provider"]) for r in rows if r["provider"] == "nn.LSTMCell"] == [
            ("fwd", "nn.LSTMCell"),
            ("fwd+bwd", "nn.LSTMCell"),
        ]
        assert [(r["mode"], r["status"]) for r in rows if r["provider"] == "stopper"] == [
            ("fwd", "absent")
        ]
        ok = [r for r in rows if r["status"] == "ok"]
        assert ok and all(r["speedup"] > 0 for r in ok)


def test_provider_timeout_stops_one_provider_and_skips_it_later(monkeypatch):
    import time as _time

    def slow(*a):
        _time.sleep(3)
        raise AssertionError("the timeout did not stop this provider")

    _add_lstm_cell_providers(monkeypatch, Provider("slow", slow))
    budget = TimingBudget(warmup_s=0, warmup_calls=1, min_reps=3, min_time_s=0, max_time_s=0.05)
    runner = CaseRunner(CPU, Options(), budget, provider_timeout_s=0.5)
    first, second = (
        next(r for r in runner.run(c) if r["provider"] == "slow")
        for c in select(smoke_cases("cpu"), "^lstm_cell/")
    )
    assert first["status"] == "error" and "provider timeout" in first["note"]
    assert second["status"] == "error" and second["note"].startswith("not run")


def test_late_providers_run_after_every_other_provider(monkeypatch, tmp_path):
    wl = WORKLOADS["lstm_cell"]
    nn_cell = next(p for p in wl.providers(CELL_CASE, CPU, Options()) if p.name == "nn.LSTMCell")
    _add_lstm_cell_providers(monkeypatch, Provider("compiles_late", nn_cell.build, late=True))
    threads = torch.get_num_threads()
    try:
        assert (
            bench_main.main(
                [
                    "--smoke",
                    "--filter",
                    "^lstm_cell/",
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                    "--no-progress",
                    "--out",
                    str(tmp_path),
                    "--name",
                    "late",
                    "--reps",
                    "3",
                    "--max-time",
                    "0.05",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    order = [(r["mode"], r["provider"]) for r in read(tmp_path / "late.csv")]
    n = len(order)
    assert [p for _, p in order[n - 2 :]] == ["compiles_late"] * 2
    assert all(p != "compiles_late" for _, p in order[: n - 2])
    late = [r for r in read(tmp_path / "late.csv") if r["provider"] == "compiles_late"]
    assert all(r["status"] == "ok" and r["speedup"] > 0 for r in late)  # against the baseline


def test_flashrnn_layouts_match_nn_lstm():
    """The FlashRNN provider's weight and state layouts, through FlashRNN's plain-PyTorch
    backend ("vanilla") on the CPU in float64: nn.LSTM's outputs to rounding."""
    pytest.importorskip("flashrnn", reason="flashrnn is not installed")
    from bench.workloads.lstm import _flashrnn_forward

    torch.manual_seed(0)
    module = torch.nn.LSTM(5, 8, num_layers=2, dtype=torch.float64)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    want = module(x)
    got = _flashrnn_forward(module, x, backend="vanilla")
    for g, w in zip(got, (want[0], *want[1])):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
