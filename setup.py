"""Build lstm_fused: one torch extension, lstm_fused._C.

C++ CPU sources (csrc/*.cpp, csrc/cpu/*.cpp) are always built. CUDA sources (csrc/cuda/*.cu)
are added when a CUDA toolkit is found and torch is a CUDA build. The decision is made from the
toolkit, never from torch.cuda.is_available(), so a wheel can be built on a machine without a
GPU. Environment switches:

    LSTM_FUSED_CUDA=0|1       force the CUDA part off / on (FORCE_CUDA=1 also forces it on)
    CUDA_HOME                 the CUDA toolkit (bin/nvcc, include/cuda_runtime.h); torch guesses it
                              from nvcc on PATH when unset
    LSTM_FUSED_CUDA_ARCH      e.g. "80;90" (default "80;90"), compute capabilities to build
    LSTM_FUSED_CPU_ISA=avx512|avx2|default
                              vectorise the CPU cell math for that instruction set (default: the
                              best the build machine has; the extension refuses to load on a CPU
                              without it)
    LSTM_FUSED_DEBUG=1        -O0 -g
"""
import glob
import os
import platform
import shutil

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name, default=None):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value not in ("0", "false", "False", "no", "off")


def _cuda_toolkit_problem():
    """Why CUDA_HOME (as torch.utils.cpp_extension found it) is not a usable toolkit, or None.

    torch takes $CUDA_HOME, else $CUDA_PATH, else the folder above the nvcc on PATH, else
    /usr/local/cuda; a wrapper script on PATH makes it guess a folder without the headers."""
    if CUDA_HOME is None:
        return ("torch.utils.cpp_extension found no CUDA toolkit (it tries $CUDA_HOME, "
                "$CUDA_PATH, the folder above the nvcc on PATH, /usr/local/cuda)")
    missing = [p for p in (os.path.join("bin", "nvcc"), os.path.join("include", "cuda_runtime.h"))
               if not os.path.exists(os.path.join(CUDA_HOME, p))]
    if missing:
        source = "$CUDA_HOME" if os.environ.get("CUDA_HOME") else "torch's guess"
        return f"CUDA_HOME={CUDA_HOME} ({source}) has no {' or '.join(missing)}"
    return None


def _want_cuda():
    forced = _flag("LSTM_FUSED_CUDA")
    if forced is None and _flag("FORCE_CUDA"):
        forced = True
    if forced is False:
        return False
    toolkit_problem = _cuda_toolkit_problem()
    torch_has_cuda = torch.version.cuda is not None
    if forced and (toolkit_problem or not torch_has_cuda):
        reasons = []
        if toolkit_problem:
            reasons.append(
                f"{toolkit_problem}; set CUDA_HOME to the toolkit's own folder, the one with "
                "bin/nvcc and include/cuda_runtime.h, e.g. CUDA_HOME=/usr/local/cuda-13.0")
        if not torch_has_cuda:
            reasons.append(f"torch {torch.__version__} is a CPU-only build; install a CUDA build "
                           "of torch")
        raise RuntimeError("LSTM_FUSED_CUDA=1/FORCE_CUDA=1 but the CUDA part cannot be built: "
                           + "; ".join(reasons))
    return toolkit_problem is None and torch_has_cuda


_ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "default": [],
}


def _cpu_isa():
    isa = os.environ.get("LSTM_FUSED_CPU_ISA")
    if isa:
        if isa not in _ISA_FLAGS:
            raise ValueError(f"LSTM_FUSED_CPU_ISA must be one of {sorted(_ISA_FLAGS)}, got {isa!r}")
        return isa
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return "default"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


def _cuda_arch_flags():
    archs = os.environ.get("LSTM_FUSED_CUDA_ARCH", "80;90").replace(",", ";")
    flags = []
    for arch in filter(None, (a.strip().replace(".", "") for a in archs.split(";"))):
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


def _extension():
    debug = _flag("LSTM_FUSED_DEBUG", False)
    use_cuda = _want_cuda()
    isa = _cpu_isa()

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    # No -std here: torch.utils.cpp_extension adds the standard the installed torch's headers
    # need (C++20 for torch 2.11 to 2.14), to the g++ and the nvcc flags alike.
    cxx += ["-fopenmp"]
    define_macros = []
    cxx += _ISA_FLAGS[isa]
    if isa != "default":
        define_macros.append((f"LSTM_FUSED_{isa.upper()}", "1"))
    extra = {"cxx": cxx}
    if use_cuda:
        # Kernels and launchers (.cu, no torch headers: one file per dtype / head size so that
        # ninja compiles them in parallel) and their host code (.cpp, compiled by g++).
        sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        define_macros.append(("LSTM_FUSED_WITH_CUDA", "1"))
        extra["nvcc"] = (["-O0", "-g", "-G"] if debug else ["-O3", "-lineinfo"]) + [
            "--expt-relaxed-constexpr", "-U__CUDA_NO_HALF_OPERATORS__",
            "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        ] + _cuda_arch_flags()
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    print(f"lstm_fused: building with CUDA={use_cuda} CPU ISA={isa} debug={debug}")
    return ext_cls(
        name="lstm_fused._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )


class _BuildExt(BuildExtension.with_options(use_ninja=True)):
    """torch's BuildExtension (ninja); afterwards ninja's log (per-file compile times) is copied
    to build/ninja_log, since `pip install -e` builds in a temporary folder that it deletes."""

    def build_extensions(self):
        try:
            super().build_extensions()
        finally:
            log = os.path.join(self.build_temp, ".ninja_log")
            if os.path.exists(log):
                os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
                shutil.copyfile(log, os.path.join(ROOT, "build", "ninja_log"))


setup(
    name="lstm_fused",
    version="0.1.0",
    description="Fused LSTM and attention kernels for PyTorch (CUDA C++, Triton, C++ CPU)",
    packages=find_packages(include=["lstm_fused", "lstm_fused.*"]) + ["lstm_fused.triton_kernels"],
    # triton_kernels/ lives at the top of the repo but installs as lstm_fused.triton_kernels:
    # the top-level name triton_kernels belongs to other packages.
    package_dir={"lstm_fused.triton_kernels": "triton_kernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExt},
    python_requires=">=3.9",
    install_requires=[],
    extras_require={
        "triton": ["triton"],
        "test": ["pytest", "hypothesis", "numpy", "expecttest"],
        "bench": ["matplotlib", "tqdm"],
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
        "examples": ["statsmodels", "scikit-learn", "matplotlib", "tqdm"],
    },
)
