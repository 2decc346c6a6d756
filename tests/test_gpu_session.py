"""The GPU session's tools, checked without a GPU: tools/gpu_session.sh dry-runs (every stage
says why it is skipped, the probes run emulated and fill results.tsv with the model's
predictions, the script ends 0 with a log per stage, at most 8 files, timeouts inside the
budget of one ~7.5-minute call), tools/gpu_sanitize.py tells a wrong answer from a refusal, the
benchmark has the gate-path provider beside the tensor-core one, and the suite collects where
the optional test tools are missing (as on the GPU machine)."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "gpu_session.sh"
COMMAND_LIMIT_S = 600  # the device tool's limit on one command
STAGES = (
    "info",
    "probes",
    "build",
    "tests",
    "headline",
    "memcheck",
    "synccheck",
    "racecheck",
    "graph",
    "bench",
)
# The call must leave room for a rerun within a 15-minute device lease (start-up included).
BUDGET_MAX_S = 450


def _dry_run(tmp_path: Path, *args: str) -> tuple:
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, GPU_SESSION_DRY="1")
    env.pop("TRITON_INTERPRET", None)  # the sanitizer's dry run: the CPU backend alone (fast)
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    return proc, out


def _statuses(session_log: str) -> dict:
    """Stage -> its line in the summary at the end of session.log."""
    summary = session_log.split("== summary", 1)[1]
    return dict(re.findall(r"^  (\w+) +(.+)$", summary, re.M))


def _plan(session_log: str) -> dict:
    """Stage -> its timeout; the probes (which run while the build compiles) apart."""
    return {s: int(v) for s, v in re.findall(r"^plan: (\w+) timeout (\d+) s", session_log, re.M)}


def _check_budget(session_log: str, stages) -> None:
    plan, budget = _plan(session_log), _budget(session_log)
    assert set(plan) == set(stages), plan
    serial = sum(v for s, v in plan.items() if s != "probes")
    assert serial <= budget <= BUDGET_MAX_S, (plan, budget)
    assert budget + 10 <= COMMAND_LIMIT_S - 45
    if "probes" in plan and "build" in plan:  # the probes fit inside the build's window
        assert plan["probes"] < plan["build"]
        assert "plan: probes timeout" in session_log and "(while the build compiles)" in session_log


def _budget(session_log: str) -> int:
    return int(re.search(r"budget (\d+) s", session_log).group(1))


def _check_files_come_back(out: Path) -> list:
    """What the device tool returns: at most 8 files, 2 folders deep, plain names."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, files
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3, rel
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
    return sorted(str(p.relative_to(out)) for p in files)


@pytest.fixture(scope="module")
def full_dry_run(tmp_path_factory):
    """(process, OUT) of one dry run of every stage, shared by the tests that read it."""
    return _dry_run(tmp_path_factory.mktemp("dry"))


def test_dry_run_ends_0_and_every_stage_says_why_it_is_skipped(full_dry_run):
    proc, out = full_dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert _check_files_come_back(out) == [
        "bench.log",
        "build.log",
        "results.tsv",
        "sanitize.log",
        "session.log",
        "tests.log",
    ]
    session = (out / "session.log").read_text()
    assert session.strip() == proc.stdout.strip()  # the script's output is session.log
    assert not (REPO / "-").exists()  # nothing written into the checkout
    status = _statuses(session)
    assert set(status) == set(STAGES), status
    assert status["info"].startswith("ok")
    assert status["probes"].startswith("skipped: no GPU (GPU_SESSION_DRY=1); the emulated probes")
    for stage in STAGES[2:]:
        if stage == "graph" and not (REPO / "tests" / "test_graph_capture.py").exists():
            assert status[stage].startswith("skipped: tests/test_graph_capture.py does not exist")
            continue
        assert status[stage].startswith("skipped: no GPU (GPU_SESSION_DRY=1)"), (
            stage,
            status[stage],
        )
    # Each stage's log has its own line, and the dry part it could do:
    assert "FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH=90" in (out / "build.log").read_text()
    tests_log = (out / "tests.log").read_text()
    assert "tests/test_cuda_lstm.py" in tests_log and "-m 'not slow_compile'" in tests_log
    assert re.search(r"\d+/\d+ tests collected|\d+ tests collected", tests_log), tests_log[-500:]
    sanitize_log = (out / "sanitize.log").read_text()
    assert "gpu_sanitize: passed" in sanitize_log and "summary cpu: 9 ok" in sanitize_log
    bench_log = (out / "bench.log").read_text()
    for dtype in ("bfloat16", "float16"):
        for mode in ("fwd", "fwd+bwd"):
            assert f"lstm/{mode}/B=16,T=1024,I=768,H=768,L=1,D=1/{dtype}" in bench_log
    _check_budget(session, STAGES)


