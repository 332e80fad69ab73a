"""Fewer and cheaper store writes per trial (issue 26: a tiny sweep's time outside training),
with nothing lost: real SQLite, journal and MLflow stores, a real tracking writer process."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from protolab._stores import open_storage, use_wal
from protolab.cli import app
from protolab.sweep._callbacks import ReportToPruner
from protolab.sweep._storage import LeasedStorage
from protolab.tracking import AsyncTracker
from protolab.tracking._writer import take_writer

TAGS = {"protolab.study": "s", "protolab.trial": "0", "protolab.backend": "lightning"}


def _journal_mode(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        con.close()


def _child(client: MlflowClient, experiment: str) -> object:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`protolab.trial` = '0'")
    assert len(runs) == 1
    return runs[0]


def test_an_existing_store_turns_wal_and_its_db_file_alone_is_whole_after_end(
    tmp_path: Path,
) -> None:
    """A store MLflow made (rollback journal) is switched once; after the writer ends, a
    copy of the ``.db`` file alone (no ``-wal``) holds every run, as a backup would."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    MlflowClient(uri).search_experiments()  # MLflow creates its tables
    assert _journal_mode(db) == "delete"
    tracker = AsyncTracker(take_writer(), uri, "e", "e").wait_open()
    run = tracker.child("t0-lightning", TAGS, {"width": 8})
    run.log_metrics({"val/acc": 0.5}, step=1)
    run.end("COMPLETE")
    tracker.end()
    copy = tmp_path / "copy" / "mlflow.db"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)  # the .db file alone, before anything here opens the store
    assert _journal_mode(db) == "wal"
    child = _child(MlflowClient(f"sqlite:///{copy}"), "e")
    assert child.info.status == "FINISHED"  # type: ignore[attr-defined]
    assert child.data.metrics == {"val/acc": 0.5}  # type: ignore[attr-defined]


def test_a_backup_put_back_after_end_is_read_as_it_is(tmp_path: Path) -> None:
    """After the writer ends, its log is empty: a ``.db`` file copied back over the store
    (a restore from a backup) is read as that backup, not through a stale log as a
    damaged store ("database disk image is malformed")."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    MlflowClient(uri).search_experiments()
    backup = tmp_path / "backup.db"
    shutil.copyfile(db, backup)  # the empty store, before this study
    tracker = AsyncTracker(take_writer(), uri, "e", "e").wait_open()
    for i in range(20):  # enough writes to leave pages in the log
        run = tracker.child(f"t{i}-lightning", TAGS, {"width": 8})
        run.log_metrics({"val/acc": 0.5}, step=1)
        run.end("COMPLETE")
    tracker.end()
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    shutil.copyfile(backup, db)  # put the backup back; -wal / -shm stay as they are
    assert MlflowClient(uri).get_experiment_by_name("e") is None  # the backup's contents
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_fresh_sqlite_study_store_is_created_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "optuna.db"
    storage = open_storage(f"sqlite:///{db}")
    study = optuna.create_study(storage=storage, study_name="s")
    study.tell(study.ask(), 1.0)
    assert _journal_mode(db) == "wal"
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials[0].value == 1.0
    use_wal(db)  # once is enough; again changes nothing
    assert _journal_mode(db) == "wal"


def test_a_jobs_metrics_are_held_until_its_end_or_a_live_write(tmp_path: Path) -> None:
    """Nothing goes to the writer while a job runs (its end carries the metrics, each with
    the time it was logged); a long job's are written at an epoch's end, while it waits."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = AsyncTracker(take_writer(), uri, "e", "e").wait_open()
    tracker.live_every_s = 3600.0  # a short job, however slow this machine is right now
    client = MlflowClient(uri)
    run = tracker.child("t0-lightning", TAGS, {"width": 8})
    tracker.sync()
    run_id = _child(client, "e").info.run_id  # type: ignore[attr-defined]
    run.log_metrics({"val/acc": 0.5}, step=1)
    time.sleep(0.05)
    run.log_metrics({"val/acc": 0.6}, step=2)
    tracker.sync()
    assert client.get_run(run_id).data.metrics == {}  # held: no write during the steps
    tracker.live_every_s = 0.0  # a long job: the next epoch's end writes what is held
    run.log_metrics({"val/acc": 0.7}, step=3)
    assert client.get_run(run_id).data.metrics == {"val/acc": 0.7}  # written, waited for
    run.set_tags({"protolab.device": "cpu"})
    run.end("COMPLETE")
    tracker.end()
    history = sorted(client.get_metric_history(run_id, "val/acc"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3]
    assert history[1].timestamp - history[0].timestamp >= 50  # when logged, not when written
    done = client.get_run(run_id)
    assert done.info.status == "FINISHED" and done.data.tags["protolab.device"] == "cpu"


def test_without_a_pruner_the_values_are_written_when_the_trial_is_done() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    report = ReportToPruner("val/acc", epochs=3)
    report.on_trial_start(trial)
    report.on_job_start("lightning", lead=True)
    report.on_epoch("lightning", 1, {"val/acc": 0.5})
    report.on_epoch("lightning", 2, {"val/acc": 0.6})
    assert study.trials[0].intermediate_values == {}  # nothing reads them meanwhile
    report.on_trial_done(trial)
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.6}
    report.LIVE_EVERY_S = 0.0  # a long trial: written at each epoch's end
    report.on_epoch("lightning", 3, {"val/acc": 0.7})
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}


