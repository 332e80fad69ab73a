"""Search strategies on real studies: every sampler on both backends, pruners, multi-objective,
constraints, warm starts and evolution lineage recorded in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab._stores import open_storage
from protolab.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()
State = optuna.trial.TrialState

# Discrete and small so that `grid` applies too; `width` 1 is a bottleneck (a bad model).
SPACE = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits")
def model(space: pl.Space) -> pl.Arch:
    width = space.choice("width", [1, 16, 32])
    act = space.choice("act", ["relu", "tanh"])
    depth = space.int("depth", 1, 2)
    body = [L.Dense(width, activation=act) for _ in range(depth)]
    return pl.Arch(L.Flatten(), *body, L.Dense(10))
"""


def _config(root: Path, backends: str = "[lightning, keras]", epochs: int = 1) -> Path:
    (root / "exp.py").write_text(SPACE)
    cfg = root / "cfg.yaml"
    cfg.write_text(
        f"experiment: exp.py\nbackends: {backends}\n"
        "study: {name: s, n_trials: 2, sampler: random, pruner: none}\n"
        f"train: {{epochs: {epochs}, batch_size: 128, lr: 0.01}}\nhardware: {{accelerator: cpu}}\n"
    )
    return cfg


def _study(root: Path, name: str = "s") -> optuna.Study:
    storage = open_storage(str(root / "mlruns" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def _children(root: Path, name: str = "s") -> list:  # type: ignore[type-arg]
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    assert exp is not None
    return [
        r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]


SAMPLERS = ["tpe", "random", "gp", "cmaes", "nsga2", "qmc", "grid", "evolution"]
# A pair is trained inside one trial, out of the sampler's sight; the default sampler and the
# two that pick points themselves (grid's combinations, evolution's parents) run paired, the
# others on one mode (a Keras import and XLA compile less each).
PAIRED = {"tpe", "grid", "evolution"}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_a_sweep(workdir: Path, sampler: str) -> None:
    cfg = _config(workdir) if sampler in PAIRED else _config(workdir, backends="[lightning]")
    result = runner.invoke(app, ["sweep", str(cfg), f"study.sampler={sampler}"])
    assert result.exit_code == 0, result.output + result.stderr
    study = _study(workdir)
    assert sum(t.state == State.COMPLETE for t in study.trials) == 2
    children = _children(workdir)
    want = ["keras", "keras", "lightning", "lightning"] if sampler in PAIRED else ["lightning"] * 2
    assert sorted(r.data.tags["protolab.backend"] for r in children) == want
    if sampler == "grid":  # grid never repeats a point
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 2


def test_evolution_records_lineage_in_optuna_and_mlflow(workdir: Path) -> None:
    cfg = _config(workdir, backends="[lightning]")
    opts = "study.sampler_options={population_size: 3, tournament_size: 2, n_startup_trials: 3}"
    result = runner.invoke(
        app, ["sweep", str(cfg), "study.sampler=evolution", opts, "study.n_trials=8"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    study = _study(workdir)
    children = [t for t in study.trials if "protolab.parent_trial" in t.user_attrs]
    assert len(children) >= 4  # every trial after the 3 random ones has a parent
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in _children(workdir)}
    for t in children:
        parent = study.trials[t.user_attrs["protolab.parent_trial"]]
        changed = [k for k in t.params if k in parent.params and t.params[k] != parent.params[k]]
        assert 1 <= len(changed) <= 1 + len(set(t.params) ^ set(parent.params))
        run = runs[f"t{t.number}-lightning"]
        assert run.data.tags["protolab.parent_trial"] == str(parent.number)
        path = client.download_artifacts(run.info.run_id, "lineage.json")
        lineage = json.loads(Path(path).read_text())
        assert lineage["parent_trial"] == parent.number
        assert set(changed) <= set(lineage["diff"])
    tree = runner.invoke(app, ["lineage", "s", "--trial", str(children[-1].number)])
    assert tree.exit_code == 0
    assert f"#{children[-1].number}" in tree.stdout and "(root)" in tree.stdout


BAD_OR_GOOD = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits")
def model(space: pl.Space) -> pl.Arch:
    width = space.choice("width", [1, 2, 64])
    return pl.Arch(L.Flatten(), L.Dense(width, activation="relu"), L.Dense(10))
"""


# One mode per family: tf-graph runs the same whole-epoch program and pruning hook as the XLA
# mode, without an XLA compile for each of the 10 trials.
@pytest.mark.parametrize("backend", ["lightning", "tf-graph"])
def test_hyperband_prunes_on_each_backend(workdir: Path, backend: str) -> None:
    cfg = _config(workdir, backends=f"[{backend}]", epochs=9)
    (workdir / "exp.py").write_text(BAD_OR_GOOD)
    result = runner.invoke(
        app,
        ["sweep", str(cfg), "study.pruner=hyperband", "study.n_trials=10", "train.lr=0.003"],
    )
    assert result.exit_code == 0, result.output + result.stderr
    study = _study(workdir)
    pruned = [t for t in study.trials if t.state == State.PRUNED]
    assert pruned, [(t.params, t.intermediate_values) for t in study.trials]
    runs = {r.info.run_name: r for r in _children(workdir)}
    for t in pruned:
        run = runs[f"t{t.number}-{backend}"]
        assert run.data.tags["protolab.state"] == "PRUNED"
        assert run.info.status == "FINISHED"
        assert max(t.intermediate_values) < 9  # stopped before the last epoch
        w = t.params["width"]  # the model's size is known before training: pruned runs have it
        assert run.data.metrics["model/params"] == 64 * w + w + w * 10 + 10


def test_pruned_pair_leaves_the_twin_untrained(workdir: Path) -> None:
    cfg = _config(workdir, epochs=4)
    (workdir / "exp.py").write_text(BAD_OR_GOOD)
    result = runner.invoke(
        app,
        ["sweep", str(cfg), "study.pruner=threshold", "study.pruner_options={lower: 0.5}",
         "study.n_trials=4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    study = _study(workdir)
    pruned = [t for t in study.trials if t.state == State.PRUNED]
    assert pruned and all(t.params["width"] in (1, 2) for t in pruned)
    names = {r.info.run_name for r in _children(workdir)}
    for t in pruned:  # the lead (lightning) decided; its static twin never started
        assert f"t{t.number}-lightning" in names and f"t{t.number}-keras" not in names


def test_two_objectives_give_a_pareto_front_and_constraints_hold(workdir: Path) -> None:
    cfg = _config(workdir, backends="[lightning]")
    result = runner.invoke(
        app,
        [
            "sweep", str(cfg), "study.n_trials=5",
            "study.objectives=[{metric: val/acc}, {metric: model/params, direction: minimize}]",
            "study.constraints=['model/params <= 2000']",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    assert "Pareto front" in result.stdout
    study = _study(workdir)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = study.best_trials
    assert front
    for t in front:  # feasible only: every constraint value <= 0
        assert all(v <= 0 for v in t.constraints.values())
        assert t.values[1] <= 2000
    done = [t for t in study.trials if t.state == State.COMPLETE]
    for t in front:  # nothing dominates a front member
        assert not any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
            and all(v <= 0 for v in o.constraints.values())
            for o in done
        )  # fmt: skip


def test_rung_pruning_with_two_objectives_is_rejected(workdir: Path) -> None:
    """median/percentile/threshold judge two objectives (tests/test_mo_pruning.py);
    hyperband's rungs rank by one value."""
    cfg = _config(workdir)
    result = runner.invoke(
        app,
        ["sweep", str(cfg), "study.pruner=hyperband",
         "study.objectives=[{metric: val/acc}, {metric: time/step_ms}]"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "got 'hyperband' with 2 objectives" in result.stderr


def test_from_enqueues_the_best_of_an_earlier_study(workdir: Path) -> None:
    cfg = _config(workdir, backends="[lightning]")
    assert runner.invoke(app, ["sweep", str(cfg), "study.n_trials=4"]).exit_code == 0
    earlier = _study(workdir)
    best = sorted(earlier.trials, key=lambda t: t.value, reverse=True)[:3]
    result = runner.invoke(
        app, ["sweep", str(cfg), "study.name=warm", "study.n_trials=4", "--from", "s"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    warm = _study(workdir, "warm")
    first = warm.trials[:3]
    assert [t.params for t in first] == [t.params for t in best]
    assert [t.user_attrs["protolab.enqueued"] for t in first] == [f"s#t{t.number}" for t in best]
    tags = {r.info.run_name: r.data.tags for r in _children(workdir, "warm")}
    assert tags["t0-lightning"]["protolab.enqueued"] == f"s#t{best[0].number}"
    # From one MLflow run: its sampled values become the first trial.
    run = next(r for r in _children(workdir, "s") if r.data.tags["protolab.trial"] == "1")
    result = runner.invoke(
        app, ["sweep", str(cfg), "study.name=one", "study.n_trials=1", "--from", run.info.run_id]
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert _study(workdir, "one").trials[0].params == earlier.trials[1].params


def test_script_change_is_noted_and_recorded(workdir: Path) -> None:
    cfg = _config(workdir, backends="[lightning]")
    assert runner.invoke(app, ["sweep", str(cfg)]).exit_code == 0
    (workdir / "exp.py").write_text(SPACE.replace('"depth", 1, 2', '"depth", 1, 3'))
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=3"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "script changed since this study's earlier trials" in result.stderr
    study = _study(workdir)
    hashes = study.user_attrs["protolab.script_hashes"]
    assert len(hashes) == 2
    assert [t.user_attrs["protolab.script_hash"] for t in study.trials] == [
        hashes[0], hashes[0], hashes[1]
    ]  # fmt: skip
    # A changed choice list cannot continue an Optuna study: a clear error, nothing run.
    (workdir / "exp.py").write_text(SPACE.replace("[1, 16, 32]", "[8, 16, 32]"))
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=4"])
    assert result.exit_code == 2
    assert "choice 'width' changed from [1, 16, 32] to [8, 16, 32]" in result.stderr
    assert len(_study(workdir).trials) == 3


def test_grid_stops_when_every_combination_ran(workdir: Path) -> None:
    cfg = _config(workdir, backends="[lightning]")
    result = runner.invoke(app, ["sweep", str(cfg), "study.sampler=grid", "study.n_trials=50"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "the grid is exhausted" in result.stderr
    trials = _study(workdir).trials
    assert len(trials) == 3 * 2 * 2  # width x act x depth
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12
