"""Population-based training (issue 24): the sampler's population, and members that really
continue from each other's trained state through the tracking store, on both families and
across worker processes."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, Trial, TrialState

from protolab.samplers import (
    EXPLOIT_ATTR,
    GENERATION_ATTR,
    INHERITED_ATTR,
    MEMBER_ATTR,
    PARENT_ATTR,
    PBTSampler,
    family_tree,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
WIDTH = optuna.distributions.IntDistribution(8, 64)


def _segment(trial: Trial) -> float:
    """A stand-in for a segment: the value grows with the learning rate (so the ranking is
    known) and the architecture is a param the sampler must never move."""
    lr = trial.suggest_float("train.lr", 1e-4, 1.0, log=True)
    trial.suggest_int("width", 8, 64)
    return math.log10(lr)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 1}, "population_size >= 2"),
        ({"ready_epochs": 0}, "ready_epochs >= 1"),
        ({"truncation": 0.0}, "0 < truncation <= 0.5"),
        ({"truncation": 0.6}, "0 < truncation <= 0.5"),
        ({"perturb": []}, "perturb"),
        ({"perturb": [0.8, -1.0]}, "perturb"),
        ({"moves": "lr"}, "moves"),
    ],
)
def test_invalid_options_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PBTSampler(**kwargs)


def _study(population: int = 4, **kw: Any) -> optuna.Study:
    sampler = PBTSampler(population_size=population, seed=0, **kw)
    return optuna.create_study(direction="maximize", sampler=sampler)


def test_members_start_then_the_bottom_exploits_the_top() -> None:
    study = _study(population=4, truncation=0.25, perturb=[0.5, 2.0])
    study.optimize(_segment, n_trials=4)
    starts = study.trials
    assert [t.user_attrs[MEMBER_ATTR] for t in starts] == [0, 1, 2, 3]
    assert all(t.user_attrs[GENERATION_ATTR] == 0 for t in starts)
    assert all(INHERITED_ATTR not in t.user_attrs for t in starts)
    ranked = sorted(starts, key=lambda t: t.value, reverse=True)
    best, worst = ranked[0], ranked[-1]
    study.optimize(_segment, n_trials=4)  # generation 1 of every member
    gen1 = {t.user_attrs[MEMBER_ATTR]: t for t in study.trials[4:]}
    assert sorted(gen1) == [0, 1, 2, 3]
    for member, t in gen1.items():
        assert t.user_attrs[GENERATION_ATTR] == 1
        own = starts[member]
        if own.number == worst.number:  # bottom quarter: the best member's state, perturbed
            source = study.trials[t.user_attrs[INHERITED_ATTR]]  # its latest segment
            assert source.number == t.user_attrs[PARENT_ATTR]
            assert source.user_attrs[MEMBER_ATTR] == best.user_attrs[MEMBER_ATTR]
            assert t.user_attrs[EXPLOIT_ATTR] is True
            assert t.params["width"] == best.params["width"]  # the architecture goes along
            ratio = t.params["train.lr"] / source.params["train.lr"]
            assert any(math.isclose(ratio, f) for f in (0.5, 2.0)) or t.params["train.lr"] in (
                LR.low,
                LR.high,
            )
        else:  # the rest continue their own state, unchanged
            assert t.user_attrs[INHERITED_ATTR] == own.number
            assert t.user_attrs[EXPLOIT_ATTR] is False
            assert t.params == own.params


def test_members_copy_states_of_their_own_age() -> None:
    """Lockstep: a member copies another's state at its own age (epochs trained), never one
    further on, so no member ages faster than its own segments."""

    def segment(trial: Trial) -> float:  # the sweep's part: the member's epochs after it
        source = trial.user_attrs.get(INHERITED_ATTR)
        before = (
            0 if source is None else trial.study.trials[source].user_attrs["protolab.pbt_epochs"]
        )
        trial.set_user_attr("protolab.pbt_epochs", before + 2)
        return _segment(trial)

    study = _study(population=4, truncation=0.25)
    study.optimize(segment, n_trials=16)
    assert sum(bool(t.user_attrs.get(EXPLOIT_ATTR)) for t in study.trials) >= 3
    for t in study.trials:
        assert t.user_attrs["protolab.pbt_epochs"] == 2 * (t.user_attrs[GENERATION_ATTR] + 1)


def test_moves_limits_what_is_perturbed() -> None:
    def objective(trial: Trial) -> float:
        a = trial.suggest_float("train.lr", 1e-4, 1.0, log=True)
        trial.suggest_float("train.weight_decay", 1e-6, 1e-2, log=True)
        return math.log10(a)

    study = _study(population=2, truncation=0.5, moves=["lr"], perturb=[0.5])
    study.optimize(objective, n_trials=6)
    exploit = [t for t in study.trials if t.user_attrs.get(EXPLOIT_ATTR)]
    assert exploit
    for t in exploit:
        source = study.trials[t.user_attrs[INHERITED_ATTR]]
        assert t.params["train.weight_decay"] == source.params["train.weight_decay"]
        assert t.params["train.lr"] == max(source.params["train.lr"] * 0.5, 1e-4)


def test_failed_segment_and_done_members() -> None:
    """A member whose segment failed goes on from a good state; a member marked done by
    the sweep is never continued, and a full population of done members starts a new one."""
    study = _study(population=2, truncation=0.5)
    study.optimize(_segment, n_trials=2)

    def fail(trial: Trial) -> float:
        raise RuntimeError("boom")

    study.optimize(fail, n_trials=1, catch=(RuntimeError,))
    failed = study.trials[-1]
    assert failed.state == TrialState.FAIL
    study.optimize(_segment, n_trials=2)  # the other member's turn, then the failed one's
    again = study.trials[-1]
    assert again.user_attrs[MEMBER_ATTR] == failed.user_attrs[MEMBER_ATTR]
    assert again.user_attrs[GENERATION_ATTR] == 2
    assert again.user_attrs[EXPLOIT_ATTR] is True  # never the settings that failed, unchanged
    assert study.trials[again.user_attrs[INHERITED_ATTR]].state == TrialState.COMPLETE

    def finished(trial: Trial) -> float:  # the sweep's word: the member trained all its epochs
        trial.set_user_attr("protolab.pbt_done", True)
        return _segment(trial)

    done = _study(population=2, truncation=0.5)
    done.optimize(finished, n_trials=3)
    assert [t.user_attrs[MEMBER_ATTR] for t in done.trials] == [0, 1, 2]  # 2: a new member
    assert all(INHERITED_ATTR not in t.user_attrs for t in done.trials)


def test_lineage_follows_inheritance() -> None:
    study = _study(population=2, truncation=0.5)
    study.optimize(_segment, n_trials=8)
    best = study.best_trial
    tree = family_tree(study, best.number)
    assert f"#{best.number}" in tree and tree.splitlines()[1].startswith("  0")
    assert len(tree.splitlines()) == 1 + 1 + best.user_attrs[GENERATION_ATTR]


def test_several_objectives_are_refused() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=PBTSampler())
    with pytest.raises(ValueError, match="one objective"):
        study.ask()


def test_config_default_ready_epochs_matches_the_sampler() -> None:
    import inspect

    from protolab.config._pbt import PBT_DEFAULT_READY

    default = inspect.signature(PBTSampler).parameters["ready_epochs"].default
    assert default == PBT_DEFAULT_READY


# --- real sweeps: the state travels through the tracking store ------------------------------

SCRIPT = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 16, 32, log=True)
    return pl.Arch(L.Flatten(), L.Dense(width, activation="relu"), L.Dense(10))
"""


