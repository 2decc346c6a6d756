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
                              the best CPU kernel variant to build (default avx512 on x86-64;
                              other architectures build only the portable one). The variants are
                              picked at run time from what the CPU has (csrc/cpu/dispatch.h), so
                              a build runs on every CPU of its architecture
    LSTM_FUSED_DEBUG=1        -O0 -g
    LSTM_FUSED_GIT_COMMIT     the commit recorded in the build info where the tree has no .git

The metadata (name, version, dependencies) is in pyproject.toml; this file holds what must be
code. It also writes lstm_fused/_build_info.py (what `python -m lstm_fused` prints about the
build). The metadata and the sdist need no torch; building the extension does, the torch it
will run with: see _NO_TORCH.
"""

import ast
import glob
import os
import platform
import pprint
import shutil
import subprocess

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext as _SetuptoolsBuildExt
from setuptools.command.sdist import sdist as _SetuptoolsSdist

try:
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
        get_cxx_compiler,
    )

    _TORCH_ERROR = None
except ImportError as exc:  # metadata / sdist only; building the extension stops (_NO_TORCH)
    torch = None
    _TORCH_ERROR = exc

ROOT = os.path.dirname(os.path.abspath(__file__))

# Why a build needs torch installed first and --no-build-isolation (also in README, "Install").
_NO_TORCH = """lstm_fused: building the extension needs torch, installed where it is built:
{error}. Install the torch you will run first, then build without build isolation:

    pip install torch                        # or the CUDA build you want
    pip install . --no-build-isolation       # (-e for an editable install)

