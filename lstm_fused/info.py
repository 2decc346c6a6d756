"""What this installation of lstm_fused is and what it can run here: `python -m lstm_fused`,
`lstm_fused.show_config()`. A bug report starts with its output (README: "Reporting a bug").

What the build recorded (version, git commit, torch it was compiled against, compiler, CPU
variants, CUDA architectures and toolkit) comes from lstm_fused/_build_info.py, which setup.py
writes when it builds the extension (an installed wheel has no .git to ask); what the machine
has now (torch, Triton, the CPU variant chosen, devices) and every backend's availability is
asked at the call.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, Optional

import torch

from . import switches
from .ops import library, registry, triton_library

NOT_RECORDED = "not recorded"


def build_info() -> Dict[str, Any]:
    """The facts setup.py recorded when it built the extension ({} when there is no record:
    the package was not built by setup.py). Keys: version, git_commit, torch, torch_cuda,
    compiler, cpu_variants, cuda, cuda_archs, cuda_toolkit, debug, python."""
    try:
        from ._build_info import BUILD_INFO
    except ImportError:
        return {}
    return dict(BUILD_INFO)


def _triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return getattr(triton, "__version__", "unknown")


def _cuda_devices():
    """[(name, "sm_XY")] of the CUDA devices torch sees ([] without CUDA)."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        out.append((torch.cuda.get_device_name(i), f"sm_{major}{minor}"))
    return out


def _cpu_variants() -> Dict[str, Any]:
    """The CPU kernel variants built, those this CPU can run, and the one that runs now."""
    if library.LOAD_ERROR is not None:
        return {"built": None, "runnable": None, "chosen": None}
    _C = library._C
    return {
        "built": list(_C.cpu_capabilities_built()),
        "runnable": list(_C.cpu_capabilities()),
        "chosen": _C.cpu_capability(),
    }


def _backends() -> Dict[str, Dict[str, Dict[str, Any]]]:
    """op family -> backend -> {"reason": why it cannot run on this machine (None: it can),
    "devices": device types (None: any), "dtypes": names}."""
    out = {}
    for op in sorted(registry._REGISTRY):
        impls = registry.implementations(op)
        family = {}
        for name in registry.BACKEND_NAMES[1:]:
            impl = impls.get(name)
            if impl is None:
                family[name] = {
                    "reason": f"it has no implementation of {op}",
                    "devices": None,
                    "dtypes": [],
                }
                continue
            family[name] = {
                "reason": impl.unavailable_reason(),
                "devices": list(impl.devices) if impl.devices else None,
                "dtypes": [str(d).replace("torch.", "") for d in impl.dtypes],
            }
        out[op] = family
    return out


def collect() -> Dict[str, Any]:
    """Everything show_config() prints, as a dict (values None where unknown)."""
    from . import __version__

    built = build_info()
    return {
        "version": __version__,
        "location": os.path.dirname(os.path.abspath(__file__)),
        "git_commit": built.get("git_commit") or None,
        "build_recorded": bool(built),
        "python": f"{platform.python_version()} ({sys.platform}, {platform.machine()})",
        "torch_built": built.get("torch"),
        "torch_running": torch.__version__,
        "compiler": built.get("compiler"),
        "debug_build": built.get("debug"),
        "extension_error": library.LOAD_ERROR,
        "cpu_variants": _cpu_variants(),
        "cuda_built": built.get("cuda"),
        "cuda_archs": built.get("cuda_archs"),
        "cuda_toolkit": built.get("cuda_toolkit"),
        "torch_cuda_built": built.get("torch_cuda"),
        "torch_cuda_running": torch.version.cuda,
        "cuda_devices": _cuda_devices(),
        "triton": _triton_version(),
        "triton_reason": triton_library.unavailable_reason(),
        "switches": {
            switches.SWITCHES[n][0]: switches.get(n) for n in switches.SWITCHES if switches.get(n)
        },
        "backends": _backends(),
    }


def _or(value, missing: str = NOT_RECORDED) -> str:
    return missing if value is None or value == "" else str(value)


def format_info(info: Dict[str, Any]) -> str:
    """The text show_config() prints for collect()'s dict."""
    lines = [f"lstm_fused {info['version']}"]

    def row(key, value):
        lines.append(f"  {key + ':':<22}{value}")

    row("location", info["location"])
    row("git commit", _or(info["git_commit"], "unknown (no git commit was recorded)"))
    if not info["build_recorded"]:
        row(
            "build record",
            "none (lstm_fused/_build_info.py is written by setup.py when it builds the extension)",
        )
    row("python", info["python"])
    built, running = info["torch_built"], info["torch_running"]
    torch_line = f"{running} (running), built against {_or(built)}"
    if built and built.split("+")[0] != running.split("+")[0]:
        torch_line += (
            "  <- differs: rebuild lstm_fused against the torch you run "
            "(pip install . --no-build-isolation)"
        )
    row("torch", torch_line)
    row("compiler", _or(info["compiler"]))
    if info["debug_build"]:
        row("build type", "debug (LSTM_FUSED_DEBUG=1)")
    if info["extension_error"]:
        row("C++ extension", f"NOT LOADED: {info['extension_error']}")
    cpu = info["cpu_variants"]
    if cpu["built"] is not None:
        row(
            "CPU kernels",
            f"built {', '.join(cpu['built'])}; this CPU runs "
            f"{', '.join(cpu['runnable']) or 'none'}; chosen: {cpu['chosen']}",
        )
    if info["cuda_built"]:
        archs = ", ".join(f"sm_{a}" for a in info["cuda_archs"] or []) or NOT_RECORDED
        row(
            "CUDA kernels",
            f"built for {archs} with CUDA toolkit {_or(info['cuda_toolkit'])} "
            f"(torch's CUDA {_or(info['torch_cuda_built'])})",
        )
    elif info["cuda_built"] is False:
        row(
            "CUDA kernels",
            "not built (no CUDA toolkit, a CPU build of torch, or LSTM_FUSED_CUDA=0 at build time)",
        )
    else:
        row("CUDA kernels", NOT_RECORDED)
    row("torch CUDA", _or(info["torch_cuda_running"], "none (a CPU build of torch)"))
    devices = info["cuda_devices"]
    row("CUDA devices", ", ".join(f"{n} ({sm})" for n, sm in devices) if devices else "none")
    not_loaded = "lstm_fused._C is not loaded (C++ extension, above)"

    def why(reason):
        return not_loaded if reason and reason == info["extension_error"] else reason

    triton_line = _or(info["triton"], "not installed")
    if info["triton"] and info["triton_reason"]:
        triton_line += f" (backend unavailable: {why(info['triton_reason'])})"
    row("triton", triton_line)
    sw = info["switches"]
    row("switches set", ", ".join(f"{k}={v}" for k, v in sorted(sw.items())) or "none")
    lines.append("  backends (per op family: yes, or no and why; 'auto' tries them in this order):")
    for op, family in info["backends"].items():
        lines.append(f"    {op}")
        for name, b in family.items():
            if b["reason"] is None:
                where = "any device" if b["devices"] is None else " or ".join(b["devices"])
                lines.append(f"      {name:<10} yes: {where}; {', '.join(b['dtypes'])}")
            else:
                lines.append(f"      {name:<10} no: {why(b['reason'])}")
    return "\n".join(lines)


def show_config() -> None:
    """Print the version, the build (git commit, torch built against and running, compiler,
    CPU variants built and chosen, CUDA architectures and toolkit), Triton, the switches set,
    and every backend with why it can or cannot run here. Paste it into a bug report."""
    print(format_info(collect()))
