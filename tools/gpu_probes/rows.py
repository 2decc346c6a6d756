"""The result table of a GPU session: one row per measurement, the model's prediction beside it.

    python3 tools/gpu_probes/rows.py --stage probes --results OUT/results.tsv LOG...
        append the RESULT lines of LOG as rows, print them
    PROGRAM | python3 tools/gpu_probes/rows.py --stage probes --results OUT/results.tsv --echo
        the same for stdin, line by line as the program prints them (each row is in results.tsv
        as soon as it is measured, even if the program is stopped later); --echo passes every
        input line through (the stage's log keeps the program's whole output)
    python3 tools/gpu_probes/rows.py --stage bench --results OUT/results.tsv --bench-csv CSV
        append the rows of a `python -m bench` CSV (milliseconds per call)
    python3 tools/gpu_probes/rows.py --stage tests --results OUT/results.tsv --status ok \\
        --key tests/cuda_lstm --detail "12 passed"
        append one row by hand (a stage's pass / fail)
    python3 tools/gpu_probes/rows.py --markdown OUT/results.tsv
        print the table as markdown (to paste into docs/gpu_performance.md)

A RESULT line, as the probes print it: "RESULT<TAB>key<TAB>value<TAB>unit<TAB>status<TAB>detail".
results.tsv columns: stage, measurement, measured, unit, status, predicted (model), detail.
The prediction of a measurement is the first row of tools/gpu_probes/predictions.tsv whose
pattern (a regular expression) matches its key; "-" when none does. Every prediction there is
a model figure of docs/gpu_performance.md, not a measurement.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
PREDICTIONS = HERE / "predictions.tsv"
COLUMNS = ["stage", "measurement", "measured", "unit", "status", "predicted (model)", "detail"]


def load_predictions(path: Path = PREDICTIONS) -> List[Tuple[re.Pattern, str, str]]:
    """[(pattern, prediction, doc section)] from predictions.tsv (comment lines start with #)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected 3 tab-separated fields, got {len(parts)}")
        out.append((re.compile(parts[0]), parts[1], parts[2]))
    return out


def predict(key: str, predictions) -> str:
    for pattern, value, section in predictions:
        if pattern.search(key):
            return f"{value} ({section})"
    return "-"


def parse_result_lines(lines: Iterable[str]) -> List[dict]:
    """The RESULT lines of a probe's output as {key, value, unit, status, detail}."""
    rows = []
    for line in lines:
        if not line.startswith("RESULT\t"):
            continue
        parts = line.rstrip("\n").split("\t")
        parts += [""] * (6 - len(parts))
        rows.append(
            dict(
                key=parts[1],
                value=parts[2],
                unit=parts[3],
                status=parts[4],
                detail="\t".join(parts[5:]).strip(),
            )
        )
    return rows


def bench_rows(csv_path: Path) -> List[dict]:
    """`python -m bench` rows as measurements: key time/<mode>/<shape>/<dtype>/<provider>."""
    rows = []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            key = f"time/{r['mode']}/{r['shape']}/{r['dtype']}/{r['provider']}"
            value = r["p50_ms"] if r["status"] == "ok" else "nan"
            detail = (
                f"p20 {r['p20_ms']} p80 {r['p80_ms']} ms, {r['reps']} reps; speedup over "
                f"{r['baseline']} {r['speedup'] or '-'}; max err {r['max_err']} (tol "
                f"{r['tol']}); {r['note']}"
            ).strip()
            rows.append(dict(key=key, value=value, unit="ms", status=r["status"], detail=detail))
    return rows


def append(results: Path, stage: str, rows: List[dict], predictions) -> List[List[str]]:
    """Append rows to results.tsv (header written once) and return them as written."""
    new = not results.exists() or results.stat().st_size == 0
    written = []
    with open(results, "a", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        if new:
            w.writerow(COLUMNS)
        for r in rows:
            row = [
                stage,
                r["key"],
                r["value"],
                r["unit"],
                r["status"],
                predict(r["key"], predictions),
                r["detail"].replace("\t", " "),
            ]
            w.writerow(row)
            written.append(row)
        f.flush()
    return written


def markdown(results: Path) -> str:
    with open(results, newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    if not table:
        return ""
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    for row in table[1:]:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="*", help="probe outputs with RESULT lines (default: stdin)")
    ap.add_argument("--stage", help="the session stage the rows belong to")
    ap.add_argument("--results", type=Path, help="results.tsv to append to")
    ap.add_argument("--bench-csv", type=Path, help="a python -m bench CSV")
    ap.add_argument("--key", help="one row by hand: its measurement key")
    ap.add_argument("--status", default="ok", help="with --key: ok / FAIL / skipped ...")
    ap.add_argument("--value", default="", help="with --key: the measured value")
    ap.add_argument("--unit", default="", help="with --key: the unit")
    ap.add_argument("--detail", default="", help="with --key: one line of detail")
    ap.add_argument("--markdown", type=Path, help="print this results.tsv as markdown")
    ap.add_argument(
        "--echo", action="store_true", help="stdin mode: print every input line, not the rows"
    )
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    if not args.stage or not args.results:
        ap.error("--stage and --results are needed (or --markdown)")
    if args.key:
        rows = [
            dict(
                key=args.key,
                value=args.value,
                unit=args.unit,
                status=args.status,
                detail=args.detail,
            )
        ]
    elif args.bench_csv:
        rows = bench_rows(args.bench_csv) if args.bench_csv.exists() else []
    elif args.logs:
        rows = []
        for log in args.logs:
            rows += parse_result_lines(Path(log).read_text(errors="replace").splitlines())
    else:
        predictions = load_predictions()
        for line in sys.stdin:
            if args.echo:
                print(line, end="", flush=True)
            for row in append(args.results, args.stage, parse_result_lines([line]), predictions):
                if not args.echo:
                    print("row\t" + "\t".join(row), flush=True)
        return 0
    for row in append(args.results, args.stage, rows, load_predictions()):
        print("row\t" + "\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
