"""Evolution vs TPE vs random on the digits MLP space: best val/acc after N trials, by seed.

Each (sampler, seed) is a fresh study in a temporary store, run through the real CLI in
this process. Usage: python benchmarks/search_compare.py [N_TRIALS] [SEEDS] [EPOCHS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]


def main(n_trials: int = 16, seeds: int = 3, epochs: int = 3) -> None:
    import optuna
    from typer.testing import CliRunner

    from protolab._stores import open_storage
    from protolab.cli import app

    samplers = {
        "random": [],
        "tpe": [],
        "evolution": [
            "study.sampler_options={population_size: 6, tournament_size: 3, n_startup_trials: 6}"
        ],
    }
    results: dict[str, list[float]] = {name: [] for name in samplers}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for seed in range(seeds):
            for name, extra in samplers.items():
                study = f"{name}-{seed}"
                args = [
                    "sweep", str(ROOT / "configs/digits_mlp.yaml"), f"study.name={study}",
                    f"study.sampler={name}", f"study.seed={seed}", f"study.n_trials={n_trials}",
                    f"train.epochs={epochs}", "study.pruner=none", *extra,
                ]  # fmt: skip
                out = CliRunner().invoke(app, args)
                assert out.exit_code == 0, out.output
                s = optuna.load_study(study_name=study, storage=open_storage(None))
                results[name].append(s.best_value)
                print(f"{name:9s} seed {seed}: best val/acc {s.best_value:.4f}", flush=True)
    print(f"\nbest val/acc after {n_trials} trials ({epochs} epochs each), {seeds} seeds")
    for name, values in results.items():
        cells = " ".join(f"{v:.4f}" for v in values)
        print(f"{name:9s} median {statistics.median(values):.4f}  mean "
              f"{statistics.mean(values):.4f}  [{cells}]")  # fmt: skip


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
