"""nvcc / host-compiler runs of csrc/cuda/ for the compile tests, cached on disk.

Used by tests/test_cuda_compile.py (does every CUDA source compile, without warnings in csrc/)
and tests/test_cuda_resources.py (registers, spills, shared memory per kernel, from the same
compile's `--resource-usage` output). Every .cu is compiled once for sm_80 and sm_90 together
with the flags of setup.py; the C++ standard is the one torch.utils.cpp_extension uses for the
installed torch. Without a CUDA build of torch, tests/cuda_shim/ supplies the few headers only
a CUDA build generates.

Cache: one JSON file per compile, named by a hash of the source, every header under csrc/ and
tests/cuda_shim/, the command line, `nvcc --version` and torch's version, in
$LSTM_FUSED_COMPILE_CACHE (default .cicache/compile/ under the repository, git-ignored). A
second run with nothing changed reads the results back in seconds; change a header or a flag
and its files compile again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SHIM = Path(__file__).resolve().parent / "cuda_shim"
ARCHS = ("80", "90")
TIMEOUT_S = 900
CU_FILES = sorted(CSRC.glob("cuda/*.cu"))
CPP_FILES = sorted(CSRC.glob("cuda/*.cpp"))


def find_nvcc():
    """(nvcc, its toolkit's include folder), or (None, None)."""
    for home in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc"), str(Path(home) / "include")
    found = shutil.which("nvcc")
    if found:
        real = Path(found).resolve()
        return str(real), str(real.parents[1] / "include")
    return None, None


NVCC, CUDA_INCLUDE = find_nvcc()
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def torch_cxx_std():
    """The -std=... that torch.utils.cpp_extension passes to g++ and nvcc for this torch.

    torch has no public function for it: it is the newest "-std=c++NN" in the source of its
    BuildExtension (the setup.py path), e.g. c++17 up to torch 2.9, c++20 from 2.11."""
    from torch.utils import cpp_extension

    found = re.findall(r"c\+\+(\d\d)", inspect.getsource(cpp_extension.BuildExtension))
    if not found:
        raise RuntimeError(
            "cannot find the C++ standard in torch.utils.cpp_extension."
            "BuildExtension; update tests/cuda_build_helpers.py"
        )
    return f"-std=c++{max(found, key=int)}"


def include_flags():
    from torch.utils.cpp_extension import include_paths

    dirs = [str(CSRC), str(SHIM)] + include_paths() + [sysconfig.get_paths()["include"]]
    return [f"-I{d}" for d in dirs]


def nvcc_command(src: Path, obj: Path, archs=ARCHS, resource_usage=True):
    """nvcc -c of one .cu with setup.py's flags (and the defines CUDAExtension adds)."""
    flags = [
        "-c",
        str(src),
        "-o",
        str(obj),
        torch_cxx_std(),
        "-O3",
        "-lineinfo",
        "--expt-relaxed-constexpr",
        "-D__CUDA_NO_HALF_OPERATORS__",
        "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-D__CUDA_NO_HALF2_OPERATORS__",
        "-U__CUDA_NO_HALF_OPERATORS__",
        "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-DLSTM_FUSED_WITH_CUDA=1",
        "-DTORCH_EXTENSION_NAME=_C",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "--compiler-options",
        "-fPIC",
    ]
    if resource_usage:
        flags.append("--resource-usage")
    for arch in archs:
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return [NVCC] + flags + include_flags()


def cxx_command(src: Path):
    """The host compiler's syntax check of one csrc/cuda/*.cpp (the torch and CUDA headers)."""
    return [
        CXX,
        "-fsyntax-only",
        torch_cxx_std(),
        "-fPIC",
        str(src),
        f"-I{CUDA_INCLUDE}",
        "-DLSTM_FUSED_WITH_CUDA=1",
        "-DTORCH_EXTENSION_NAME=_C",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
    ] + include_flags()


def warnings_in_our_code(output: str):
    """Compiler warnings whose location is a file of this repository's csrc/."""
    ours = []
    for line in output.splitlines():
        if "warning" in line.lower() and str(CSRC) in line:
            ours.append(line)
        elif re.match(r"^csrc/.*warning", line):
            ours.append(line)
    return ours


def run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    return proc.returncode, proc.stdout + proc.stderr


def cache_dir() -> Path:
    d = Path(os.environ.get("LSTM_FUSED_COMPILE_CACHE") or ROOT / ".cicache" / "compile")
    d.mkdir(parents=True, exist_ok=True)
    return d


_TOOL_VERSIONS = {}


def _tool_version(tool):
    if tool not in _TOOL_VERSIONS:
        _TOOL_VERSIONS[tool] = run([tool, "--version"])[1]
    return _TOOL_VERSIONS[tool]


def _headers():
    files = [p for p in sorted(CSRC.rglob("*")) if p.suffix in (".h", ".cuh")]
    return files + sorted(p for p in SHIM.rglob("*") if p.is_file())


def cache_key(src: Path, cmd) -> str:
    import torch

    h = hashlib.sha256()
    for f in [src] + _headers():
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    # the object path is a temporary folder: not part of the key
    h.update(json.dumps([c for c in cmd if not c.endswith(".o")]).encode())
    h.update(_tool_version(cmd[0]).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:32]


def compile_cached(src: Path, cmd):
    """(return code, compiler output, whether it came from the cache) of cmd compiling src."""
    entry = cache_dir() / f"{src.stem}-{cache_key(src, cmd)}.json"
    if entry.exists():
        data = json.loads(entry.read_text())
        return data["rc"], data["output"], True
    start = time.monotonic()
    rc, output = run(cmd)
    seconds = round(time.monotonic() - start, 1)  # wall time of the compile, for the record
    tmp = entry.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rc": rc, "output": output, "cmd": cmd, "seconds": seconds}))
    tmp.replace(entry)
    return rc, output, False


def compile_all(out_dir: Path):
    """{source: (rc, output, cached)} for every csrc/cuda .cu (nvcc, sm_80 + sm_90, resource
    usage) and .cpp (host syntax check), the uncached ones compiled in parallel."""
    jobs = {src: nvcc_command(src, out_dir / (src.stem + ".o")) for src in CU_FILES}
    if CXX is not None:
        jobs.update({src: cxx_command(src) for src in CPP_FILES})
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {src: pool.submit(compile_cached, src, cmd) for src, cmd in jobs.items()}
        return {src: fut.result() for src, fut in futures.items()}


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_usage(output: str):
    """[{kernel, arch, registers, stack, spill_stores, spill_loads, smem}] from ptxas's
    --resource-usage lines (smem: static shared memory, bytes)."""
    kernels, cur = [], None
    for line in output.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = {
                "kernel": m.group(1),
                "arch": m.group(2),
                "registers": None,
                "stack": 0,
                "spill_stores": 0,
                "spill_loads": 0,
                "smem": 0,
            }
            kernels.append(cur)
            continue
        if cur is None:
            continue
        m = _STACK.search(line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m.group(1))
            s = _SMEM.search(line)
            cur["smem"] = int(s.group(1)) if s else 0
    return kernels


def demangle(names):
    """Readable kernel names (c++filt when present, else the mangled names)."""
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return list(names)
    proc = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    out = proc.stdout.splitlines()
    return out if len(out) == len(names) else list(names)
