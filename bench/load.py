"""`python -m bench --load N`: N processes that spin on the CPU for the length of a run.

A CPU library meets a busy machine more often than an idle one (CI runners, data-loader
workers, several training processes on one host); `--load N` measures it there. Each spinner
is a separate Python process doing nothing but counting; it stops when the run ends (normally,
by an exception or by Ctrl-C) and, should the run itself be killed, at its next check that its
parent is gone (within about a second).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Iterator, List

# The spinner: counts until its parent (the bench) is no longer its parent.
_SPIN = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    n = 0\n"
    "    while n < 2000000:\n"
    "        n += 1\n"
)


@contextlib.contextmanager
def spinning_load(n: int) -> Iterator[List[subprocess.Popen]]:
    """N spinning processes for the duration of the `with` block (none when n <= 0)."""
    procs: List[subprocess.Popen] = []
    try:
        for _ in range(max(0, n)):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SPIN],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
