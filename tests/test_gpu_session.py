"""The GPU session's tools, checked without a GPU: tools/gpu_session.sh dry-runs (every stage
says why it is skipped, the script ends 0 with a log per stage, at most 8 files, timeouts
inside the 10-minute command), tools/gpu_sanitize.py tells a wrong answer from a refusal,
and the suite collects where the optional test tools are missing (as on the GPU machine)."""
from __future__ import annotations

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
STAGES = ("info", "build", "tests", "memcheck", "racecheck", "bench")


def _dry_run(tmp_path: Path, *args: str) -> tuple:
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, GPU_SESSION_DRY="1")
    env.pop("TRITON_INTERPRET", None)  # the sanitizer's dry run: the CPU backend alone (fast)
    proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, out


def _statuses(session_log: str) -> dict:
    """Stage -> its line in the summary at the end of session.log."""
    summary = session_log.split("== summary", 1)[1]
    return dict(re.findall(r"^  (\w+) +(.+)$", summary, re.M))


def _plan(session_log: str) -> dict:
    return {s: int(v) for s, v in re.findall(r"^plan: (\w+) timeout (\d+) s$", session_log, re.M)}


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


def test_dry_run_ends_0_and_every_stage_says_why_it_is_skipped(tmp_path):
    proc, out = _dry_run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert _check_files_come_back(out) == ["bench.log", "build.log", "sanitize.log",
                                           "session.log", "tests.log"]
    session = (out / "session.log").read_text()
    assert session.strip() == proc.stdout.strip()  # the script's output is session.log
    status = _statuses(session)
    assert set(status) == set(STAGES), status
    assert status["info"].startswith("ok")
    for stage in STAGES[1:]:
        assert status[stage].startswith("skipped: no GPU (GPU_SESSION_DRY=1)"), status[stage]
    # Each stage's log has its own line, and the dry part it could do:
    assert "FORCE_CUDA=1 LSTM_FUSED_CUDA_ARCH=90" in (out / "build.log").read_text()
    tests_log = (out / "tests.log").read_text()
    assert "-m 'not slow_compile'" in tests_log and "--ignore=tests/test_cuda_emulated.py" in tests_log
    assert re.search(r"\d+/\d+ tests collected|\d+ tests collected", tests_log), tests_log[-500:]
    assert "test_cuda_emulated" not in tests_log.split("--ignore", 1)[0]
    sanitize_log = (out / "sanitize.log").read_text()
    assert "gpu_sanitize: passed" in sanitize_log and "summary cpu: 9 ok" in sanitize_log
    bench_log = (out / "bench.log").read_text()
    for dtype in ("bfloat16", "float16"):
        for mode in ("fwd", "fwd+bwd"):
            assert f"lstm/{mode}/B=16,T=1024,I=768,H=768,L=1,D=1/{dtype}" in bench_log
    # The timeouts of the first call add up to its budget, inside the command limit with the
    # kill grace (10 s) and a margin.
    plan, budget = _plan(session), _budget(session)
    assert set(plan) == set(STAGES)
    assert sum(plan.values()) <= budget and budget + 10 <= COMMAND_LIMIT_S - 45, (plan, budget)


def test_bench_switch_runs_only_the_benchmark(tmp_path):
    proc, out = _dry_run(tmp_path, "bench")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert _check_files_come_back(out) == ["bench.log", "build.log", "session.log"]
    session = (out / "session.log").read_text()
    assert set(_statuses(session)) == {"info", "build", "bench"}
    plan, budget = _plan(session), _budget(session)
    assert set(plan) == {"info", "build", "bench"}
    assert sum(plan.values()) <= budget and budget + 10 <= COMMAND_LIMIT_S - 45, (plan, budget)


def test_unknown_stage_is_refused(tmp_path):
    proc, _ = _dry_run(tmp_path, "benchmark")
    assert proc.returncode == 2 and "unknown stage 'benchmark'" in proc.stdout


# ------------------------------------------------------------------ tools/gpu_sanitize.py

@pytest.fixture(scope="module")
def sanitize():
    spec = importlib.util.spec_from_file_location("gpu_sanitize", REPO / "tools" / "gpu_sanitize.py")
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

    status, detail = sanitize.run_call("wrong", off_by_a_little, True, {}, "cpu",
                                       torch.float32, cpu, seed=3)
    assert status == "FAIL" and "max normalised error" in detail
    status, _ = sanitize.run_call("right", builder, True, {}, "cpu", torch.float32, cpu, seed=3)
    assert status == "ok"
    status, detail = sanitize.run_call("no cuda here", builder, True, {}, "cuda",
                                       torch.float32, cpu, seed=3)
    assert status == "refused" and "cuda" in detail


def test_sanitize_differentiates_every_input_and_parameter_once(sanitize):
    names, tensors = sanitize.evaluate(sanitize.attention_pooling, "cpu", torch.float32,
                                       torch.device("cpu"), seed=0, differentiate=True)
    import lstm_fused

    params = [n for n, _ in lstm_fused.AttentionPooling(12, 6, query_size=4).named_parameters()]
    assert len(params) >= 3
    assert names == ["output 0", "output 1", "grad x", "grad q"] + [f"grad {n}" for n in params]
    assert all(torch.isfinite(t).all() for t in tensors)


# ------------------------------------------------------------------ optional test tools

OPTIONAL_TOOLS = ("hypothesis", "expecttest", "onnx", "onnxruntime", "onnxscript", "statsmodels",
                  "sklearn", "matplotlib", "tqdm")
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
    proc = subprocess.run([sys.executable, "-c", COLLECT_WITHOUT, ",".join(OPTIONAL_TOOLS)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "error" not in proc.stdout.splitlines()[-1], tail
    assert re.search(r"\d+ tests collected", proc.stdout), tail
    assert "test_hypothesis.py" not in proc.stdout  # skipped at collection: no test of it listed