lstm_fused._C is compiled against torch's C++ headers and links to its libraries, so it only
loads into the torch it was built against. With build isolation pip would build it in a
throw-away environment with another torch (often another version or CUDA variant, several GB),
and the result would not load into yours."""


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
        return (
            "torch.utils.cpp_extension found no CUDA toolkit (it tries $CUDA_HOME, "
            "$CUDA_PATH, the folder above the nvcc on PATH, /usr/local/cuda)"
        )
    missing = [
        p
        for p in (os.path.join("bin", "nvcc"), os.path.join("include", "cuda_runtime.h"))
        if not os.path.exists(os.path.join(CUDA_HOME, p))
    ]
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
                "bin/nvcc and include/cuda_runtime.h, e.g. CUDA_HOME=/usr/local/cuda-13.0"
            )
        if not torch_has_cuda:
            reasons.append(
                f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch"
            )
        raise RuntimeError(
            "LSTM_FUSED_CUDA=1/FORCE_CUDA=1 but the CUDA part cannot be built: "
            + "; ".join(reasons)
        )
    return toolkit_problem is None and torch_has_cuda


# The CPU kernel variants (csrc/cpu/capability.h), ascending, with the g++ flags of each: the
# kernel sources below are compiled once per variant, the rest of the sources once with no ISA
# flag. csrc/cpu/dispatch.cpp checks the CPU for exactly these extensions before it runs one.
_CPU_VARIANTS = {
    "default": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
}
# The kernel sources: every csrc/cpu/<family>_cpu.cpp (each defines its family's table of
# csrc/cpu/kernels.h once per variant).
_CPU_KERNEL_SOURCES = sorted(glob.glob("csrc/cpu/*_cpu.cpp"))


def _cpu_variants():
    """The CPU kernel variants to build: up to LSTM_FUSED_CPU_ISA (every one on x86-64)."""
    names = list(_CPU_VARIANTS)
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    best = os.environ.get("LSTM_FUSED_CPU_ISA") or (names[-1] if x86 else "default")
    if best not in _CPU_VARIANTS:
        raise ValueError(f"LSTM_FUSED_CPU_ISA must be one of {names}, got {best!r}")
    if best != "default" and not x86:
        raise ValueError(
            f"LSTM_FUSED_CPU_ISA={best} is an x86-64 instruction set; this machine "
            f"is {platform.machine()}: use LSTM_FUSED_CPU_ISA=default"
        )
    return names[: names.index(best) + 1]


def _vector_instructions_at_load(obj):
    """Names of the functions of the object file obj that run when the library loads (static
    initialisers, at-exit destructors) and use VEX / EVEX (AVX) instructions; [] when clean.
    None when objdump is missing."""
    try:
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", obj], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    bad, function, section = [], None, ""
    for line in listing.splitlines():
        if line.startswith("Disassembly of section "):
            section = line.split()[-1].rstrip(":")
        elif line.endswith(">:"):
            function = line[line.index("<") + 1 : -2]
        elif function and "\t" in line:
            at_load = section == ".text.startup" or function.startswith(
                ("_GLOBAL__sub_I", "__static_initialization", "__tcf_")
            )
            mnemonic = line.split("\t")[1].split()[0] if len(line.split("\t")) > 1 else ""
            if at_load and (mnemonic.startswith("v") or "%ymm" in line or "%zmm" in line):
                bad.append(function)
    return sorted(set(bad))


class _BuildExt(BuildExtension.with_options(use_ninja=True) if torch else _SetuptoolsBuildExt):
    """BuildExtension, plus the ISA variants of the CPU kernel sources (setuptools has no
    per-file flags): each variant is compiled with its own -m flags into its own folder and
    linked after every other object, lowest ISA first. The linker keeps the first copy of an
    inline function that several objects define, so the code outside the variants' own
    namespaces that the library runs is always a copy compiled for a lower (or no) ISA.
    Afterwards ninja's log (per-file compile times) is copied to build/ninja_log, since
    `pip install -e` builds in a temporary folder that it deletes. Before the build,
    lstm_fused/_build_info.py is written next to where the extension goes."""

    def run(self):
        if torch is None:
            raise SystemExit(_NO_TORCH.format(error=_TORCH_ERROR))
        info = _build_info(self.extensions[0], self.distribution.get_version())
        folder = ROOT if self.inplace else self.build_lib
        _write_build_info(os.path.join(folder, "lstm_fused"), info)
        super().run()

    def build_extensions(self):
        try:
            super().build_extensions()
        finally:
            log = os.path.join(self.build_temp, ".ninja_log")
            if os.path.exists(log):
                os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
                shutil.copyfile(log, os.path.join(ROOT, "build", "ninja_log"))

    def build_extension(self, ext):
        objects = []
        for name in getattr(ext, "cpu_isa_variants", []):
            macros = [("CPU_CAPABILITY", name.upper()), (f"CPU_CAPABILITY_{name.upper()}", None)]
            variant_objects = self.compiler.compile(
                _CPU_KERNEL_SOURCES,
                output_dir=os.path.join(self.build_temp, f"cpu_{name}"),
                macros=list(ext.define_macros) + macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={"cxx": ext.extra_compile_args["cxx"] + _CPU_VARIANTS[name]},
                depends=ext.depends,
            )
            for obj in variant_objects:
                bad = _vector_instructions_at_load(obj)
                if bad is None:
                    print(f"lstm_fused: objdump not found, {obj} not checked for load-time code")
                elif bad:
                    raise RuntimeError(
                        f"{obj} ({name} CPU kernels) runs {name} instructions when the library "
                        f"loads, on any CPU: {bad}. Kernel sources must define no object with "
                        "dynamic initialisation (csrc/cpu/capability.h)."
                    )
            objects += variant_objects
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


def _cuda_arch_flags():
    archs = os.environ.get("LSTM_FUSED_CUDA_ARCH", "80;90").replace(",", ";")
    flags = []
    for arch in filter(None, (a.strip().replace(".", "") for a in archs.split(";"))):
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


def _extension():
    debug = _flag("LSTM_FUSED_DEBUG", False)
    use_cuda = _want_cuda()
    cpu_variants = _cpu_variants()

    # The default variant of the CPU kernels is built with the other sources (no ISA flag);
    # _BuildExt adds the others.
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # -g0: Python's CFLAGS carry -g, and the debug information more than doubles the compile
    # time of these template-heavy sources (attention_cpu.cpp: 54 -> 23 CPU seconds), each of
    # which the CPU variants build up to three times. LSTM_FUSED_DEBUG=1 for a debug build.
    cxx = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # No -std here: torch.utils.cpp_extension adds the standard the installed torch's headers
    # need (C++20 for torch 2.11 to 2.14), to the g++ and the nvcc flags alike.
    cxx += ["-fopenmp"]
    # Which variants csrc/cpu/dispatch.cpp may pick.
    define_macros = [(f"LSTM_FUSED_CPU_VARIANT_{name.upper()}", "1") for name in cpu_variants[1:]]
    extra = {"cxx": cxx}
    if use_cuda:
        # Kernels and launchers (.cu, no torch headers: one file per dtype / head size so that
        # ninja compiles them in parallel) and their host code (.cpp, compiled by g++).
        sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        define_macros.append(("LSTM_FUSED_WITH_CUDA", "1"))
        extra["nvcc"] = (
            (["-O0", "-g", "-G"] if debug else ["-O3", "-lineinfo"])
            + [
                "--expt-relaxed-constexpr",
                "-U__CUDA_NO_HALF_OPERATORS__",
                "-U__CUDA_NO_HALF_CONVERSIONS__",
                "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            ]
            + _cuda_arch_flags()
        )
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    print(
        f"lstm_fused: building with CUDA={use_cuda} CPU kernels={'+'.join(cpu_variants)} "
        f"debug={debug}"
    )
    ext = ext_cls(
        name="lstm_fused._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    ext.cpu_isa_variants = cpu_variants[1:]  # compiled by _BuildExt
    return ext


def _git_commit():
    """The commit the sources are at: HEAD ("+dirty" when tracked files have changes) where ROOT
    is a git checkout; else $LSTM_FUSED_GIT_COMMIT; else the one an sdist recorded; else ""."""

    def git(*args):
        return subprocess.run(
            ["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()

    try:
        # ROOT itself, not a repository around it (an sdist unpacked inside another checkout).
        if os.path.realpath(git("rev-parse", "--show-toplevel")) == os.path.realpath(ROOT):
            dirty = git("status", "--porcelain", "--untracked-files=no")
            return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("LSTM_FUSED_GIT_COMMIT") or _recorded_build_info().get("git_commit", "")


def _recorded_build_info():
    """The BUILD_INFO dict of ROOT/lstm_fused/_build_info.py ({} when there is none)."""
    try:
        with open(os.path.join(ROOT, "lstm_fused", "_build_info.py")) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "BUILD_INFO":
            return ast.literal_eval(node.value)
    return {}


def _first_line(command, keyword=""):
    """The first line of command's output that contains keyword, or "" when it cannot run."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return next((line.strip() for line in out.splitlines() if keyword in line), "")


