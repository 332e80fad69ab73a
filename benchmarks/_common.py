"""Shared pieces of the benchmark harness: result rows, statistics, machine facts, helpers.

No framework is imported at module level: ``run.py`` decides when torch and TensorFlow load,
and the helper scripts that run in fresh subprocesses import only what they measure.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

__all__ = [
    "BENCH_DIR",
    "ROOT",
    "TINY_SCRIPT",
    "Row",
    "Target",
    "contention",
    "cpu_sample",
    "fresh_store_s",
    "gemm_peak_gflops",
    "machine_info",
    "median",
    "p90",
    "protolab_exe",
    "quiet_env",
    "seed_mlflow_store",
    "user_env",
    "versions",
    "write_project",
]


@dataclass(frozen=True)
class Target:
    """A target from issue 7: ``value <op> bound`` (op is ``<=`` or ``>=``)."""

    op: str
    bound: float
    text: str  # as printed, e.g. "≤ 0.5x raw"

    def check(self, value: float | None) -> bool | None:
        if value is None or not math.isfinite(value):
            return None
        return value <= self.bound if self.op == "<=" else value >= self.bound


@dataclass
class Row:
    """One measured number. ``median`` is in ``unit``; ``ratio`` compares to ``ratio_to``.

    ``status`` is ``ok`` or ``n/a`` (a contender that cannot run here, with ``note`` saying
    why). ``target``/``passed`` hold the issue-7 target the row is checked against, if any:
    the target applies to ``ratio`` when ``target_on == "ratio"``, else to ``median``.
    """

    section: str
    name: str
    contender: str
    metric: str
    unit: str
    median: float | None
    p90: float | None = None
    n: int = 0
    ratio: float | None = None
    ratio_to: str = ""
    target: str = ""
    target_on: str = ""
    passed: bool | None = None
    status: str = "ok"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, target: Target, on: str = "ratio") -> Row:
        self.target, self.target_on = target.text, on
        self.passed = target.check(self.ratio if on == "ratio" else self.median)
        return self

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("median", "p90", "ratio"):  # JSON has no NaN: missing numbers are null
            v = out[k]
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: Sequence[float]) -> float:
    """Nearest-rank 90th percentile (the definition protolab's backends use)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def quiet_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for subprocesses: quiet TensorFlow, Keras on TF, optional thread caps."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.pop("MLFLOW_TRACKING_URI", None)
    if threads is not None:
        for var in (
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS",
        ):
            env[var] = str(threads)
    env.update(extra)
    return env


# What protolab's CLI and its modes set in a process (``protolab.cli``, ``Backend.env_defaults``
# and ``environ``, the compile cache): a user's own script runs without any of it.
PROTOLAB_ENV = ("OMP_WAIT_POLICY", "KERAS_BACKEND", "TF_XLA_FLAGS", "XLA_FLAGS")
PROTOLAB_ENV_PREFIXES = ("PROTOLAB_", "MLFLOW_")


def user_env(threads: int | None = None) -> dict[str, str]:
    """The environment a user's own training script runs in: this one minus everything
    protolab sets (so each framework runs on its defaults: OpenMP's wait policy, its thread
    pools, Keras on TensorFlow), TensorFlow's C++ logs quiet (no effect on speed).

    ``threads``: an OpenMP thread cap for every contender alike; None keeps the defaults.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PROTOLAB_ENV and not k.startswith(PROTOLAB_ENV_PREFIXES)
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def protolab_exe() -> str:
    """The ``protolab`` console script of this interpreter's environment."""
    here = Path(sys.executable).parent / "protolab"
    if here.exists():
        return str(here)
    found = shutil.which("protolab")
    if found is None:
        raise FileNotFoundError("the protolab console script is not installed (pip install -e .)")
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _proc_stat() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine from /proc/stat; zeros elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total - idle, total, steal


def cpu_sample() -> dict[str, float]:
    """A point to diff against later: machine busy/total jiffies and our own CPU seconds."""
    busy, total, steal = _proc_stat()
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return {"busy": busy, "total": total, "steal": steal, "own_s": own, "wall": time.time()}


def contention(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """How busy the machine was with work that was not ours between two samples.

    ``foreign_cpu_frac`` is the share of all CPU time (every core) used by other processes;
    anything above a few percent makes absolute timings noisy (ratios stay interleaved).
    """
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = end["total"] - start["total"]
    if total <= 0:
        return {"foreign_cpu_frac": float("nan"), "steal_frac": float("nan")}
    busy = end["busy"] - start["busy"]
    own = (end["own_s"] - start["own_s"]) * hz
    return {
        "foreign_cpu_frac": max(busy - own, 0.0) / total,
        "steal_frac": (end["steal"] - start["steal"]) / total,
    }


def machine_info(threads: int) -> dict[str, Any]:
    cores = os.cpu_count() or 0
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {
        "cpu": _cpu_model(),
        "logical_cpus": cores,
        "usable_cpus": affinity,
        "platform": platform.platform(),
        "threads": threads,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
    }


def versions() -> dict[str, str]:
    """protolab's own environment record (what every run's ``env.*`` tags hold) + git."""
    from protolab.backends._env import git_state, package_versions

    out = dict(package_versions())
    git = git_state(ROOT)
    if git:
        dirty = "+dirty" if git["git_dirty"] == "true" else ""
        out["git"] = git["git_commit"][:7] + dirty
    return out


def gemm_peak_gflops(n: int = 2048, repeats: int = 8) -> dict[str, float]:
    """The machine's float32 GEMM peak with the current torch threads: best of ``repeats``.

    Two ``n x n`` matrices multiplied costs ``2 n^3`` FLOPs; the best (not the median) run is
    the peak, since everything the machine does besides our GEMM only slows it down.
    """
    import torch

    a = torch.randn(n, n, dtype=torch.float32)
    b = torch.randn(n, n, dtype=torch.float32)
    torch.mm(a, b)  # warm-up: thread pool, page faults
    best = math.inf
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        dt = time.perf_counter() - t0
        times.append(dt)
        best = min(best, dt)
    flops = 2 * n**3
    return {
        "gflops": flops / best / 1e9,
        "median_gflops": flops / median(times) / 1e9,
        "n": float(n),
        "repeats": float(repeats),
    }


TINY_SCRIPT = """\
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 8, 32, log=True)
    act = space.choice("act", ["relu", "tanh"])
    return pl.Arch(L.Flatten(), L.Dense(width, activation=act), L.Dense(10))
"""


def write_project(
    where: Path,
    *,
    script: str | None = None,
    experiment: Path | None = None,
    backends: Sequence[str] = ("lightning",),
    study: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    seed_store: bool = True,
) -> Path:
    """A config (and, unless ``experiment`` is given, a tiny MLP script) in ``where``.

    Stores default to ``where/mlruns`` when the command runs with ``cwd=where``; the MLflow
    store is seeded with an empty migrated one (see :func:`seed_mlflow_store`).
    """
    import yaml

    where.mkdir(parents=True, exist_ok=True)
    if experiment is None:
        experiment = where / "exp.py"
        experiment.write_text(script or TINY_SCRIPT)
    cfg = {
        "experiment": str(experiment),
        "backends": list(backends),
        "study": {"name": "bench", "n_trials": 10, "sampler": "random", "pruner": "none"}
        | (study or {}),
        "train": {"epochs": 5, "batch_size": 64, "lr": 0.005} | (train or {}),
        "hardware": {"accelerator": "cpu"},
    }
    path = where / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if seed_store:
        seed_mlflow_store(where)
    return path


_TEMPLATE: dict[str, Any] = {}


def seed_mlflow_store(where: Path) -> Path:
    """Put an empty, already-migrated MLflow SQLite store at ``where/mlruns/mlflow.db``.

    Creating MLflow's schema on a fresh SQLite file takes 5-10 s here (alembic migrations);
    it is measured once (``fresh_store_s``, a row of the sweep section) and copied for every
    later sweep, so sweep measurements are those of a project whose store already exists.
    """
    if "path" not in _TEMPLATE:
        import tempfile

        from mlflow.tracking import MlflowClient

        tmp = Path(tempfile.mkdtemp(prefix="protolab-bench-store-"))
        db = tmp / "mlflow.db"
        t0 = time.perf_counter()
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        _TEMPLATE["fresh_store_s"] = time.perf_counter() - t0
        _TEMPLATE["path"] = db
    dest = where / "mlruns" / "mlflow.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE["path"], dest)
    return dest


def fresh_store_s() -> float:
    """Seconds it took to create the template MLflow store (NaN before the first use)."""
    return float(_TEMPLATE.get("fresh_store_s", float("nan")))
