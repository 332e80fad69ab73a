"""Population-based training vs TPE at equal total epochs, on a task whose learning-rate
schedule matters. Best validation RMSE per seed (lower is better).

The task (generated here, nothing downloaded): 2,000 noisy samples of a smooth function of
8 inputs, an MLP trained by SGD with momentum at batch 16. Every constant learning rate is
a trade: a large one makes fast progress but stalls at a noise floor set by the
minibatch gradients' variance, a small one is quiet but slow. A rate that starts high and
decays beats every constant one, and a sweep over constant rates (TPE) cannot find it;
PBT's members inherit the best weights and move the rate between segments, which is a
schedule found on the way.

Equal total epochs: TPE runs N_TPE trials x E epochs; PBT runs POPULATION members, each
``train.epochs`` = E_PBT in segments of READY epochs, so POPULATION x E_PBT = N_TPE x E.
A PBT member trains longer than a TPE trial, so a control column runs TPE with the
members' shape too (POPULATION trials x E_PBT epochs, the same total): what PBT gains over
it is the schedule, not the length.

Each (sampler, seed) is a fresh study in a temporary store, run through the real CLI in
this process. Usage: python benchmarks/pbt.py [SEEDS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_TPE, EPOCHS_TPE = 8, 8  # 64 epochs in all
POPULATION, READY, EPOCHS_PBT = 4, 2, 16  # 4 members x 16 epochs = 64 epochs in all

SCRIPT = '''
import numpy as np
import protolab as pl
from protolab import layers as L


@pl.data
def noisy_regression() -> dict:
    """y = a smooth function of 8 inputs + noise (sigma 0.3), fixed by its own seed."""
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(2000, 8)).astype("float32")
    w = rng.normal(size=(8, 3)) / np.sqrt(8)
    h = x @ w
    y = np.sin(2 * h[:, 0]) + 0.5 * h[:, 1] ** 2 - 0.5 * np.tanh(3 * h[:, 2])
    y = y + rng.normal(0, 0.3, size=y.shape)
    return {"x": x, "y": y.astype("float32")}


@pl.experiment(metric="val/rmse")
def model(space: pl.Space) -> pl.Arch:
    return pl.Arch(L.Dense(64, activation="tanh"), L.Dense(64, activation="tanh"), L.Dense(1))
'''

CONFIG = """\
experiment: exp.py
backends: [lightning]
study: {{name: {name}, n_trials: {n_trials}, sampler: {sampler}, seed: {seed},
        pruner: none, max_failures: 100{options}}}
train: {{epochs: {epochs}, batch_size: 16, optimizer: sgd,
         lr: {{low: 0.001, high: 0.3, log: true}}}}
hardware: {{accelerator: cpu}}
tracking: {{checkpoints: none}}
"""


def _run(root: Path, sampler: str, seed: int) -> tuple[float, int]:
    """One study; returns (best val/rmse, epochs trained in all)."""
    import optuna
    from typer.testing import CliRunner

    from protolab._stores import open_storage
    from protolab.cli import app

    name = f"{sampler}-{seed}"
    if sampler == "tpe-long":  # the control: TPE in the members' shape
        sampler, name = "tpe", f"tpe-long-{seed}"
        options, n_trials, epochs = "", POPULATION, EPOCHS_PBT
    elif sampler == "pbt":
        options = (
            f", sampler_options: {{population_size: {POPULATION}, ready_epochs: {READY}, "
            "truncation: 0.25, perturb: [0.5, 0.8, 1.25, 2.0]}"
        )
        n_trials, epochs = POPULATION * EPOCHS_PBT // READY, EPOCHS_PBT
    else:
        options, n_trials, epochs = "", N_TPE, EPOCHS_TPE
    cfg = root / f"{name}.yaml"
    cfg.write_text(
        CONFIG.format(
            name=name, n_trials=n_trials, sampler=sampler, seed=seed, options=options, epochs=epochs
        )
    )
    out = CliRunner().invoke(app, ["sweep", str(cfg)])
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name=name, storage=open_storage(None))
    # epochs each trial trained: one reported value per finished epoch (a PBT segment's
    # are its own), plus the epoch that ended a failed trial (a NaN)
    trained = sum(
        min(len(t.intermediate_values) + (t.state == optuna.trial.TrialState.FAIL), epochs)
        for t in study.trials
        if t.state.is_finished()
    )
    return float(study.best_value), trained


def main(seeds: int = 5) -> None:
    rows: list[tuple[int, float, int, float, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "exp.py").write_text(textwrap.dedent(SCRIPT))
        os.chdir(root)
        for seed in range(seeds):
            tpe, tpe_epochs = _run(root, "tpe", seed)
            pbt, pbt_epochs = _run(root, "pbt", seed)
            long, _ = _run(root, "tpe-long", seed)  # the same total as TPE
            rows.append((seed, tpe, tpe_epochs, pbt, pbt_epochs, long))
            print(f"seed {seed}: tpe {tpe:.4f} ({tpe_epochs} ep)  pbt {pbt:.4f} ({pbt_epochs} ep)"
                  f"  tpe {POPULATION}x{EPOCHS_PBT} {long:.4f}", flush=True)  # fmt: skip
    wins = sum(pbt < tpe for _, tpe, _, pbt, _, _ in rows)
    wins_long = sum(pbt < long for _, _, _, pbt, _, long in rows)
    print(
        f"\nbest val/rmse (lower is better); TPE {N_TPE} trials x {EPOCHS_TPE} epochs, PBT "
        f"{POPULATION} members x {EPOCHS_PBT} epochs (segments of {READY})\n"
    )
    print(
        f"| seed | TPE best val/rmse | TPE epochs | PBT best val/rmse | PBT epochs | better | "
        f"control: TPE {POPULATION}x{EPOCHS_PBT} |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed, tpe, tpe_ep, pbt, pbt_ep, long in rows:
        print(
            f"| {seed} | {tpe:.4f} | {tpe_ep} | {pbt:.4f} | {pbt_ep} | "
            f"{'PBT' if pbt < tpe else 'TPE'} | {long:.4f} |"
        )
    tpes, pbts = [r[1] for r in rows], [r[3] for r in rows]
    print(
        f"\nPBT better in {wins} of {len(rows)} seeds (than the control: {wins_long}); median "
        f"TPE {statistics.median(tpes):.4f}, PBT {statistics.median(pbts):.4f}, control "
        f"{statistics.median(r[5] for r in rows):.4f}"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
