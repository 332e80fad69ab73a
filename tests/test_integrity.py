"""A study's two stores hold one study, and no trial hangs a sweep (issue 25, items 5-6).

Real stores (an Optuna journal and a SQLite MLflow store under ``mlruns/``) and the real
CLI in subprocesses: the journal deleted between sweeps and during one, replaced, cut
short; a finished trial whose run stayed RUNNING; a model function that hangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from protolab._stores import open_storage
from protolab._tags import ATTR, TAG
from protolab.checkpoint import find_checkpoints
from tests.conftest import TINY_MLP

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


def _project(root: Path, n_trials: int = 2, extra: str = "", script: str = TINY_MLP) -> Path:
    (root / "exp.py").write_text(textwrap.dedent(script))
    cfg = root / "cfg.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""\
            experiment: exp.py
            backends: [lightning]
            study: {{name: tiny, n_trials: {n_trials}, sampler: random, pruner: none{extra}}}
            train: {{epochs: 1, batch_size: 128, lr: 0.005}}
            hardware: {{accelerator: cpu}}
            tracking: {{checkpoints: all}}
            """
        )
    )
    return cfg


def _sweep(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "protolab.cli", "sweep", "cfg.yaml", *args],
        cwd=root, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _journal(root: Path) -> Path:
    return root / "mlruns" / "optuna.journal"


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    if not _journal(root).is_file():
        return []
    try:
        return optuna.load_study(
            study_name="tiny", storage=open_storage(str(_journal(root)))
        ).trials
    except KeyError:
        return []


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _runs(root: Path) -> list:  # type: ignore[type-arg]
    client = _client(root)
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def _errors(text: str) -> list[str]:
    assert "Traceback" not in text and "JSONDecodeError" not in text, text
    return [line for line in text.splitlines() if line.startswith("error:")]


def _study_id(root: Path) -> str:
    storage = open_storage(str(_journal(root)))
    return str(optuna.load_study(study_name="tiny", storage=storage).user_attrs[ATTR.STUDY_ID])


def test_a_lost_journal_is_refused_then_started_over_on_purpose(tmp_path: Path) -> None:
    _project(tmp_path)
    assert _sweep(tmp_path).returncode == 0
    first = _study_id(tmp_path)
    runs = _runs(tmp_path)
    assert {r.data.tags.get(TAG.STUDY_ID) for r in runs} == {first}  # parent and children
    _journal(tmp_path).unlink()

    lost = _sweep(tmp_path)
    assert lost.returncode == 2, lost.stderr
    (line,) = _errors(lost.stderr)
    for part in ("study.storage", "optuna.journal", "holds no study 'tiny'", "tracking.uri"):
        assert part in line, line
    assert "mlflow.db" in line and first in line and "--new-study" in line, line
    assert len(_runs(tmp_path)) == len(runs)  # nothing written to MLflow
    assert _trials(tmp_path) == []  # no study made in the study store either

    again = _sweep(tmp_path, "--new-study")
    assert again.returncode == 0, again.stderr[-3000:]
    second = _study_id(tmp_path)
    assert second != first
    by_id: dict[str, list[str]] = {}
    for r in _runs(tmp_path):
        by_id.setdefault(str(r.data.tags.get(TAG.STUDY_ID)), []).append(r.info.run_name)
    assert sorted(by_id[first]) == sorted(by_id[second]) == ["t0-lightning", "t1-lightning", "tiny"]
    client = _client(tmp_path)
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    kept = find_checkpoints(client, exp.experiment_id, "tiny")  # what export reads
    assert {r.data.tags[TAG.STUDY_ID] for t in kept.values() for r in t.runs} == {second}
    assert len(kept) == 2
    # the report reads the study now holding the name: the old study's runs stay out
    from protolab.report import load_report_data, resolve_source

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    data = load_report_data(resolve_source("tiny", uri, str(_journal(tmp_path))))
    assert {r.run_id for r in data.runs} <= {
        r.info.run_id for r in _runs(tmp_path) if r.data.tags.get(TAG.STUDY_ID) == second
    }
    assert len(data.runs) == 2
    assert _sweep(tmp_path, "study.n_trials=3").returncode == 0  # bound: resumes plainly


def test_a_replaced_or_shortened_journal_is_refused(tmp_path: Path) -> None:
    _project(tmp_path, n_trials=3)
    assert _sweep(tmp_path).returncode == 0
    journal = _journal(tmp_path)
    whole = journal.read_bytes()
    lines = whole.splitlines(keepends=True)
    creates = [i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 4]
    journal.write_bytes(b"".join(lines[: creates[1]]))  # the first trial only
    short = _sweep(tmp_path)
    assert short.returncode == 2, short.stderr
    (line,) = _errors(short.stderr)
    assert "holds 1 trials of study 'tiny'" in line and "up to trial 2" in line, line
    assert "--new-study" in line

    other = tmp_path / "other"
    other.mkdir()
    _project(other, n_trials=1)
    assert _sweep(other).returncode == 0
    journal.write_bytes(_journal(other).read_bytes())  # another study named tiny
    replaced = _sweep(tmp_path)
    assert replaced.returncode == 2, replaced.stderr
    (line,) = _errors(replaced.stderr)
    assert f"with id {_study_id(other)}" in line and "replaced" in line, line

    journal.write_bytes(whole)  # put back as it was: resumes
    assert _sweep(tmp_path, "study.n_trials=4").returncode == 0


