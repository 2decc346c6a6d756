"""The inference benchmark (bench/workloads/inference_onnx.py, `python -m bench --interleaved
inference`): the frozen LSTM's three weight types and torch.ao's dynamically quantized LSTM are
checked against the float64 reference with their stated tolerance, then timed with nn.LSTM,
lstm_fused:cpu and onnxruntime."""

import json

import torch

from bench import __main__ as bench_main
from bench.cases import full_cases, quick_cases
from bench.workloads.inference_onnx import QUANTIZED_TOLERANCE


def test_inference_cases_cover_the_deployment_batches():
    def batches(cases):
        return sorted(c.dims["B"] for c in cases if c.family == "inference_onnx")

    assert batches(quick_cases("cpu")) == [1, 8, 32]
    assert batches(full_cases("cpu")) == [1, 2, 4, 8, 32]


def test_interleaved_inference_checks_each_provider_with_its_tolerance(tmp_path):
    threads = torch.get_num_threads()
    try:
        argv = ["--interleaved", "inference", "--smoke", "--device", "cpu", "--threads", "1"]
        assert bench_main.main(argv + ["--no-progress", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    (path,) = tmp_path.glob("*.json")
    rows = {r["provider"]: r for r in json.loads(path.read_text())["rows"]}
    for name in ("lstm_fused:frozen(float32)", "nn.LSTM", "lstm_fused:cpu"):
        assert rows[name]["status"] == "ok" and rows[name]["tol"] == 2e-4, rows[name]
    for name, kind in (
        ("lstm_fused:frozen(bfloat16)", "bfloat16"),
        ("lstm_fused:frozen(qint8)", "qint8"),
        ("torch.ao.dynamic(qint8)", "qint8"),
    ):
        r = rows[name]
        assert r["status"] in ("ok", "absent"), r  # absent: a torch without fbgemm
        if r["status"] == "ok":
            assert r["tol"] == QUANTIZED_TOLERANCE[kind], r
            assert 0 < r["max_err"] <= r["tol"] and r["p50_ms"] > 0, r
    assert rows["lstm_fused:frozen(qint8)"]["status"] == "ok"
