"""File what a GPU session returned under bench/results/<device>/, for committing.

    python3 tools/gpu_probes/file_results.py FILES_DIR [--commit HASH] [--dry]

FILES_DIR is the folder the device call's files came back in (results.tsv, session.log,
headline.csv, the logs). The device is read from session.log ("device: NVIDIA H100 80GB HBM3,
..." -> bench/results/nvidia-h100-80gb-hbm3/, the folder name bench/env.py gives it). Copied, with
one UTC stem: results.tsv, headline.csv (the benchmark's rows) and session.log; the markdown
table of results.tsv (measured beside predicted) is appended to the folder's NOTES.md under a
dated heading, with the commit. The build, test and sanitizer logs stay where they came back
(their failures are in results.tsv's stage rows); copy them by hand if one needs keeping.
Nothing is measured here: this only files what the GPU measured.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows  # noqa: E402  (tools/gpu_probes/rows.py)


def device_slug(session_log: str) -> str:
    """bench/env.py's folder name of the device named in session.log's info stage."""
    m = re.search(r"^device: ([^,]+),", session_log, re.M)
    if not m:
        raise SystemExit(
            "file_results: no 'device: ...' line in session.log (did the info stage run on a GPU?)"
        )
    return re.sub(r"[^a-z0-9]+", "-", m.group(1).lower()).strip("-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files_dir", type=Path)
    ap.add_argument("--commit", default="", help="the commit the call ran (its tree had no .git)")
    ap.add_argument("--dry", action="store_true", help="print what would be done")
    args = ap.parse_args(argv)
    src = args.files_dir
    session = (src / "session.log").read_text(errors="replace")
    dest = ROOT / "bench" / "results" / device_slug(session)
    stem = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "_gpu_session"
    copies = [
        (src / name, dest / f"{stem}_{name}")
        for name in ("results.tsv", "headline.csv", "session.log")
        if (src / name).exists()
    ]
    table = rows.markdown(src / "results.tsv") if (src / "results.tsv").exists() else ""
    note = (
        f"\n## {stem} (tools/gpu_session.sh{', commit ' + args.commit if args.commit else ''})"
        f"\n\nMeasured on the device named in {stem}_session.log; the predictions are "
        f"docs/gpu_performance.md's model.\n\n{table}\n"
    )
    for a, b in copies:
        print(f"copy {a} -> {b.relative_to(ROOT)}")
    print(f"append to {(dest / 'NOTES.md').relative_to(ROOT)}:{note}")
    if args.dry:
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    for a, b in copies:
        shutil.copyfile(a, b)
    with open(dest / "NOTES.md", "a") as f:
        f.write(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
