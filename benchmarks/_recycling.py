"""Memory of a long static sweep: one worker kept for every trial vs recycled workers.

TensorFlow keeps every program it compiled for the life of the process, so a worker that
trains a new architecture each trial grows trial after trial. ``sweep --workers`` replaces
a worker after ``hardware.recycle_after`` static trials. Both sweeps here run the tiny MLP
script on the static ``keras`` backend (whole-epoch XLA), a new width each trial, through
the real launcher (``--workers 1``), side by side; each trial's ``memory/peak_rss_mb``
(the process's peak so far, from its MLflow child run) is read at trial ``early`` and at
the last trial.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import Row, Target, protolab_exe, quiet_env, write_project

__all__ = ["measure_recycling"]

GROWTH_TARGET = Target("<=", 1.2, "≤ 1.2x (within 20 %)")


def _peak_rss_by_trial(where: Path) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{where / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("recycle")
    assert exp is not None, "the sweep logged no experiment"
    out: dict[int, float] = {}
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        trial = run.data.tags.get("protolab.trial")
        if trial is not None and "memory/peak_rss_mb" in run.data.metrics:
            out[int(trial)] = run.data.metrics["memory/peak_rss_mb"]
    return out


def _start(where: Path, n: int, recycle_after: int | None) -> subprocess.Popen[str]:
    cfg = write_project(
        where,
        backends=("keras",),
        study={"name": "recycle", "n_trials": n, "sampler": "random", "pruner": "none"},
        train={"epochs": 1},
    )
    every = "null" if recycle_after is None else str(recycle_after)
    cmd = [protolab_exe(), "sweep", str(cfg), f"hardware.recycle_after={every}"]
    return subprocess.Popen(
        [*cmd, "--workers", "1"], cwd=where, env=quiet_env(threads=1),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def measure_recycling(
    quick: bool, log: Callable[[str], None] = print, smoke: bool = False
) -> list[Row]:
    n, early, every = (2, 1, 1) if smoke else (30, 10, 10) if quick else (100, 10, 10)
    title = f"{n} tiny-MLP trials on keras (XLA), 1 worker through --workers"
    rows = []
    with tempfile.TemporaryDirectory(prefix="protolab-bench-") as tmp:
        # side by side (1 thread each): only memory is compared here, never time
        sweeps = {}
        for recycle in (None, every):
            label = "kept" if recycle is None else f"recycled every {recycle}"
            where = Path(tmp) / label.replace(" ", "-")
            sweeps[label] = (where, recycle, _start(where, n, recycle))
        for label, (where, recycle, proc) in sweeps.items():
            out, _ = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"recycling sweep exit {proc.returncode}: {out[-600:]}")
            rss = _peak_rss_by_trial(where)
            first, last = rss[early - 1], rss[max(rss)]
            log(f"  {label}: peak RSS {first:.0f} MB at trial {early}, {last:.0f} MB at {n}")
            row = Row(
                "recycling",
                title,
                f"worker {label}",
                f"peak RSS after {n} / after {early} trials",
                "MB",
                last,
                None,
                n,
                ratio=last / first,
                ratio_to=f"after {early} trials",
                note=f"{first:.0f} MB after {early} trials",
                extra={"rss_by_trial": [rss[k] for k in sorted(rss)]},
            )
            rows.append(row.check(GROWTH_TARGET) if recycle is not None else row)
    return rows
