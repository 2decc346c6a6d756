"""The CPU benchmark's busy-machine and roofline tools (bench/load.py, bench/interleaved.py's
threads and roofline modes, bench/callgrind.py's parsing, --quick's providers)."""

import json
import re
import time

import pytest
import torch

from bench import __main__ as bench_main
from bench.callgrind import _case_from_key, _total_ir
from bench.cases import smoke_cases
from bench.load import spinning_load


def _alive(p) -> bool:
    return p.poll() is None


def test_spinning_load_starts_and_stops_its_processes_even_on_error():
    with pytest.raises(RuntimeError, match="stop"):
        with spinning_load(2) as procs:
            assert len(procs) == 2
            time.sleep(0.2)
            assert all(_alive(p) for p in procs)
            raise RuntimeError("stop")
    assert not any(_alive(p) for p in procs)
    with spinning_load(0) as none:
        assert none == []


def _interleaved_smoke(mode: str, out, *extra: str) -> dict:
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
    return json.loads((out / f"{mode}.json").read_text())


def test_interleaved_threads_times_both_libraries_at_one_thread_too(tmp_path):
    data = _interleaved_smoke("threads", tmp_path, "--filter", "B=2,T=5,I=6,H=8,", "--load", "1")
    assert data["meta"]["load_processes"] == 1
    rows = data["rows"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    for mode in ("fwd", "fwd+bwd"):
        names = [r["provider"] for r in rows if r["mode"] == mode]
        assert names == [
            "nn.LSTM",
            "lstm_fused:cpu",
            "lstm_fused:cpu[1 thread]",
            "nn.LSTM[1 thread]",
        ]
    for r in rows:
        assert r["status"] == "ok" and r["max_err"] <= r["tol"], r
        if r["provider"].endswith("[1 thread]"):
            assert "torch.set_num_threads(1)" in r["note"], r


def test_interleaved_roofline_reports_each_lstm_as_a_fraction_of_torch_mm(tmp_path):
    data = _interleaved_smoke("roofline", tmp_path)
    rows = data["rows"]
    for mode in ("fwd", "fwd+bwd"):
        by = {r["provider"]: r for r in rows if r["mode"] == mode}
        assert list(by) == ["nn.LSTM", "lstm_fused:cpu", "torch.mm[roofline]"]
        roof = by["torch.mm[roofline]"]
        assert roof["status"] == "ok" and roof["max_err"] is None
        assert "not an LSTM, not checked" in roof["note"]
        for name in ("nn.LSTM", "lstm_fused:cpu"):
            r = by[name]
            assert r["status"] == "ok" and r["max_err"] <= r["tol"], r
            frac = float(
                re.search(r"([0-9.]+) of torch\.mm\[roofline\]'s rate", r["note"]).group(1)
            )
            assert frac == pytest.approx(roof["p50_ms"] / r["p50_ms"], abs=0.006)
            # the same multiply-adds: the rates compare as the times do
            assert r["tflops"] == pytest.approx(
                roof["tflops"] * roof["p50_ms"] / r["p50_ms"], rel=0.05
            )


def test_quick_times_every_provider_but_the_reference():
    rx = re.compile(bench_main.QUICK_PROVIDERS)
    assert not rx.search("lstm_fused:reference")
    for name in ("nn.LSTM", "lstm_fused:cpu", "torch.unfused", "onnxruntime(nn.LSTM)"):
        assert rx.search(name)


def test_callgrind_reads_its_cases_and_totals(tmp_path):
    for case in smoke_cases("cpu")[:4]:
        assert _case_from_key(case.key) == case
    out = tmp_path / "callgrind.out"
    out.write_text("version: 1\ncreator: callgrind\nevents: Ir\nsummary: 123456\n")
    assert _total_ir(str(out)) == 123456
