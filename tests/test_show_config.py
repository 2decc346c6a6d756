"""python -m lstm_fused / lstm_fused.show_config(): what they say is what the build and the
machine are (lstm_fused/info.py). Also run against the installed wheel (tools/check_package.sh).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

import pytest
import torch

import lstm_fused
from lstm_fused import info
from lstm_fused.ops import library, registry

_C = library._C
needs_extension = pytest.mark.skipif(library.LOAD_ERROR is not None, reason=f"{library.LOAD_ERROR}")


def run(code: str) -> str:
    """stdout of a fresh Python that runs code (same environment, so the same switches)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rows(text: str) -> dict:
    """The '  key:   value' rows of show_config()'s text."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"  (\S[^:]*):\s+(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def backend_lines(text: str) -> dict:
    """(op family, backend) -> 'yes: ...' / 'no: ...' from show_config()'s text."""
    out, op = {}, None
    for line in text.splitlines():
        if re.match(r"    \S", line):
            op = line.strip()
        m = re.match(r"      (\S+)\s+((?:yes|no): .*)$", line)
        if m:
            out[(op, m.group(1))] = m.group(2)
    return out


def test_version_is_the_package_metadata_version():
    assert lstm_fused.__version__ == importlib.metadata.version("lstm_fused")
    text = info.format_info(info.collect())
    assert text.splitlines()[0] == f"lstm_fused {lstm_fused.__version__}"


