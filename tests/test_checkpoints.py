"""tracking.checkpoints keeps exactly what it says: per policy, mid-trial, with two workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from protolab._tags import TAG
from protolab.checkpoint import find_checkpoints, keep
from tests._ship import Store, child, fake_checkpoint, has_checkpoint, store, upload

__all__ = ["store"]  # the module's MLflow store (a fixture)

VALUES = {0: 0.2, 1: 0.7, 2: 0.9}  # val/acc per trial, maximised


@pytest.mark.parametrize(("policy", "kept"), [("best", {2}), ("top_k", {2, 1}), ("all", {0, 1, 2})])
def test_policy_keeps_exactly_what_it_says(store: Store, policy: str, kept: set[int]) -> None:
    """Three trials on two modes each, uploaded as a sweep's writer does (done on mode 2)."""
    client, study = store.client, f"policy-{policy}"
    exp = store.study(study)
    runs: dict[int, list[str]] = {}
    for trial, value in VALUES.items():
        for i, backend in enumerate(("lightning", "keras")):
            run_id = child(client, exp, trial, backend, study)
            ckpt = fake_checkpoint(store.root, f"{study}-{trial}-{backend}")
            upload(client, exp, run_id, ckpt, trial, value, study=study, policy=policy, done=i == 1)
            client.set_terminated(run_id)
            runs.setdefault(trial, []).append(run_id)
            assert not ckpt.exists()  # the writer's temporary folder is gone
    assert set(find_checkpoints(client, exp, study)) == kept
    for trial, ids in runs.items():
        for run_id in ids:  # both modes of a kept trial, no mode of any other
            assert has_checkpoint(client, run_id) == (trial in kept)
            tags = client.get_run(run_id).data.tags
            assert tags[TAG.CHECKPOINT] == ("kept" if trial in kept else "deleted")


def test_a_running_trial_is_kept_until_done_and_dropped_when_its_other_mode_fails(
    store: Store,
) -> None:
    client, study = store.client, "pending"
    exp = store.study(study)

    def job(trial: int, value: float, done: bool = True) -> str:
        run_id = child(client, exp, trial, "lightning", study)
        ckpt = fake_checkpoint(store.root, f"{study}-{trial}")
        upload(client, exp, run_id, ckpt, trial, value, study=study, policy="best", done=done)
        return run_id

    first = job(0, 0.5)
    lead = job(1, 0.9, done=False)  # better, but its second mode is still to run
    assert set(find_checkpoints(client, exp, study)) == {0, 1}  # nothing dropped mid-trial
    client.set_terminated(child(client, exp, 1, "keras", study), status="FAILED")
    job(2, 0.1)  # the next trial's upload finds trial 1 will never be done
    assert set(find_checkpoints(client, exp, study)) == {0}
    assert has_checkpoint(client, first) and not has_checkpoint(client, lead)


def test_ranking_puts_feasible_trials_first_and_follows_the_direction(store: Store) -> None:
    client, study = store.client, "ranking"
    exp = store.study(study)
    for trial, (value, feasible) in enumerate([(0.1, False), (0.3, True), (0.2, True)]):
        run_id = child(client, exp, trial, "lightning", study)
        ckpt = fake_checkpoint(store.root, f"{study}-{trial}")
        upload(
            client, exp, run_id, ckpt, trial, value,
            study=study, policy="best", feasible=feasible, direction="minimize",
        )  # fmt: skip
    assert set(find_checkpoints(client, exp, study)) == {2}  # 0.1 breaks a constraint


