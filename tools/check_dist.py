"""Check the file lists of an sdist and a wheel against the files git tracks.

    python tools/check_dist.py dist/lstm_fused-<version>.tar.gz dist/lstm_fused-<version>-*.whl

sdist: every tracked file except those under SDIST_LEAVES_OUT, plus what the build adds
(PKG-INFO, setup.cfg, the egg-info, the recorded commit in lstm_fused/_build_info.py), and
nothing else. wheel: every tracked .py file of lstm_fused/ and of triton_kernels/ (installed as
lstm_fused/triton_kernels/), the extension lstm_fused/_C.*.so, lstm_fused/_build_info.py and
the dist-info with the LICENSE, and nothing else. Prints the differences and exits with 1 when
there are any. Run from the repository root (tools/check_package.sh does).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile

# Tracked, but not needed to build or test: measured results and the CI script.
SDIST_LEAVES_OUT = ("bench/results/", ".ci/")
# What building the sdist adds (paths inside its top folder).
SDIST_ADDS = re.compile(r"(PKG-INFO|setup\.cfg|lstm_fused\.egg-info/.*|lstm_fused/_build_info\.py)")
WHEEL_ADDS = re.compile(
    r"(lstm_fused/_C\.[^/]+\.so|lstm_fused/_build_info\.py"
    r"|lstm_fused-[^/]+\.dist-info/.*)"
)


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout
    return out.split()


def differences(name: str, have: set[str], want: set[str], adds: re.Pattern) -> list[str]:
    missing = sorted(want - have)
    extra = sorted(p for p in have - want if not adds.fullmatch(p))
    return [f"{name}: missing {p}" for p in missing] + [f"{name}: unexpected {p}" for p in extra]


def check_sdist(path: str, files: list[str]) -> list[str]:
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    top = names[0].split("/")[0]
    have = {n[len(top) + 1 :] for n in names}
    want = {f for f in files if not f.startswith(SDIST_LEAVES_OUT)}
    problems = differences("sdist", have, want, SDIST_ADDS)
    if "lstm_fused/_build_info.py" not in have:
        problems.append("sdist: missing lstm_fused/_build_info.py (the recorded commit)")
    return problems


def check_wheel(path: str, files: list[str]) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        have = {n for n in whl.namelist() if not n.endswith("/")}
    want = {f for f in files if f.startswith("lstm_fused/") and f.endswith(".py")}
    want |= {
        "lstm_fused/" + f for f in files if f.startswith("triton_kernels/") and f.endswith(".py")
    }
    problems = differences("wheel", have, want, WHEEL_ADDS)
    for pattern in (
        r"lstm_fused/_C\.[^/]+\.so",
        r"lstm_fused/_build_info\.py",
        r"lstm_fused-[^/]+\.dist-info/licenses/LICENSE",
    ):
        if not any(re.fullmatch(pattern, n) for n in have):
            problems.append(f"wheel: no file matches {pattern}")
    return problems


def main(argv: list[str]) -> int:
    files = tracked()
    problems = []
    for path in argv:
        if path.endswith(".tar.gz"):
            problems += check_sdist(path, files)
        elif path.endswith(".whl"):
            problems += check_wheel(path, files)
        else:
            problems.append(f"{path}: neither an sdist (.tar.gz) nor a wheel (.whl)")
    for p in problems:
        print(p)
    print(f"check_dist: {len(argv)} archive(s), {len(problems)} problem(s)")
    return 1 if problems or not argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
