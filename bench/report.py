"""Result rows (one fixed schema), CSV / JSON files, and the terminal table.

Row schema (COLUMNS, in this order). Timings are milliseconds per call; speedup is the
baseline's p50 over this provider's p50 for the same case (baseline: nn.LSTM for the LSTM,
nn.LSTMCell, nn.MultiheadAttention, torch.unfused for softmax and pooling, torch.nn for the
model). status: ok (checked and timed), wrong (failed the check: not timed), absent (not
installed / not in this build), unsupported (cannot run this case), error (raised).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional

COLUMNS = [
    "provider",
    "case",
    "mode",
    "shape",
    "dtype",
    "status",
    "p20_ms",
    "p50_ms",
    "p80_ms",
    "mean_ms",
    "reps",
    "speedup",
    "baseline",
    "peak_mb",
    "peak_mem_method",
    "tflops",
    "gbps",
    "max_err",
    "tol",
    "device",
    "threads",
    "torch_version",
    "triton_version",
    "cuda_version",
    "cudnn_version",
    "git_commit",
    "timestamp",
    "note",
]

FLOAT_COLUMNS = {
    "p20_ms",
    "p50_ms",
    "p80_ms",
    "mean_ms",
    "speedup",
    "peak_mb",
    "tflops",
    "gbps",
    "max_err",
    "tol",
}
INT_COLUMNS = {"reps", "threads"}


def make_row(**values) -> Dict[str, object]:
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not in the row schema: {sorted(unknown)}")
    return {c: values.get(c) for c in COLUMNS}


def add_speedups(rows: List[dict]) -> None:
    """speedup = baseline p50 / p50 within each (case, mode, shape, dtype)."""
    base = {}
    for r in rows:
        if r["provider"] == r["baseline"] and r["status"] == "ok":
            base[(r["case"], r["mode"], r["shape"], r["dtype"])] = r["p50_ms"]
    for r in rows:
        b = base.get((r["case"], r["mode"], r["shape"], r["dtype"]))
        if r["status"] == "ok" and b and r["p50_ms"]:
            r["speedup"] = b / r["p50_ms"]


class ResultWriter:
    """Rows to out_dir/stem.csv and out_dir/stem.json as they are measured.

    The CSV gets each row appended and flushed at once; the JSON ({"meta", "columns", "rows"})
    is rewritten whole (through a temporary file, so it is never half written) after each row.
    A run stopped midway (a timeout on a lent GPU) leaves every row measured before the stop.
    """

    def __init__(self, out_dir: Path, stem: str, meta: dict):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {"csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json"}
        self.meta, self.rows = meta, []
        self._csv = open(self.paths["csv"], "w", newline="")
        self._writer = csv.DictWriter(self._csv, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._csv.flush()
        self._write_json()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self._csv.flush()
        self._write_json()

    def close(self, **meta_updates) -> Dict[str, Path]:
        self.meta.update(meta_updates)
        self._write_json()
        self._csv.close()
        return self.paths

    def _write_json(self) -> None:
        tmp = self.paths["json"].with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump({"meta": self.meta, "columns": COLUMNS, "rows": self.rows}, f, indent=1)
        tmp.replace(self.paths["json"])


def write(rows: List[dict], meta: dict, out_dir: Path, stem: str) -> Dict[str, Path]:
    """rows -> out_dir/stem.csv and out_dir/stem.json at once (ResultWriter writes them as the
    rows come)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    with open(json_path, "w") as f:
        json.dump({"meta": meta, "columns": COLUMNS, "rows": rows}, f, indent=1)
    return {"csv": csv_path, "json": json_path}


def _parse(column: str, text: str):
    if text == "":
        return None
    if column in FLOAT_COLUMNS:
        return float(text)
    if column in INT_COLUMNS:
        return int(text)
    return text


def read(path: Path) -> List[dict]:
    """Rows of a CSV or JSON file written by `write` (any column missing raises KeyError)."""
    path = Path(path)
    if path.suffix == ".json":
        with open(path) as f:
            data = json.load(f)
        rows = data["rows"]
    else:
        with open(path, newline="") as f:
            rows = [{c: _parse(c, r[c]) for c in COLUMNS} for r in csv.DictReader(f)]
    for r in rows:
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise KeyError(f"{path}: row without {missing}")
    return rows


def _fmt(v: Optional[float], spec: str) -> str:
    return "" if v is None else format(v, spec)


def table(rows: List[dict]) -> str:
    """The terminal table: one block per case, one line per provider."""
    lines = []
    head = (
        f"{'provider':<28} {'p50 ms':>10} {'p20-p80 ms':>19} {'speedup':>8} "
        f"{'TFLOP/s':>8} {'GB/s':>8} {'peak MB':>8}  status"
    )
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["mode"], r["shape"], r["dtype"]), []).append(r)
    for (case, mode, shape, dtype), rs in groups.items():
        lines.append("")
        lines.append(f"{case} {mode} [{shape}] {dtype}  (speedup over {rs[0]['baseline']})")
        lines.append(head)
        for r in rs:
            spread = "" if r["p20_ms"] is None else f"{r['p20_ms']:.3f}-{r['p80_ms']:.3f}"
            status = r["status"]
            if status == "ok":
                status = "ok" + (f" ({r['note']})" if r["note"] else "")
            elif r["note"]:
                status = f"{status}: {r['note']}"
            lines.append(
                f"{r['provider']:<28} {_fmt(r['p50_ms'], '10.3f'):>10} {spread:>19} "
                f"{_fmt(r['speedup'], '7.2f') + ('x' if r['speedup'] else ''):>8} "
                f"{_fmt(r['tflops'], '8.3f'):>8} {_fmt(r['gbps'], '8.2f'):>8} "
                f"{_fmt(r['peak_mb'], '8.1f'):>8}  {status[:110]}"
            )
    return "\n".join(lines)