def test_the_journal_deleted_mid_sweep_stops_with_one_message(tmp_path: Path) -> None:
    _project(tmp_path, n_trials=40)
    proc = subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "sweep", "cfg.yaml"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 300
    while sum(t.state == State.COMPLETE for t in _trials(tmp_path)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, err
        time.sleep(0.05)
    _journal(tmp_path).unlink()
    proc.wait(timeout=300)
    reader.join()
    assert proc.returncode == 1, err[0]
    (line,) = _errors(err[0])
    assert "optuna.journal was deleted, moved or replaced" in line, line
    assert "--new-study" in line and "JSONDecodeError" not in err[0], line
    left = _journal(tmp_path)  # nothing more written: at most the one append in flight
    assert not left.exists() or left.stat().st_size < 2048
    assert not [r.info.run_name for r in _runs(tmp_path) if r.info.status == "RUNNING"]
    assert _sweep(tmp_path).returncode == 2  # a lost study store, as between sweeps


def test_a_finished_trial_leaves_no_running_run_after_a_rerun(tmp_path: Path) -> None:
    """A trial told COMPLETE whose run's end never landed (the write failed): the rerun
    ends that run in the state the study store recorded."""
    _project(tmp_path)
    assert _sweep(tmp_path).returncode == 0
    client = _client(tmp_path)
    t1 = next(r for r in _runs(tmp_path) if r.info.run_name == "t1-lightning")
    client.update_run(t1.info.run_id, status="RUNNING")
    client.set_tag(t1.info.run_id, TAG.STATE, "")
    assert _sweep(tmp_path).returncode == 0  # the study is full: nothing runs
    run = client.get_run(t1.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG.STATE] == "COMPLETE"


_HANGS = """
import time

import protolab as pl
from protolab import layers as L


@pl.experiment(data="digits", metric="val/acc")
def model(space: pl.Space) -> pl.Arch:
    width = space.int("width", 8, 32, log=True)
    if space.choice("hang", [False, True]):  # the dry run takes the first: False
        try:
            HANG
        except Exception:  # a model function's own handler does not swallow the timeout
            pass
    return pl.Arch(L.Flatten(), L.Dense(width, activation="relu"), L.Dense(10))
"""


@pytest.mark.parametrize("hang", ["time.sleep(3600)", "while True:\n                pass"])
def test_a_hanging_model_function_fails_its_trial_timeout(tmp_path: Path, hang: str) -> None:
    script = _HANGS.replace("HANG", hang)
    _project(tmp_path, n_trials=2, extra=", trial_timeout_s: 3", script=script)
    done = _sweep(tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _trials(tmp_path)
    hung = [t for t in trials if t.params["hang"]]
    assert hung, "seed 0 samples hang=True at least once"
    assert all(t.state == State.FAIL for t in hung)
    assert all(t.user_attrs[ATTR.FAIL_REASON] == "timeout" for t in hung)
    assert [t.state for t in trials if not t.params["hang"]] == [State.COMPLETE] * 2
    runs = {r.info.run_name: r for r in _runs(tmp_path)}
    for t in hung:
        run = runs[f"t{t.number}-lightning"]
        assert run.info.status == "FAILED"
        assert run.data.tags[TAG.FAIL_REASON] == "timeout"


def test_a_trial_asked_by_another_worker_during_the_check_is_not_a_loss(tmp_path: Path) -> None:
    """The check reads MLflow, then counts the study store's trials: a trial is in the
    store before its run is in MLflow, so another worker asking between the two reads
    (seen in CI: three workers, one starting late) must not look like a shortened store."""
    from types import SimpleNamespace
    from typing import cast

    from protolab.sweep._binding import check_binding
    from protolab.sweep._context import SweepContext
    from protolab.tracking import Tracker

    _project(tmp_path, n_trials=2)
    assert _sweep(tmp_path).returncode == 0
    storage = open_storage(str(_journal(tmp_path)))
    study = optuna.load_study(study_name="tiny", storage=storage)
    sid = str(study.user_attrs[ATTR.STUDY_ID])
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"

    class AnotherWorkerAsksMeanwhile(Tracker):
        def study_runs(self, study_id: str):  # type: ignore[no-untyped-def]
            trial = study.ask()  # the other worker, just before MLflow is read: its trial
            run = self.client.create_run(self.experiment_id, run_name=f"t{trial.number}")
            self.client.set_tag(run.info.run_id, TAG.STUDY_ID, sid)  # then its run
            self.client.set_tag(run.info.run_id, TAG.TRIAL, str(trial.number))
            found = super().study_runs(study_id)
            assert found.latest_trial == trial.number
            return found

    tracker = AnotherWorkerAsksMeanwhile(uri, "tiny", "tiny", bind_later=True)
    ctx = SimpleNamespace(study_name="tiny", config_path=tmp_path / "cfg.yaml")
    for _ in range(2):  # trial 2, then trial 3: each asked while the check ran
        assert check_binding(cast(SweepContext, ctx), storage, tracker, False) == (sid, False)
