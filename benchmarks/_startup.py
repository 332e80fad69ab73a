"""Startup costs: ``protolab --help`` vs ``mlflow --help``, and time to the first training step
of a trial in a fresh process for each backend.

Run as a script (``python benchmarks/_startup.py first-step lightning``) it is the fresh
process: it imports protolab, trains one tiny job and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import BENCH_DIR, Row, Target, median, p90, protolab_exe, quiet_env

__all__ = ["first_step_child", "measure_startup"]

HELP_TARGET = Target("<=", 0.3, "≤ 0.3 s")


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-300:]}")
    return dt


def _first_step(backend: str, env: dict[str, str]) -> dict[str, float]:
    t_spawn = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "_startup.py"), "first-step", backend],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"first-step {backend} exited {proc.returncode}: {proc.stderr[-400:]}")
    out: dict[str, float] = json.loads(lines[-1])
    out["process_wall_s"] = wall
    out["spawn_to_first_step_s"] = out.pop("first_step_abs") - t_spawn
    return out


def measure_startup(
    quick: bool, log: Callable[[str], None] = print, smoke: bool = False
) -> list[Row]:
    """Rows: protolab --help (median of runs), mlflow --help (once), first step per backend."""
    env = quiet_env()
    rows: list[Row] = []
    exe = protolab_exe()
    mlflow = str(Path(exe).parent / "mlflow")
    _wall([exe, "--help"], env)  # page cache warm: every later run sees the same disk state
    runs = [_wall([exe, "--help"], env) for _ in range(1 if smoke else 3 if quick else 7)]
    ml = _wall([mlflow, "--help"], env) if os.path.exists(mlflow) else float("nan")
    help_row = Row(
        "startup",
        "protolab --help",
        "protolab",
        "wall",
        "s",
        median(runs),
        p90(runs),
        len(runs),
        ratio=median(runs) / ml if ml == ml else None,
        ratio_to="mlflow --help",
    ).check(HELP_TARGET, on="median")
    rows.append(help_row)
    rows.append(Row("startup", "mlflow --help", "mlflow", "wall", "s", ml, None, 1))
    for backend in ("lightning", "keras"):
        got = [_first_step(backend, env)]
        first = [g["first_step_s"] for g in got]
        spawn = [g["spawn_to_first_step_s"] for g in got]
        rows.append(
            Row(
                "startup",
                "first step, fresh process",
                f"protolab:{backend}",
                "time/first_step_s",
                "s",
                median(first),
                max(first),
                len(first),
                note="trial start -> first optimizer step (imports + build + compile + step)",
                extra={
                    k: median([g[k] for g in got])
                    for k in ("import_s", "build_s", "compile_s", "import_protolab_s")
                },
            )
        )
        rows.append(
            Row(
                "startup",
                "spawn -> first step",
                f"protolab:{backend}",
                "wall",
                "s",
                median(spawn),
                max(spawn),
                len(spawn),
                note="process spawn -> first optimizer step (interpreter + imports + trial)",
                extra={"process_wall_s": median([g["process_wall_s"] for g in got])},
            )
        )
    return rows


def first_step_child(backend: str) -> None:
    """In a fresh process: import protolab, run one tiny job, print what it measured."""
    t0 = time.perf_counter()
    import protolab as pl
    from protolab import layers as L
    from protolab.backends import Hardware, Job, TrainSettings, get_backend
    from protolab.data import load_dataset

    import_protolab_s = time.perf_counter() - t0
    ds = load_dataset("digits", seed=0)
    arch = pl.Arch(L.Flatten(), L.Dense(32, "relu"), L.Dense(10))
    job = Job(arch, ds, TrainSettings(1, 64, "adam", 1e-3), Hardware(accelerator="cpu"))
    trial_start = time.time()
    m = get_backend(backend).run(job).metrics
    out = {
        "first_step_s": m["time/first_step_s"],
        "first_step_abs": trial_start + m["time/first_step_s"],
        "import_s": m["time/import_s"],
        "build_s": m["time/build_s"],
        "compile_s": m["time/compile_s"],
        "import_protolab_s": import_protolab_s,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "first-step":
        first_step_child(sys.argv[2])
    else:
        sys.exit("usage: _startup.py first-step BACKEND")