def _project(root: Path, backend: str, n_trials: int, storage: str = "") -> Path:
    (root / "exp.py").write_text(textwrap.dedent(SCRIPT))
    store = f", storage: '{storage}'" if storage else ""
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [{backend}]
            study: {{name: pbt, n_trials: {n_trials}, sampler: pbt{store},
                     sampler_options: {{population_size: 3, ready_epochs: 1, truncation: 0.34}}}}
            train: {{epochs: 3, batch_size: 64, optimizer: adam,
                     lr: {{low: 0.0005, high: 0.02, log: true}}}}
            hardware: {{accelerator: cpu}}
            """
        )
    )
    return cfg


def _runs(root: Path) -> dict[int, Any]:
    """Each trial's child run (one mode per study here), by trial number."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pbt")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {int(r.data.tags["protolab.trial"]): r for r in runs if "protolab.trial" in r.data.tags}


def _study_trials(storage: str) -> list[FrozenTrial]:
    from protolab._stores import open_storage

    return optuna.load_study(study_name="pbt", storage=open_storage(storage)).trials


def _check_inherited(root: Path, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Every continuing segment's first epoch starts from its source's final weights: the
    inherited state, evaluated before any update, scores the source's final val metrics."""
    runs = _runs(root)
    inherited = [t for t in trials if INHERITED_ATTR in t.user_attrs]
    assert inherited, "no segment continued another's state"
    for t in inherited:
        assert t.state == TrialState.COMPLETE, t.user_attrs
        source = int(t.user_attrs[INHERITED_ATTR])
        run, src = runs[t.number].data, runs[source].data
        assert run.tags["protolab.inherited_from"] == f"t{source}"
        assert run.tags["protolab.pbt_member"] == str(t.user_attrs[MEMBER_ATTR])
        assert src.tags["protolab.pbt_state"] == "saved"
        for metric in ("val/acc", "val/loss"):
            assert math.isclose(
                run.metrics[f"inherited/{metric}"], src.metrics[metric], rel_tol=1e-4, abs_tol=1e-5
            ), (t.number, source, metric)
    # the sources were trained (a fresh model scores ~0.1), so equal scores mean their state
    best_source = max(
        runs[int(t.user_attrs[INHERITED_ATTR])].data.metrics["val/acc"] for t in inherited
    )
    assert best_source > 0.5
    return inherited


def _sweep(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", str(cfg), *args],
        cwd=cfg.parent, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["lightning", "tf-graph"])
def test_members_continue_from_inherited_state(tmp_path: Path, backend: str) -> None:
    """Both families: a torch member inherits torch weights, a Keras member Keras weights
    (and optimizer state); the lineage command prints the inheritance."""
    cfg = _project(tmp_path, backend, n_trials=7)
    _sweep(cfg)
    trials = _study_trials(str(tmp_path / "mlruns" / "optuna.journal"))
    assert len(trials) == 7
    inherited = _check_inherited(tmp_path, trials)
    assert any(t.user_attrs[EXPLOIT_ATTR] for t in inherited)  # one member copied another
    tree = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "lineage", "pbt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tree.returncode == 0, tree.stderr
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value or 0.0)
    assert f"#{best.number}" in tree.stdout
    # run --best would train the best segment's values from scratch: another training
    rerun = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "run", str(cfg), "--best"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if INHERITED_ATTR in best.user_attrs:
        assert rerun.returncode == 2, rerun.stderr
        assert f"best trial t{best.number} continued" in rerun.stderr
        assert len(rerun.stderr.strip().splitlines()) == 1
    else:  # a first-generation best trained from scratch: --best trains it again
        assert rerun.returncode == 0, rerun.stderr


