"""Compile check of the CUDA sources on a machine without a GPU (and with a CPU build of torch).

Every csrc/cuda/*.cu is compiled with nvcc (-c, sm_80 and sm_90 in one call, the flags of
setup.py) and every csrc/cuda/*.cpp with the host compiler, against the installed torch's
headers plus tests/cuda_shim/ (the few headers that only a CUDA build of torch generates).
A compile error, or a compiler warning located in csrc/, fails the test. Files are compiled in
parallel, once per session. Skipped only when nvcc or a host compiler is absent.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SHIM = Path(__file__).resolve().parent / "cuda_shim"
ARCHS = ("80", "90")
TIMEOUT_S = 600


def _nvcc():
    candidates = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    for home in candidates:
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc"), str(Path(home) / "include")
    found = shutil.which("nvcc")
    if found:
        return found, str(Path(found).resolve().parents[1] / "include")
    return None, None


NVCC, CUDA_INCLUDE = _nvcc()
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
CU_FILES = sorted(CSRC.glob("cuda/*.cu"))
CPP_FILES = sorted(CSRC.glob("cuda/*.cpp"))

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not found")


def _include_flags():
    from torch.utils.cpp_extension import include_paths

    dirs = [str(CSRC), str(SHIM)] + include_paths() + [sysconfig.get_paths()["include"]]
    return [f"-I{d}" for d in dirs]


def _nvcc_command(src: Path, obj: Path):
    # Mirrors setup.py's nvcc flags (and the defines CUDAExtension adds).
    flags = ["-c", str(src), "-o", str(obj), "-std=c++17", "-O3", "--expt-relaxed-constexpr",
             "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
             "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
             "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
             "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-DLSTM_FUSED_WITH_CUDA=1",
             "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H",
             "--compiler-options", "-fPIC"]
    for arch in ARCHS:
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return [NVCC] + flags + _include_flags()


def _cxx_command(src: Path):
    return [CXX, "-fsyntax-only", "-std=c++17", "-fPIC", str(src), f"-I{CUDA_INCLUDE}",
            "-DLSTM_FUSED_WITH_CUDA=1", "-DTORCH_EXTENSION_NAME=_C",
            "-DTORCH_API_INCLUDE_EXTENSION_H"] + _include_flags()


def _warnings_in_our_code(output: str):
    """Compiler warnings whose location is a file of this repository's csrc/."""
    ours = []
    for line in output.splitlines():
        if "warning" in line.lower() and str(CSRC) in line:
            ours.append(line)
        elif re.match(r"^csrc/.*warning", line):
            ours.append(line)
    return ours


def _run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def compile_results(tmp_path_factory):
    """{source path: (return code, compiler output)} for every CUDA source, built in parallel."""
    out_dir = tmp_path_factory.mktemp("cuda_objs")
    jobs = {src: _nvcc_command(src, out_dir / (src.stem + ".o")) for src in CU_FILES}
    if CXX is not None:
        jobs.update({src: _cxx_command(src) for src in CPP_FILES})
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {src: pool.submit(_run, cmd) for src, cmd in jobs.items()}
        return {src: fut.result() for src, fut in futures.items()}


def test_there_are_cuda_sources():
    assert CU_FILES, f"no .cu files under {CSRC / 'cuda'}"


@pytest.mark.parametrize("src", CU_FILES, ids=lambda p: p.name)
def test_cu_file_compiles_for_sm80_and_sm90(compile_results, src):
    rc, output = compile_results[src]
    assert rc == 0, f"nvcc failed on {src.name}:\n{output[-6000:]}"
    ours = _warnings_in_our_code(output)
    assert not ours, f"nvcc warnings in csrc/ for {src.name}:\n" + "\n".join(ours)


@pytest.mark.skipif(CXX is None, reason="no host C++ compiler (g++/c++) found")
@pytest.mark.parametrize("src", CPP_FILES, ids=lambda p: p.name)
def test_cuda_host_cpp_compiles(compile_results, src):
    rc, output = compile_results[src]
    assert rc == 0, f"the host compiler failed on {src.name}:\n{output[-6000:]}"
    ours = _warnings_in_our_code(output)
    assert not ours, f"compiler warnings in csrc/ for {src.name}:\n" + "\n".join(ours)


def test_compile_check_catches_an_error(tmp_path):
    """The check itself can fail: a .cu with a type error must not compile with these flags."""
    bad = tmp_path / "bad.cu"
    bad.write_text('#include "lstm_cell_math.h"\n'
                   "__global__ void k(float* p) { p[0] = lstm_fused::cell_sigmoid(p); }\n")
    cmd = _nvcc_command(bad, tmp_path / "bad.o")
    cmd = [c for c in cmd if not c.startswith("-gencode")] + ["-gencode=arch=compute_80,code=sm_80"]
    rc, output = _run(cmd)
    assert rc != 0, output
    assert "error" in output.lower()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