def _journal_logs(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_asked_trials_are_created_with_the_workers_attrs_in_one_write(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    storage = LeasedStorage(open_storage(str(journal)), str(journal))
    storage.stamp_new_trials({"protolab.worker": "h:1:x", "protolab.script_hash": "abc"})
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    assert trial.user_attrs == {"protolab.worker": "h:1:x", "protolab.script_hash": "abc"}
    assert not [log for log in _journal_logs(journal) if "user_attr" in log]  # no extra writes
    study.tell(trial, 1.0)
    study.enqueue_trial({})  # a queued trial keeps its own template: the sweep adds them
    assert study.ask().user_attrs == {}


SCRIPT = """
import sys
from protolab.tracking._writer import import_mlflow
import_mlflow()
from mlflow.telemetry.client import get_telemetry_client
print(get_telemetry_client() is None)
"""


@pytest.mark.slow
def test_the_writer_imports_mlflow_without_its_telemetry_threads(tmp_path: Path) -> None:
    """Outside tests and CI (where MLflow turns it off itself), a writer imports MLflow with
    no telemetry client; a user who sets MLFLOW_DISABLE_TELEMETRY keeps their choice."""
    ci = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY"}
    env = {k: v for k, v in os.environ.items() if k not in ci}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


TINY = """
import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    return pl.Arch(L.Flatten(), L.Dense(space.int("width", 8, 16), activation="relu"), L.Dense(10))
"""


@pytest.mark.slow
def test_a_sweep_keeps_every_write_with_fewer_of_them(
    workdir: Path, make_project: Callable[..., Path]
) -> None:
    """End to end: WAL store, trials created with their attrs, intermediate values and
    per-epoch metrics (each at its own time) all there, every COMPLETE trial FINISHED."""
    cfg = make_project(TINY, epochs=3)
    result = CliRunner().invoke(app, ["sweep", str(cfg), "study.n_trials=3"])
    assert result.exit_code == 0, result.output + str(result.exception)
    mlruns = workdir / "mlruns"
    assert _journal_mode(mlruns / "mlflow.db") == "wal"
    logs = _journal_logs(mlruns / "optuna.journal")
    stamped = {"protolab.worker", "protolab.worker_scope", "protolab.script_hash"}
    assert not [log for log in logs if stamped & set(log.get("user_attr", {}))]  # type: ignore[arg-type]
    study = optuna.load_study(
        study_name="tiny", storage=open_storage(str(mlruns / "optuna.journal"))
    )
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    runs = {
        int(r.data.tags["protolab.trial"]): r
        for r in client.search_runs([exp.experiment_id], "tags.`protolab.trial` != ''")
    }
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert {"protolab.worker", "protolab.script_hash", "protolab.metrics"} <= set(t.user_attrs)
        assert sorted(t.intermediate_values) == [1, 2, 3]
        run = runs[t.number]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
        assert len({m.timestamp for m in history}) > 1  # logged per epoch, not at the end
        assert t.intermediate_values[3] == pytest.approx(run.data.metrics["val/acc"])