@pytest.mark.slow
@pytest.mark.parametrize("store", ["journal", "sqlite"])
def test_inheritance_across_two_workers(tmp_path: Path, store: str) -> None:
    """Two worker processes on one study store: members continue states that the other
    worker trained and uploaded."""
    storage = (
        str(tmp_path / "mlruns" / "optuna.journal")
        if store == "journal"
        else f"sqlite:///{tmp_path / 'study.db'}"
    )
    cfg = _project(tmp_path, "lightning", n_trials=9, storage="" if store == "journal" else storage)
    _sweep(cfg, "--workers", "2")
    trials = _study_trials(storage)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 9
    inherited = _check_inherited(tmp_path, trials)
    workers = {t.number: t.user_attrs.get("protolab.worker") for t in trials}
    assert len(set(workers.values())) == 2, workers
    crossed = [t for t in inherited if workers[t.number] != workers[t.user_attrs[INHERITED_ATTR]]]
    assert crossed, workers


def test_a_retried_segment_keeps_its_member_and_source() -> None:
    """A segment lost with its worker is enqueued again (sweep/_lease.py ``retry``): it must
    continue the same state with the same params, or its weights would not fit."""
    study = _study(population=2, truncation=0.5)
    study.optimize(_segment, n_trials=3)
    lost = study.trials[-1]
    assert INHERITED_ATTR in lost.user_attrs
    study.enqueue_trial(
        dict(lost.params),
        user_attrs={"protolab.retry_of": lost.number, "protolab.attempt": 1},
        skip_if_exists=False,
    )
    study.optimize(_segment, n_trials=1)
    again = study.trials[-1]
    for key in (MEMBER_ATTR, GENERATION_ATTR, INHERITED_ATTR, EXPLOIT_ATTR, PARENT_ATTR):
        assert again.user_attrs[key] == lost.user_attrs[key], key
    assert again.params == lost.params
    study.enqueue_trial({"train.lr": 0.01, "width": 9})  # the user's own point: a new member
    study.optimize(_segment, n_trials=1)
    assert study.trials[-1].user_attrs[MEMBER_ATTR] == 2
    assert INHERITED_ATTR not in study.trials[-1].user_attrs