def test_dry_run_probes_fill_the_result_table(full_dry_run):
    """The emulated probes (mma self-test, a tiny checked exchange) write their rows, with the
    model's prediction beside each, into results.tsv; the summary prints them."""
    proc, out = full_dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    with open(out / "results.tsv", newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    header, rows = table[0], table[1:]
    assert header[:6] == ["stage", "measurement", "measured", "unit", "status", "predicted (model)"]
    measured = {r[1]: r for r in rows if not r[1].startswith("stage/")}
    mma = [k for k in measured if k.startswith("mma_selftest/")]
    assert len(mma) == 8 and all(measured[k][4] == "ok" for k in mma), measured
    assert all(measured[k][5].startswith("0 (exact") for k in mma)
    exchange = [k for k in measured if k.startswith("exchange/emulated/")]
    assert [k.rsplit("/", 1)[1] for k in exchange] == ["flags+fetch", "grid+fetch"]
    assert all(measured[k][4] == "ok" and "errors 0" in measured[k][6] for k in exchange)
    assert "-- measurements (results.tsv" in proc.stdout
    stage_rows = {r[1]: r[4] for r in rows if r[1].startswith("stage/")}
    assert stage_rows == {"stage/info": "ok"}, stage_rows  # the stages that ran write a row too


def test_bench_switch_runs_only_the_benchmark(tmp_path):
    proc, out = _dry_run(tmp_path, "bench")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert _check_files_come_back(out) == ["bench.log", "build.log", "results.tsv", "session.log"]
    session = (out / "session.log").read_text()
    assert set(_statuses(session)) == {"info", "build", "bench"}
    _check_budget(session, ("info", "build", "bench"))


def test_script_runs_the_measurements_in_the_order_of_their_value():
    """Probes before the build's results are needed, correctness before the sanitizers, the
    timings last; the build starts in the background so that a failed build still returns
    the probe rows."""
    text = SCRIPT.read_text()
    body = text.split(
        "# ---------------------------------------------------------------------------- run them", 1
    )[1]
    order = [
        body.index(s)
        for s in (
            "run_step build",
            "run_step probes",
            'wait "$BUILD_PID"',
            "run_step tests",
            "run_step headline",
            "run_step memcheck",
            "run_step synccheck",
            "run_step racecheck",
            "run_step graph",
            "run_step bench",
        )
    ]
    assert order == sorted(order)
    assert 'run_step build "$OUT/build.log" bash -c stage_build &' in body


def test_bench_times_the_gate_path_beside_the_tensor_core_path(monkeypatch):
    """On CUDA the LSTM workload has lstm_fused:cuda (the tensor-core loop where it fits) and
    lstm_fused:cuda[gates], whose every call runs under the switch cuda_path="gates"; the
    session's provider pattern selects both, cuDNN and FlashRNN."""
    from bench.cases import headline_cases
    from bench.workloads import WORKLOADS
    from bench.workloads import lstm as lstm_workload
    from bench.workloads.base import Impl, Options
    from lstm_fused import switches

    monkeypatch.setattr(
        lstm_workload,
        "lstm_fused_backends",
        lambda device: (
            ["cuda", "triton", "reference"] if device.type == "cuda" else ["cpu", "reference"]
        ),
    )
    wl = WORKLOADS["lstm"]
    case = headline_cases("cuda")[0]
    providers = {p.name: p for p in wl.providers(case, torch.device("cuda"), Options())}
    pattern = re.search(r"BENCH_PROVIDERS='([^']+)'", SCRIPT.read_text()).group(1) + "|flashrnn"
    chosen = {n for n in providers if re.search(pattern, n)}
    assert chosen == {"nn.LSTM", "lstm_fused:cuda", "lstm_fused:cuda[gates]", "flashrnn"}
    seen = []
    monkeypatch.setattr(
        type(wl),
        "_fused",
        lambda self, case, state, dtype, device, backend: Impl(
            lambda inputs: seen.append((backend, switches.get("cuda_path")))
        ),
    )
    impl = providers["lstm_fused:cuda[gates]"].build(case, {}, torch.bfloat16, torch.device("cuda"))
    with impl.context():
        impl.call({})
    assert seen == [("cuda", "gates")] and switches.get("cuda_path") == ""
    cpu = {p.name for p in wl.providers(case, torch.device("cpu"), Options())}
    assert "lstm_fused:cuda[gates]" not in cpu


def test_unknown_stage_is_refused(tmp_path):
    proc, _ = _dry_run(tmp_path, "benchmark")
    assert proc.returncode == 2 and "unknown stage 'benchmark'" in proc.stdout


# ------------------------------------------------------------------ tools/gpu_sanitize.py


@pytest.fixture(scope="module")
def sanitize():
    spec = importlib.util.spec_from_file_location(
        "gpu_sanitize", REPO / "tools" / "gpu_sanitize.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sanitize_call_fails_on_a_wrong_answer_and_reports_a_refusal(sanitize):
    cpu = torch.device("cpu")
    builder = sanitize.masked_softmax

    def off_by_a_little(backend, dtype, device, gen):
        module, inputs, forward = builder(backend, dtype, device, gen)
        if backend == "reference":
            return module, inputs, forward
        return module, inputs, lambda t: tuple(o * 1.001 for o in forward(t))

    status, detail = sanitize.run_call(
        "wrong", off_by_a_little, True, {}, "cpu", torch.float32, cpu, seed=3
    )
    assert status == "FAIL" and "max normalised error" in detail
    status, _ = sanitize.run_call("right", builder, True, {}, "cpu", torch.float32, cpu, seed=3)
    assert status == "ok"
    status, detail = sanitize.run_call(
        "no cuda here", builder, True, {}, "cuda", torch.float32, cpu, seed=3
    )
    assert status == "refused" and "cuda" in detail


def test_sanitize_differentiates_every_input_and_parameter_once(sanitize):
    names, tensors = sanitize.evaluate(
        sanitize.attention_pooling,
        "cpu",
        torch.float32,
        torch.device("cpu"),
        seed=0,
        differentiate=True,
    )
    import lstm_fused

    params = [n for n, _ in lstm_fused.AttentionPooling(12, 6, query_size=4).named_parameters()]
    assert len(params) >= 3
    assert names == ["output 0", "output 1", "grad x", "grad q"] + [f"grad {n}" for n in params]
    assert all(torch.isfinite(t).all() for t in tensors)


# ------------------------------------------------------------------ optional test tools

OPTIONAL_TOOLS = (
    "hypothesis",
    "expecttest",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "statsmodels",
    "sklearn",
    "matplotlib",
    "tqdm",
)
# numpy is not among them: Triton's interpreter, which the suite runs on without a GPU, needs it.

COLLECT_WITHOUT = r"""
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"]))
"""


def test_suite_collects_without_the_optional_test_tools():
    """As on a machine without hypothesis, expecttest, onnx*, statsmodels, scikit-learn,
    matplotlib and tqdm (imports of them fail; no plugin is auto-loaded): every test module
    still collects, and the ones that need a missing tool are skipped, not errors."""
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.run(
        [sys.executable, "-c", COLLECT_WITHOUT, ",".join(OPTIONAL_TOOLS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "error" not in proc.stdout.splitlines()[-1], tail
    assert re.search(r"\d+ tests collected", proc.stdout), tail
    assert "test_hypothesis.py" not in proc.stdout  # skipped at collection: no test of it listed
