"""Multi-objective pruning vs the unpruned study: hypervolume of the final Pareto front and
the epochs trained, by seed (issue 24, item 1).

The digits MLP (configs/digits_mlp.yaml) on one mode (lightning, CPU, 1 thread) with the
objectives [val/acc max, time/step_ms min], TPE (multi-objective) and the same seed for
both studies; each (pruner, seed) is a fresh study in a temporary store, run through the
real CLI in this process. Epochs trained: 10 per COMPLETE trial, a PRUNED trial's last
recorded epoch (``protolab.curve.<epoch>``); failed trials are counted and listed.

Hypervolume: the area the COMPLETE trials' front dominates up to the reference point
(val/acc 0.85, time/step_ms 10), fixed from one unpruned probe study of 8 trials before
the runs (its trials spanned 0.87-0.97 and 0.6-12 ms on a loaded 2-core machine).

Usage: python benchmarks/mo_pruning.py [N_TRIALS [SEEDS|FIRST:STOP [EPOCHS]]] [PRUNER[=OPTIONS] ...]
e.g.   python benchmarks/mo_pruning.py 20 5 10 median 'percentile={percentile: 25}'
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
REF_ACC, REF_MS = 0.85, 10.0
OBJECTIVES = "study.objectives=[{metric: val/acc}, {metric: time/step_ms, direction: minimize}]"


Measured = tuple[float, int, int, int]  # hypervolume, epochs trained, pruned, failed


def hypervolume(points: list[tuple[float, float]]) -> float:
    """2-D hypervolume of (acc up, ms down) points against (REF_ACC, REF_MS)."""
    inside = sorted((ms, acc) for acc, ms in points if acc > REF_ACC and ms < REF_MS)
    area, best_acc = 0.0, REF_ACC
    for i, (ms, acc) in enumerate(inside):  # by step time: each point adds a strip
        best_acc = max(best_acc, acc)
        right = inside[i + 1][0] if i + 1 < len(inside) else REF_MS
        area += (best_acc - REF_ACC) * (right - ms)
    return area


def _measure(study: optuna.Study, epochs: int) -> Measured:
    """(hypervolume, epochs trained, pruned, failed) of a finished study."""
    import optuna

    from protolab.samplers import CURVE_ATTR

    State = optuna.trial.TrialState
    trials = study.trials
    done = [t for t in trials if t.state == State.COMPLETE]
    trained = epochs * len(done)
    for t in trials:
        if t.state == State.PRUNED:
            recorded = [int(k[len(CURVE_ATTR) :]) for k in t.user_attrs if k.startswith(CURVE_ATTR)]
            trained += max(recorded)
    hv = hypervolume([(t.values[0], t.values[1]) for t in done])
    pruned = sum(t.state == State.PRUNED for t in trials)
    return hv, trained, pruned, sum(t.state == State.FAIL for t in trials)


def run(name: str, seed: int, n_trials: int, epochs: int, pruner: list[str]) -> Measured:
    import optuna
    from typer.testing import CliRunner

    from protolab._stores import open_storage
    from protolab.cli import app

    args = [
        "sweep", str(ROOT / "configs/digits_mlp.yaml"), f"study.name={name}",
        "backends=[lightning]", "hardware.accelerator=cpu", "hardware.threads=1",
        "tracking.checkpoints=none", OBJECTIVES, "study.sampler=tpe", f"study.seed={seed}",
        f"study.n_trials={n_trials}", f"train.epochs={epochs}", *pruner,
    ]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output + out.stderr
    study = optuna.load_study(study_name=name, storage=open_storage(None))
    return _measure(study, epochs)


def _arm(spec: str) -> tuple[str, list[str]]:
    """``median`` or ``percentile={percentile: 25}`` -> (label, overrides)."""
    name, _, opts = spec.partition("=")
    return spec, [f"study.pruner={name}", f"study.pruner_options={opts or '{}'}"]


def _line(seed: int, got: dict[str, Measured]) -> str:
    hv0, e0, _, f0 = got["none"]
    text = f"seed {seed}: none HV {hv0:.4f} epochs {e0} failed {f0}"
    for arm, (hv, e, p, f) in got.items():
        if arm != "none":
            text += (f" | {arm}: HV {hv:.4f} ({hv / hv0:.3f}x) epochs {e} ({e / e0:.3f}x) "
                     f"pruned {p} failed {f}")  # fmt: skip
    return text


def main(n_trials: int, seeds: range, epochs: int, specs: list[str]) -> None:
    arms = dict([("none", ["study.pruner=none"]), *(_arm(s) for s in specs)])
    rows: list[dict[str, Measured]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for seed in seeds:
            got = {arm: run(f"s{seed}-{i}", seed, n_trials, epochs, a)
                   for i, (arm, a) in enumerate(arms.items())}  # fmt: skip
            rows.append(got)
            print(_line(seed, got), flush=True)
    print(f"\n{n_trials} TPE trials x {epochs} epochs, seeds {seeds.start}-{seeds.stop - 1}, "
          f"reference point "
          f"(val/acc {REF_ACC}, time/step_ms {REF_MS})")  # fmt: skip
    for arm in arms:
        if arm == "none":
            continue
        hv_r = [g[arm][0] / g["none"][0] for g in rows]
        ep_r = [g[arm][1] / g["none"][1] for g in rows]
        print(f"{arm}: HV ratio median {statistics.median(hv_r):.3f} mean "
              f"{statistics.mean(hv_r):.3f} min {min(hv_r):.3f}; epochs ratio median "
              f"{statistics.median(ep_r):.3f} mean {statistics.mean(ep_r):.3f} max "
              f"{max(ep_r):.3f}")  # fmt: skip


if __name__ == "__main__":
    argv = sys.argv[1:]
    n, k, e = (argv[:3] + ["20", "5", "10"][len(argv[:3]) :])[:3]
    first, _, last = k.rpartition(":")  # "5": seeds 0-4; "3:5": seeds 3 and 4
    main(int(n), range(int(first or 0), int(last)), int(e), argv[3:] or ["median"])
