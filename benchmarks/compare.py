"""Compare two results files of ``benchmarks/run.py``, row by row.

    .venv/bin/python benchmarks/compare.py OLD.json NEW.json [--threshold 10]

Rows are matched on (section, name, contender, metric). For each, prints both medians, the
change (NEW / OLD) and the target verdicts; changes beyond ``--threshold`` percent are
flagged (slower/faster for time-like units). Machines and versions are printed first: a
ratio from another machine, or under other load (``foreign_cpu_frac``), is no comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Key = tuple[str, str, str, str]
LOWER_IS_BETTER = {"s", "ms", "ms/trial", "epochs", "frac", "points"}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if "rows" not in data:
        raise SystemExit(f"{path}: not a benchmarks/run.py results file (no 'rows')")
    return data


def _key(row: dict[str, Any]) -> Key:
    return (row["section"], row["name"], row["contender"], row["metric"])


def _fmt(v: float | None, unit: str) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if unit == "frac":
        return f"{100 * v:.1f} %"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _verdict(row: dict[str, Any] | None) -> str:
    if row is None or not row.get("target"):
        return ""
    return {True: "✓", False: "✗", None: "?"}[row.get("passed")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--threshold", type=float, default=10.0, help="flag changes above this %%")
    args = ap.parse_args(argv)
    old, new = _load(args.old), _load(args.new)
    out = Console(highlight=False, width=170)
    for label, data in (("old", old), ("new", new)):
        m, v = data["machine"], data["versions"]
        out.print(
            f"[bold]{label}[/] {data['created']} {data['mode']}: {m['cpu']}, "
            f"{m['logical_cpus']} CPUs, {m['threads']} threads, peak "
            f"{m['gemm_peak_gflops']:.1f} GFLOP/s, other load "
            f"{100 * m.get('foreign_cpu_frac', float('nan')):.0f} %; "
            f"protolab {v.get('protolab')} ({v.get('git', '?')}), torch {v.get('torch')}, "
            f"tensorflow {v.get('tensorflow-cpu') or v.get('tensorflow')}"
        )
    if old["machine"]["cpu"] != new["machine"]["cpu"]:
        out.print("[yellow]different CPUs: compare ratios, not absolute times[/]")
    olds = {_key(r): r for r in old["rows"]}
    news = {_key(r): r for r in new["rows"]}
    table = Table(title=f"{args.old.name} -> {args.new.name}", title_justify="left")
    for col in ("section", "benchmark", "contender", "metric", "old", "new", "new/old", "target"):
        table.add_column(col, justify="right" if col in ("old", "new", "new/old") else "left")
    for key in list(olds) + [k for k in news if k not in olds]:
        o, n = olds.get(key), news.get(key)
        unit = (n or o or {}).get("unit", "")
        ov, nv = (o or {}).get("median"), (n or {}).get("median")
        change = ""
        if ov and nv and math.isfinite(ov) and math.isfinite(nv):
            r = nv / ov
            change = f"{r:.2f}x"
            if abs(r - 1) * 100 > args.threshold and unit in LOWER_IS_BETTER:
                change = f"[red]{change}[/]" if r > 1 else f"[green]{change}[/]"
        verdict = f"{_verdict(o)} -> {_verdict(n)}" if (o or n or {}).get("target") else ""
        table.add_row(*key, _fmt(ov, unit), _fmt(nv, unit), change, verdict)
    out.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