class _Run:
    """A child run handle that records what it asks the writer to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.metrics: list[dict[str, float]] = []
        self.tags: dict[str, str] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.metrics.append(metrics)

    def call(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, *args))


class _Model:
    backend = "lightning"
    formats = ("pt2",)

    def save_checkpoint(self, directory: Path) -> None:
        (directory / "weights.pt").write_bytes(b"w")


def _ctx(policy: str = "top_k") -> Any:
    tracking = SimpleNamespace(checkpoints=policy, top_k=3)
    cfg = SimpleNamespace(tracking=tracking, backends=["lightning", "keras"])
    return SimpleNamespace(
        cfg=cfg, study_name="keep", metric="val/acc", direction="maximize", constraints=(),
        multi_objective=False,
    )  # fmt: skip


def test_keep_hands_each_finished_trial_job_to_the_writer() -> None:
    from protolab import Arch
    from protolab import layers as L
    from protolab.data import Dataset

    x, y = np.zeros((20, 8, 8, 1), np.float32), np.zeros(20, np.int64)
    data = Dataset("digits", x[:10], y[:10], x[10:], y[10:], "classification", 10)
    job = SimpleNamespace(arch=Arch(L.Flatten(), L.Dense(10)), dataset=data)
    tracker = SimpleNamespace(experiment_id="7")
    run = _Run()
    lead = SimpleNamespace(model=_Model(), metrics={"val/acc": 0.8})
    second = SimpleNamespace(model=_Model(), metrics={"val/acc": 0.6})
    keep(_ctx(), tracker, run, job, lead, {TAG.TRIAL: "4"})
    keep(_ctx(), tracker, run, job, second, {TAG.TRIAL: "4"})
    for skipped in ({TAG.TRIAL: "run"}, {TAG.TRIAL: "4", TAG.REPEAT: "1"}):
        keep(_ctx(), tracker, run, job, lead, skipped)
    keep(_ctx("none"), tracker, run, job, lead, {TAG.TRIAL: "5"})
    assert len(run.calls) == 2
    uploads = [c[2] for c in run.calls]
    assert [u.done for u in uploads] == [False, True]  # the trial's last mode ranks it
    assert {u.value for u in uploads} == {0.8}  # the trial's value: its lead mode's metric
    assert {u.experiment_id for u in uploads} == {"7"}
    assert [sorted(m) for m in run.metrics] == [["checkpoint/bytes", "checkpoint/save_ms"]] * 2
    assert all(m["checkpoint/bytes"] > 0 for m in run.metrics)
    folder = Path(run.calls[0][1])
    assert sorted(p.name for p in folder.iterdir()) == [
        "arch.json", "checkpoint.json", "example.npy", "weights.pt",
    ]  # fmt: skip
    assert np.load(folder / "example.npy").shape == (8, 8, 8, 1)
    for _fn, directory, *_ in run.calls:
        __import__("shutil").rmtree(directory)


def test_a_trial_already_outside_the_best_k_is_never_uploaded() -> None:
    """Worse than top_k (3) COMPLETE trials at its start: no save, no upload, no pruning
    search; one that may still enter the best k (or ties the k-th) is handed on as ever."""
    import optuna

    from protolab import Arch
    from protolab import layers as L
    from protolab.checkpoint import begin_trial
    from protolab.data import Dataset

    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.8, 0.7, 0.1):
        study.add_trial(optuna.trial.create_trial(value=value))
    x, y = np.zeros((20, 8, 8, 1), np.float32), np.zeros(20, np.int64)
    data = Dataset("digits", x[:10], y[:10], x[10:], y[10:], "classification", 10)
    job = SimpleNamespace(arch=Arch(L.Flatten(), L.Dense(10)), dataset=data)
    results = {}
    for value in (0.65, 0.7, 0.75):
        trial = study.ask()
        begin_trial(_ctx(), trial)
        run = _Run()
        result = SimpleNamespace(model=_Model(), metrics={"val/acc": value})
        keep(_ctx(), SimpleNamespace(experiment_id="1"), run, job, result, {
            TAG.TRIAL: str(trial.number)})  # fmt: skip
        results[value] = run
        for _fn, directory, *_ in run.calls:
            __import__("shutil").rmtree(directory)
    assert results[0.65].calls == [] and results[0.65].metrics == []
    assert results[0.65].tags == {TAG.CHECKPOINT: "outside the best"}
    assert len(results[0.7].calls) == 1  # a tie with the 3rd best: ranking decides
    assert len(results[0.75].calls) == 1
    begin_trial(_ctx("all"), study.ask())  # every checkpoint kept: nothing is outside
    run = _Run()
    keep(_ctx("all"), SimpleNamespace(experiment_id="1"), run, job, result, {TAG.TRIAL: "9"})
    assert len(run.calls) == 1


@pytest.mark.slow
def test_two_workers_keep_exactly_the_best_two(workdir: Path) -> None:
    """Two `protolab sweep` processes on one study: the kept set is the study's top 2."""
    import optuna

    from protolab.commands._studies import mlflow_client

    (workdir / "exp.py").write_text(
        textwrap.dedent(
            """
            import protolab as pl
            from protolab import layers as L

            @pl.experiment(data="digits", metric="val/acc")
            def model(space):
                width = space.int("width", 4, 32, log=True)
                return pl.Arch(L.Flatten(), L.Dense(width, activation="relu"), L.Dense(10))
            """
        )
    )
    (workdir / "cfg.yaml").write_text(
        textwrap.dedent(
            """
            experiment: exp.py
            backends: [lightning]
            study: {name: pair, n_trials: 5, sampler: random, pruner: none}
            train: {epochs: 1, batch_size: 128, lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
            hardware: {accelerator: cpu, threads: 1}
            tracking: {checkpoints: top_k, top_k: 2}
            """
        )
    )
    exe = str(Path(sys.executable).parent / "protolab")
    workers = [
        subprocess.Popen([exe, "sweep", "cfg.yaml"], cwd=workdir, stdout=subprocess.DEVNULL)
        for _ in range(2)
    ]
    assert [w.wait(timeout=900) for w in workers] == [0, 0]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "mlruns" / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="pair", storage=storage).get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    best = sorted(complete, key=lambda t: (-t.value, t.number))[:2]
    client = mlflow_client(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pair").experiment_id
    assert set(find_checkpoints(client, exp, "pair")) == {t.number for t in best}
    children = client.search_runs([exp], filter_string=f"tags.`{TAG.TRIAL}` != ''")
    assert len(children) == 5
    for run in children:
        wanted = int(run.data.tags[TAG.TRIAL]) in {t.number for t in best}
        assert has_checkpoint(client, run.info.run_id) == wanted