def _build_info(ext, version):
    """What lstm_fused/info.py reports about this build of the extension ext."""
    nvcc_flags = ext.extra_compile_args.get("nvcc", [])
    cuda = any(name == "LSTM_FUSED_WITH_CUDA" for name, _ in ext.define_macros)
    nvcc = os.path.join(CUDA_HOME or "", "bin", "nvcc")
    cxx = get_cxx_compiler()
    return {
        "version": version,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "compiler": f"{cxx}: {_first_line([cxx, '--version'])}",
        "debug": bool(_flag("LSTM_FUSED_DEBUG", False)),
        "cpu_variants": [next(iter(_CPU_VARIANTS))] + list(ext.cpu_isa_variants),
        "cuda": cuda,
        "cuda_archs": [f.split("code=sm_")[1] for f in nvcc_flags if "code=sm_" in f],
        "cuda_toolkit": _first_line([nvcc, "--version"], "release") if cuda else None,
    }


def _write_build_info(folder, info):
    """Write info as folder/_build_info.py (read by lstm_fused/info.py)."""
    path = os.path.join(folder, "_build_info.py")
    text = (
        '"""Written by setup.py when it built this copy of lstm_fused (not in git);\n'
        'read by lstm_fused/info.py."""\n'
        f"BUILD_INFO = {pprint.pformat(info, width=96)}\n"
    )
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
        os.unlink(path)  # it may be a hard link to the source tree's copy (sdist release tree)
    with open(path, "w") as f:
        f.write(text)


class _Sdist(_SetuptoolsSdist):
    """sdist that records the git commit in the release tree's lstm_fused/_build_info.py, so
    that a wheel built from the sdist (no .git there) still reports it."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        _write_build_info(
            os.path.join(base_dir, "lstm_fused"),
            {"version": self.distribution.get_version(), "git_commit": _git_commit()},
        )


def _packages():
    """lstm_fused with its subpackages, and triton_kernels/ with its subpackages, which installs
    as lstm_fused.triton_kernels (package_dir): the top-level name triton_kernels belongs to
    other packages."""
    return (
        find_packages(include=["lstm_fused", "lstm_fused.*"])
        + ["lstm_fused.triton_kernels"]
        + [f"lstm_fused.triton_kernels.{p}" for p in find_packages("triton_kernels")]
    )


setup(
    packages=_packages(),
    package_dir={"lstm_fused.triton_kernels": "triton_kernels"},
    # Without torch only the metadata and the sdist can be made; _BuildExt stops with _NO_TORCH.
    ext_modules=[_extension() if torch else Extension("lstm_fused._C", sources=[])],
    cmdclass={"build_ext": _BuildExt, "sdist": _Sdist},
)
