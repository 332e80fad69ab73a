"""Cold ``protolab run`` before and after: time to first step of two source trees, interleaved.

    .venv/bin/python benchmarks/cold_start.py [--ref 1a07ddd] [--rounds 5] [--backend lightning]

The *before* tree is ``git archive REF src`` (default: the commit the iteration-speed issue
was filed against), run with ``PYTHONPATH`` pointing at it; the *after* tree is this
checkout. Both use this environment's packages, the same config (the digits MLP, 1 epoch)
and a fresh project folder per sample, alternating before/after so machine drift hits both.

Spawn -> first step is the child run's MLflow start time plus its ``time/first_step_s``
(both trees measure that from the job's start, the old one with the framework import
inside, the new one after it), minus the spawn time here. Then each tree's import profile
(``python -X importtime``, top-level packages; lines from the tracking writer process,
which imports MLflow beside the main process, are marked) is printed side by side.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """\
experiment: exp.py
backends: [{backend}]
study: {{name: cold, n_trials: 1, sampler: random, pruner: none}}
train: {{epochs: 1, batch_size: 64, lr: 0.001}}
hardware: {{accelerator: cpu}}
"""
WRITER_PACKAGES = {"mlflow", "sqlalchemy", "alembic", "flask", "graphene", "pandas", "pyarrow"}


def _tree(ref: str, where: Path) -> Path:
    """``src/`` of ``ref``, unpacked under ``where``."""
    blob = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(where, filter="data")
    return where / "src"


def _project(where: Path, backend: str) -> Path:
    where.mkdir(parents=True)
    (where / "exp.py").write_text((ROOT / "experiments" / "digits_mlp.py").read_text())
    (where / "cfg.yaml").write_text(CONFIG.format(backend=backend))
    return where


def _env(src: Path, *extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PYTHONPATH": str(src), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    return env


def cold_run(src: Path, where: Path) -> dict[str, float]:
    """One fresh ``protolab run``: spawn -> first step (s) and the whole command's wall."""
    from mlflow.tracking import MlflowClient

    t_spawn = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "run", "cfg.yaml"],
        cwd=where, env=_env(src), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    wall = time.time() - t_spawn
    if done.returncode != 0:
        raise RuntimeError(f"{src}: protolab run exited {done.returncode}: {done.stderr[-800:]}")
    client = MlflowClient(f"sqlite:///{where / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cold")
    assert exp is not None, "no experiment logged"
    (run,) = client.search_runs([exp.experiment_id], max_results=1)
    first = run.info.start_time / 1000 + run.data.metrics["time/first_step_s"] - t_spawn
    return {"first_step_s": first, "wall_s": wall}


def import_profile(src: Path, where: Path) -> dict[str, float]:
    """Cumulative import seconds per top-level package (``-X importtime``), one cold run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "protolab.cli", "run", "cfg.yaml"],
        cwd=where, env=_env(src), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m[2]) <= 1:  # a top-level import (of the process that printed it)
            package = m[3].split(".")[0]
            out[package] = out.get(package, 0.0) + int(m[1]) / 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="1a07ddd", help="the 'before' commit (default 1a07ddd)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backend", default="lightning")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="protolab-cold-") as tmp:
        trees = {"before": _tree(args.ref, Path(tmp) / "before"), "after": ROOT / "src"}
        got: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
        for r in range(args.rounds):
            for name, src in trees.items():  # alternate: drift hits both alike
                sample = cold_run(src, _project(Path(tmp) / f"{name}{r}", args.backend))
                got[name].append(sample)
                print(f"round {r}: {name:6s} first step {sample['first_step_s']:.2f} s, "
                      f"wall {sample['wall_s']:.2f} s", flush=True)  # fmt: skip
        med = {k: {m: statistics.median(s[m] for s in v) for m in v[0]} for k, v in got.items()}
        b, a = med["before"], med["after"]
        print(f"\ncold protolab run ({args.backend}, digits MLP), median of {args.rounds}:")
        print("| tree | spawn -> first step | whole command |\n|---|---|---|")
        print(f"| before ({args.ref}) | {b['first_step_s']:.2f} s | {b['wall_s']:.2f} s |")
        print(f"| after (this checkout) | {a['first_step_s']:.2f} s | {a['wall_s']:.2f} s |")
        change = a["first_step_s"] / b["first_step_s"] - 1
        print(
            f"| change | {100 * change:+.0f} % | {100 * (a['wall_s'] / b['wall_s'] - 1):+.0f} % |"
        )
        profiles = {k: import_profile(src, _project(Path(tmp) / f"prof-{k}", args.backend))
                    for k, src in trees.items()}  # fmt: skip
        names = sorted(set().union(*profiles.values()), key=lambda n: -profiles["before"].get(n, 0))
        print("\nimport profile (-X importtime, cumulative s per top-level package, one run):")
        print("| package | before | after |\n|---|---|---|")
        for n in names:
            pb, pa = profiles["before"].get(n, 0.0), profiles["after"].get(n, 0.0)
            if max(pb, pa) >= 0.05:
                where = " (writer process)" if n in WRITER_PACKAGES else ""
                print(f"| {n}{where} | {pb:.2f} | {pa:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
