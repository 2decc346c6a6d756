"""What a result row says about where it was measured: device, versions, git commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def slug(text: str) -> str:
    """A file-system-safe lower-case name: letters, digits and '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """Human-readable name of the device the suite runs on; the CPU's says 'CPU'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    """Folder name under bench/results/: e.g. cpu-amd-epyc-2c, nvidia-h100-80gb-hbm3."""
    if device.type == "cuda":
        return slug(torch.cuda.get_device_name(device))
    return f"cpu-{slug(cpu_model())}-{os.cpu_count()}c"


def versions() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # triton is optional: absent on some platforms
        triton_version = ""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": str(cudnn or ""),
    }


def git_commit() -> str:
    """HEAD of the repository the suite runs from, '+dirty' when tracked files changed; where
    the tree has no git history (a copy sent to a GPU machine), $LSTM_FUSED_GIT_COMMIT."""
    fallback = os.environ.get("LSTM_FUSED_GIT_COMMIT", "")
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return fallback
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


def load_average() -> str:
    """1-minute load average: other processes on the machine make CPU timings noisy."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return ""
