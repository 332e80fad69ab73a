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

Equal budget (``--budget=M``, optionally ``--share=0.6``): each pruned study runs M trials
instead of N_TRIALS, and a second reading is printed, the hypervolume of the COMPLETE
trials that finished within the first ``share`` of the unpruned study's epochs (cumulative
epochs in trial order: trials run one after another, as here), against the unpruned
study's final hypervolume. The same-trial-count columns then read the first N_TRIALS
finished trials of that study: TPE and the pruners never read ``n_trials``, so that prefix
is the N_TRIALS study (up to the step-time noise that separates any two runs).

Paired (``--sampler=random``): TPE reacts to what it is told, so a pruned TPE study samples
other architectures than the unpruned one after its first pruned trial, and two unpruned
TPE studies of one seed already differ by up to 8 % in hypervolume (step-time noise). The
random sampler draws the same architectures in both studies of a seed whatever is pruned,
so the ratio measures the pruner alone: what it cut that would have joined the front.

Usage: python benchmarks/mo_pruning.py [--budget=M [--share=F]]
           [N_TRIALS [SEEDS|FIRST:STOP [EPOCHS]]] [PRUNER[=OPTIONS] ...]
e.g.   python benchmarks/mo_pruning.py 20 5 10 median 'percentile={percentile: 25}'
       python benchmarks/mo_pruning.py --budget=40 20 5 10 'pareto={optimism: 0.9}'
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


SAMPLER = ["tpe"]  # --sampler=random: the paired reading (the same draws in every arm)
Measured = tuple[float, int, int, int]  # hypervolume, epochs trained, pruned, failed
Budgeted = tuple[float, int, int]  # hypervolume, epochs used, trials finished within budget


def hypervolume(points: list[tuple[float, float]]) -> float:
    """2-D hypervolume of (acc up, ms down) points against (REF_ACC, REF_MS)."""
    inside = sorted((ms, acc) for acc, ms in points if acc > REF_ACC and ms < REF_MS)
    area, best_acc = 0.0, REF_ACC
    for i, (ms, acc) in enumerate(inside):  # by step time: each point adds a strip
        best_acc = max(best_acc, acc)
        right = inside[i + 1][0] if i + 1 < len(inside) else REF_MS
        area += (best_acc - REF_ACC) * (right - ms)
    return area


def _trained(trial: optuna.trial.FrozenTrial, epochs: int) -> int:
    """Epochs a trial trained: all of them if COMPLETE, else its last recorded epoch."""
    from protolab.samplers import CURVE_ATTR

    if trial.state.name == "COMPLETE":
        return epochs
    recorded = [int(k[len(CURVE_ATTR) :]) for k in trial.user_attrs if k.startswith(CURVE_ATTR)]
    return max(recorded, default=0)


def _first(trials: list[optuna.trial.FrozenTrial], n: int) -> list[optuna.trial.FrozenTrial]:
    """The trials an ``n_trials=n`` study holds: in order, up to the n-th finished (COMPLETE
    or PRUNED) one; failed ones do not count toward n_trials (the sweep's rule)."""
    out, finished = [], 0
    for t in sorted(trials, key=lambda t: t.number):
        if finished == n:
            break
        out.append(t)
        finished += t.state.name in ("COMPLETE", "PRUNED")
    return out


def _measure(trials: list[optuna.trial.FrozenTrial], epochs: int) -> Measured:
    """(hypervolume, epochs trained, pruned, failed) of a finished study's trials."""
    done = [t for t in trials if t.state.name == "COMPLETE"]
    hv = hypervolume([(t.values[0], t.values[1]) for t in done])
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    return hv, sum(_trained(t, epochs) for t in trials), pruned, failed


def _within(trials: list[optuna.trial.FrozenTrial], epochs: int, budget: float) -> Budgeted:
    """Equal budget: (hypervolume, epochs used, trials) of the trials that finished within
    ``budget`` epochs, counted cumulatively in trial order (trials run one at a time)."""
    used, kept = 0, []
    for t in sorted(trials, key=lambda t: t.number):
        if used + _trained(t, epochs) > budget:
            break
        used += _trained(t, epochs)
        kept.append(t)
    done = [t for t in kept if t.state.name == "COMPLETE"]
    return hypervolume([(t.values[0], t.values[1]) for t in done]), used, len(kept)


def run(
    name: str, seed: int, n_trials: int, epochs: int, pruner: list[str]
) -> list[optuna.trial.FrozenTrial]:
    import optuna
    from typer.testing import CliRunner

    from protolab._stores import open_storage
    from protolab.cli import app

    args = [
        "sweep", str(ROOT / "configs/digits_mlp.yaml"), f"study.name={name}",
        "backends=[lightning]", "hardware.accelerator=cpu", "hardware.threads=1",
        "tracking.checkpoints=none", OBJECTIVES, f"study.sampler={SAMPLER[0]}",
        f"study.seed={seed}", f"study.n_trials={n_trials}", f"train.epochs={epochs}", *pruner,
    ]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output + out.stderr
    return optuna.load_study(study_name=name, storage=open_storage(None)).trials