def test_python_m_lstm_fused_prints_what_show_config_prints():
    # Both in fresh processes: this one's state (caches, switches) depends on the tests before.
    shown = run("import lstm_fused; lstm_fused.show_config()")
    proc = subprocess.run(
        [sys.executable, "-m", "lstm_fused"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == shown
    assert shown.startswith(f"lstm_fused {lstm_fused.__version__}\n")
    assert rows(shown)["location"] == os.path.dirname(lstm_fused.__file__)


@needs_extension
def test_build_record_matches_the_loaded_extension():
    built = info.build_info()
    assert built, "lstm_fused/_build_info.py is missing: setup.py writes it when it builds"
    assert built["version"] == lstm_fused.__version__
    # The torch this venv runs is the one the extension was built against (setup.sh, CI).
    assert built["torch"] == torch.__version__
    assert built["torch_cuda"] == torch.version.cuda
    assert built["cpu_variants"] == list(_C.cpu_capabilities_built())
    assert built["cuda"] == library.has_kernel("lstm_layer_forward", "CUDA")
    assert re.search(r"\d+\.\d+", built["compiler"]), built["compiler"]  # a version number
    commit = built["git_commit"]
    expected = os.environ.get("LSTM_FUSED_EXPECT_COMMIT")
    if expected:  # tools/check_package.sh: the commit the wheel was built from
        assert commit == expected
    else:  # a build from a git checkout records HEAD (+dirty), else what it was given
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit) or commit == os.environ.get(
            "LSTM_FUSED_GIT_COMMIT", ""
        ), commit


@needs_extension
def test_cpu_variants_built_runnable_and_chosen():
    shown = rows(info.format_info(info.collect()))["CPU kernels"]
    built, runnable = _C.cpu_capabilities_built(), _C.cpu_capabilities()
    assert shown == (
        f"built {', '.join(built)}; this CPU runs {', '.join(runnable)}; "
        f"chosen: {_C.cpu_capability()}"
    )
    try:  # a forced choice is what it reports
        _C.set_cpu_capability("default")
        assert rows(info.format_info(info.collect()))["CPU kernels"].endswith("chosen: default")
    finally:
        _C.set_cpu_capability("auto")


def test_torch_cuda_and_triton_rows():
    r = rows(info.format_info(info.collect()))
    assert r["torch"].startswith(f"{torch.__version__} (running), built against ")
    if torch.version.cuda is None:
        assert r["torch CUDA"] == "none (a CPU build of torch)"
    else:
        assert r["torch CUDA"] == torch.version.cuda
    if not torch.cuda.is_available():
        assert r["CUDA devices"] == "none"
    try:
        import triton
    except ImportError:
        assert r["triton"] == "not installed"
    else:
        assert r["triton"].startswith(triton.__version__)
    if not library.has_kernel("lstm_layer_forward", "CUDA"):
        assert r["CUDA kernels"].startswith("not built")


def test_every_backend_of_every_family_with_its_reason():
    shown = backend_lines(info.format_info(info.collect()))
    families = sorted(registry._REGISTRY)
    assert {"lstm_layer", "attentive_lstm", "mhsa"} <= set(families)
    for op in families:
        for name, impl in registry.implementations(op).items():
            line = shown[(op, name)]
            reason = impl.unavailable_reason()
            if reason is not None and reason == library.LOAD_ERROR:
                reason = "lstm_fused._C is not loaded (C++ extension, above)"
            assert line == f"no: {reason}" if reason else line.startswith("yes: "), (op, name)
            if reason is None:
                assert ", ".join(str(d).replace("torch.", "") for d in impl.dtypes) in line
        # available_backends() is the list of the "yes" lines
        assert [
            b for b in registry.BACKEND_NAMES[1:] if shown[(op, b)].startswith("yes")
        ] == registry.available_backends(op)
    # facts of this machine, independent of the registry
    assert shown[("lstm_layer", "reference")].startswith("yes: any device")
    if not torch.cuda.is_available():
        assert shown[("lstm_layer", "cuda")].startswith("no: ")
        assert "CUDA" in shown[("lstm_layer", "cuda")]


def test_without_the_extension_it_still_reports_why():
    # A broken install is when a report is filed: _C hidden, show_config still prints.
    out = run(
        "import sys; sys.modules['lstm_fused._C'] = None\n"
        "import lstm_fused; lstm_fused.show_config()"
    )
    r = rows(out)
    assert r["C++ extension"].startswith(
        "NOT LOADED: the C++ extension lstm_fused._C could not be loaded"
    )
    lines = backend_lines(out)
    for op in ("lstm_layer", "mhsa"):
        assert lines[(op, "cpu")] == "no: lstm_fused._C is not loaded (C++ extension, above)"
    assert lines[("lstm_layer", "reference")].startswith("yes: ")


def _synthetic(**changes):
    d = {
        "version": "9.9.9",
        "location": "/x/lstm_fused",
        "git_commit": None,
        "build_recorded": True,
        "python": "3.11.0 (linux, x86_64)",
        "torch_built": "2.11.0",
        "torch_running": "2.13.0+cpu",
        "compiler": "c++: g++ 12.2.0",
        "debug_build": False,
        "extension_error": None,
        "cpu_variants": {
            "built": ["default", "avx2"],
            "runnable": ["default"],
            "chosen": "default",
        },
        "cuda_built": True,
        "cuda_archs": ["80", "90"],
        "cuda_toolkit": "release 13.0, V13.0.88",
        "torch_cuda_built": "13.0",
        "torch_cuda_running": "13.0",
        "cuda_devices": [("NVIDIA H100 80GB HBM3", "sm_90")],
        "triton": None,
        "triton_reason": "triton is not installed",
        "switches": {"LSTM_FUSED_BACKEND": "cpu"},
        "backends": {
            "lstm_layer": {"cuda": {"reason": None, "devices": ["cuda"], "dtypes": ["float32"]}}
        },
    }
    d.update(changes)
    return d


def test_format_of_a_cuda_build_and_of_mismatches():
    text = info.format_info(_synthetic())
    r = rows(text)
    assert r["git commit"].startswith("unknown")
    assert "differs: rebuild lstm_fused against the torch you run" in r["torch"]
    assert r["CUDA kernels"] == (
        "built for sm_80, sm_90 with CUDA toolkit release 13.0, V13.0.88 (torch's CUDA 13.0)"
    )
    assert r["CUDA devices"] == "NVIDIA H100 80GB HBM3 (sm_90)"
    assert r["CPU kernels"] == "built default, avx2; this CPU runs default; chosen: default"
    assert r["triton"] == "not installed"
    assert r["switches set"] == "LSTM_FUSED_BACKEND=cpu"
    assert backend_lines(text)[("lstm_layer", "cuda")] == "yes: cuda; float32"
    same = rows(info.format_info(_synthetic(torch_built="2.13.0+cpu")))["torch"]
    assert "differs" not in same
    unrecorded = rows(
        info.format_info(_synthetic(build_recorded=False, torch_built=None, cuda_built=None))
    )
    assert unrecorded["build record"].startswith("none")
    assert unrecorded["torch"] == "2.13.0+cpu (running), built against not recorded"
    assert unrecorded["CUDA kernels"] == "not recorded"
