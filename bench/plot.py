"""`python -m bench.plot`: PNG plots of speedup over the baseline (nn.LSTM for the LSTM)
against B and against H, one line per provider, from result files already written.

    python -m bench.plot bench/results/<device>/            # every .json in the folder
    python -m bench.plot run.json other.csv --out plots/    # given files, chosen folder

One figure per (case, mode, dtype, the other shape values) where at least two values of B (or
H) were measured; files are named <case>_<mode>_<dtype>_vs_<B|H>[_<n>].png. Old results can be
re-plotted at any time: nothing is measured here.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

from .cases import parse_shape
from .report import read

AXES = ("B", "H")


def collect(paths: List[Path]) -> List[dict]:
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.json")) or sorted(p.glob("*.csv"))
            files.extend(found)
        else:
            files.append(p)
    rows = []
    for f in files:
        rows.extend(read(f))
    return rows


def series(rows: List[dict], axis: str) -> Dict[tuple, Dict[str, List[tuple]]]:
    """{(case, mode, dtype, fixed shape): {provider: [(axis value, speedup), ...]}}."""
    groups: Dict[tuple, Dict[str, List[tuple]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] != "ok" or r["speedup"] is None:
            continue
        shape = parse_shape(r["shape"])
        if axis not in shape:
            continue
        fixed = ",".join(f"{k}={v}" for k, v in shape.items() if k != axis)
        groups[(r["case"], r["mode"], r["dtype"], fixed, r["device"])][r["provider"]].append(
            (shape[axis], r["speedup"])
        )
    out = {}
    for key, by_provider in groups.items():
        values = {x for pts in by_provider.values() for x, _ in pts}
        if len(values) >= 2:
            out[key] = {p: sorted(pts) for p, pts in by_provider.items()}
    return out


def plot(rows: List[dict], out_dir: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], defaultdict(int)
    for axis in AXES:
        for (case, mode, dtype, fixed, device), by_provider in sorted(series(rows, axis).items()):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for provider, pts in sorted(by_provider.items()):
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=provider)
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(axis)
            ax.set_ylabel("speedup over baseline (p50)")
            ax.set_title(f"{case} {mode} {dtype} [{fixed}]\n{device}", fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(True, alpha=0.3)
            stem = f"{case}_{mode.replace('+', '')}_{dtype}_vs_{axis}"
            used[stem] += 1
            name = stem + (f"_{used[stem]}" if used[stem] > 1 else "") + ".png"
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            written.append(out_dir / name)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.plot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", help="result .json/.csv files or folders of them")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: <first>/plots)")
    args = p.parse_args(argv)
    rows = collect([Path(x) for x in args.paths])
    first = Path(args.paths[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "plots"
    written = plot(rows, out)
    if not written:
        print(
            "no sweep with two or more values of B or H among the ok rows: nothing to plot",
            file=sys.stderr,
        )
        return 1
    for w in written:
        print(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
