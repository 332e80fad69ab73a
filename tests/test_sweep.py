"""Sweeps end to end on real stores: Optuna journal + MLflow SQLite under ./mlruns."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab._stores import open_storage
from protolab.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def _client(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _runs(root: Path, study: str) -> tuple[list, list]:  # type: ignore[type-arg]
    client = _client(root)
    exp = client.get_experiment_by_name(study)
    assert exp is not None, "one MLflow experiment per study"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("protolab.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _study(root: Path, name: str) -> optuna.Study:
    storage = open_storage(str(root / "mlruns" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def test_sweep_logs_layout_and_resume_tops_up(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    cfg = make_project(epochs=3)
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=3"])
    assert result.exit_code == 0, result.output + str(result.exception)

    study = _study(workdir, "tiny")
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    parents, children = _runs(workdir, "tiny")
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.metrics["sweep/trials_complete"] == 3
    client = _client(workdir)
    for child in children:
        tags, params = child.data.tags, child.data.params
        n = tags["protolab.trial"]
        assert child.info.run_name == f"t{n}-lightning"
        assert child.info.status == "FINISHED"
        assert tags["protolab.state"] == "COMPLETE"
        assert tags["protolab.backend"] == "lightning"
        assert tags["protolab.study"] == "tiny"
        for key in ("protolab.arch_hash", "protolab.script_hash", "protolab.config_hash"):
            assert len(tags[key]) == 12
        trial = study.trials[int(n)]
        assert int(params["width"]) == trial.params["width"]
        assert params["act"] == trial.params["act"]
        assert params["train.epochs"] == "3" and params["train.batch_size"] == "128"
        # Per-epoch curves: one point per epoch for each learning metric.
        for metric in ("train/loss", "val/loss", "val/acc"):
            history = client.get_metric_history(child.info.run_id, metric)
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
        width = trial.params["width"]
        assert child.data.metrics["model/params"] == 64 * width + width + width * 10 + 10
        assert child.data.metrics["val/acc"] == pytest.approx(trial.value)
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"arch.json", "arch.txt", "config", "script"} <= files
        script = client.download_artifacts(child.info.run_id, "script/exp.py")
        assert Path(script).read_text() == (workdir / "exp.py").read_text()

    # Rerunning with a larger n_trials adds exactly the difference, under the same parent.
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=5"])
    assert result.exit_code == 0, result.output
    assert len(_study(workdir, "tiny").trials) == 5
    parents, children = _runs(workdir, "tiny")
    assert len(parents) == 1 and len(children) == 5
    assert sorted(int(c.data.tags["protolab.trial"]) for c in children) == [0, 1, 2, 3, 4]
    # A resumed study continues the search instead of replaying the first run's draws.
    params = [tuple(sorted(t.params.items())) for t in _study(workdir, "tiny").trials]
    assert params[3:] != params[:2]

    # Same command again: the study is full, nothing runs.
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=5"])
    assert result.exit_code == 0
    assert len(_study(workdir, "tiny").trials) == 5


FLAKY_ARCH = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits")
def model(space: pl.Space) -> pl.Arch:
    if space.choice("broken", [True, False]):
        return pl.Arch(L.Flatten(), L.Conv2D(8, 3), L.Dense(10))  # Conv2D after Flatten
    return pl.Arch(L.Flatten(), L.Dense(10))
"""


def test_failed_trials_are_recorded_and_the_sweep_goes_on(
    make_project: Callable[..., Path], workdir: Path
) -> None:
    cfg = make_project(script=FLAKY_ARCH, epochs=1)
    result = runner.invoke(app, ["sweep", str(cfg), "study.n_trials=3"])
    assert result.exit_code == 0, result.output
    study = _study(workdir, "tiny")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed, "the random sampler with seed 0 draws broken=True at least once"
    assert all(t.params["broken"] is True for t in failed)
    _, children = _runs(workdir, "tiny")
    bad = [c for c in children if c.data.tags["protolab.state"] == "FAIL"]
    assert len(bad) == len(failed)
    for run in bad:
        assert run.info.status == "FAILED"
        reason = run.data.tags["protolab.fail_reason"]
        assert reason.startswith("ArchError") and "Conv2D" in reason
    assert not [c for c in children if c.info.status == "RUNNING"]


def test_run_with_params_and_best(make_project: Callable[..., Path], workdir: Path) -> None:
    cfg = make_project(epochs=1)
    result = runner.invoke(app, ["run", str(cfg), "--params", '{"width": 16, "act": "tanh"}'])
    assert result.exit_code == 0, result.output
    assert "run-lightning" in result.stdout
    _, children = _runs(workdir, "tiny")
    (run,) = children
    assert run.data.params["width"] == "16" and run.data.params["act"] == "tanh"
    assert run.data.metrics["model/params"] == 64 * 16 + 16 + 16 * 10 + 10

    result = runner.invoke(app, ["run", str(cfg), "--best"])
    assert result.exit_code == 2 and "does not exist yet" in result.stderr
    assert runner.invoke(app, ["sweep", str(cfg)]).exit_code == 0
    best = _study(workdir, "tiny").best_trial
    result = runner.invoke(app, ["run", str(cfg), "--best"])
    assert result.exit_code == 0, result.output
    _, children = _runs(workdir, "tiny")
    (rerun,) = [c for c in children if c.info.run_name == "best-lightning"]
    assert int(rerun.data.params["width"]) == best.params["width"]
    assert rerun.data.params["act"] == best.params["act"]


def test_readme_quickstart_command_in_a_real_process(workdir: Path) -> None:
    """The shipped digits config, as the README runs it, in a fresh interpreter."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable, "-m", "protolab.cli", "sweep", str(root / "configs/digits_mlp.yaml"),
            "study.n_trials=2", "train.epochs=2",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "digits-mlp: 2 complete" in proc.stdout
    assert (workdir / "mlruns" / "mlflow.db").is_file()
    assert (workdir / "mlruns" / "optuna.journal").is_file()
    parents, children = _runs(workdir, "digits-mlp")
    assert len(parents) == 1 and len(children) == 4  # 2 trials, paired: one run per mode
    assert {c.data.tags["protolab.family"] for c in children} == {"dynamic", "static"}
    checker = Path(__file__).resolve().parents[2] / "shared/contract/check_layout.py"
    if checker.is_file():  # the shared layout contract, read the way a user's client does
        out = subprocess.run(
            [sys.executable, str(checker), f"sqlite:///{workdir}/mlruns/mlflow.db", "digits-mlp",
             "--children", "4", "--pairs", "--metrics", "train/loss,val/loss,val/acc,model/params"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