def _arm(spec: str) -> tuple[str, list[str]]:
    """``median`` or ``percentile={percentile: 25}`` -> (label, overrides)."""
    name, _, opts = spec.partition("=")
    return spec, [f"study.pruner={name}", f"study.pruner_options={opts or '{}'}"]


def _line(seed: int, got: dict[str, Measured], budgeted: dict[str, Budgeted]) -> str:
    hv0, e0, _, f0 = got["none"]
    text = f"seed {seed}: none HV {hv0:.4f} epochs {e0} failed {f0}"
    for arm, (hv, e, p, f) in got.items():
        if arm != "none":
            text += (f" | {arm}: HV {hv:.4f} ({hv / hv0:.3f}x) epochs {e} ({e / e0:.3f}x) "
                     f"pruned {p} failed {f}")  # fmt: skip
        if arm in budgeted:
            hv_b, used, n = budgeted[arm]
            text += f"; equal budget: HV {hv_b:.4f} ({hv_b / hv0:.3f}x) {n} trials {used} ep"
    return text


def _summary(arm: str, rows: list[dict[str, Measured]], budgeted: list[dict[str, Budgeted]]) -> str:
    """One arm's ratios over the seeds: same trial count, and equal budget if measured
    (for ``none``: the unpruned study cut at the budget, the control)."""
    hv_r = [g[arm][0] / g["none"][0] for g in rows]
    ep_r = [g[arm][1] / g["none"][1] for g in rows]
    text = (f"{arm}: HV ratio median {statistics.median(hv_r):.3f} mean "
            f"{statistics.mean(hv_r):.3f} min {min(hv_r):.3f}; epochs ratio median "
            f"{statistics.median(ep_r):.3f} mean {statistics.mean(ep_r):.3f} max "
            f"{max(ep_r):.3f}")  # fmt: skip
    if arm == "none":
        text = "none (control)"
    if budgeted and arm in budgeted[0]:
        eq = [b[arm][0] / g["none"][0] for g, b in zip(rows, budgeted, strict=True)]
        text += (f"; equal budget HV ratio median {statistics.median(eq):.3f} mean "
                 f"{statistics.mean(eq):.3f} min {min(eq):.3f}")  # fmt: skip
    return text


def _seed(
    seed: int, arms: dict[str, list[str]], n_trials: int, epochs: int, budget: tuple[int, float]
) -> tuple[dict[str, Measured], dict[str, Budgeted]]:
    """One seed: every arm's study, read at the same trial count and, when ``budget``
    (trials, share) is given, at the share of the unpruned study's epochs."""
    got: dict[str, Measured] = {}
    budgeted: dict[str, Budgeted] = {}
    for i, (arm, overrides) in enumerate(arms.items()):
        many = budget[0] if budget[0] and arm != "none" else n_trials
        trials = run(f"s{seed}-{i}", seed, many, epochs, overrides)
        got[arm] = _measure(_first(trials, n_trials), epochs)
        if budget[0]:  # "none" too: the unpruned study stopped at the same budget (control)
            budgeted[arm] = _within(trials, epochs, budget[1] * got["none"][1])
    return got, budgeted


def main(
    n_trials: int, seeds: range, epochs: int, specs: list[str], budget: tuple[int, float]
) -> None:
    arms = dict([("none", ["study.pruner=none"]), *(_arm(s) for s in specs)])
    rows: list[dict[str, Measured]] = []
    rows_b: list[dict[str, Budgeted]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for seed in seeds:
            got, budgeted = _seed(seed, arms, n_trials, epochs, budget)
            rows.append(got)
            rows_b.append(budgeted)
            print(_line(seed, got, budgeted), flush=True)
    print(f"\n{n_trials} {SAMPLER[0]} trials x {epochs} epochs, "
          f"seeds {seeds.start}-{seeds.stop - 1}, reference point "
          f"(val/acc {REF_ACC}, time/step_ms {REF_MS})")  # fmt: skip
    if budget[0]:
        print(f"equal budget: pruned studies of {budget[0]} trials, read within "
              f"{budget[1]}x the unpruned study's epochs")  # fmt: skip
    for arm in arms:
        if arm != "none" or budget[0]:
            print(_summary(arm, rows, rows_b))


if __name__ == "__main__":
    flags = {a.partition("=")[0]: a.partition("=")[2] for a in sys.argv[1:] if a[:2] == "--"}
    argv = [a for a in sys.argv[1:] if a[:2] != "--"]
    n, k, e = (argv[:3] + ["20", "5", "10"][len(argv[:3]) :])[:3]
    first, _, last = k.rpartition(":")  # "5": seeds 0-4; "3:5": seeds 3 and 4
    budget = (int(flags.get("--budget", 0)), float(flags.get("--share", 0.6)))
    SAMPLER[0] = flags.get("--sampler", "tpe")
    main(int(n), range(int(first or 0), int(last)), int(e), argv[3:] or ["median"], budget)
