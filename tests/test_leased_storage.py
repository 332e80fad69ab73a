"""The sweep's storage wrapper (sweep/_storage.py): Optuna sees the storage inside, the
sweep gets beats, leases and reaping through public storage calls only."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest

from protolab._stores import open_storage
from protolab.sweep import _lease
from protolab.sweep._storage import LeasedStorage

State = optuna.trial.TrialState
X = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


class _Runs:
    def __init__(self) -> None:
        self.failed: list[tuple[int, str]] = []

    def fail_running_children(self, trial: int, reason: str) -> None:
        self.failed.append((trial, reason))


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")


def test_a_study_on_the_wrapper_is_the_study_on_the_store(tmp_path: Path) -> None:
    url = str(tmp_path / "s.journal")
    storage = LeasedStorage(open_storage(url), url)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for value in (0.2, 0.7):
        trial = study.ask(X)
        study.tell(trial, value)
    again = optuna.load_study(study_name="s", storage=open_storage(url))
    assert [t.value for t in again.trials] == [0.2, 0.7] and again.best_value == 0.7
    assert not storage.leases and storage.beat_interval() is None and storage.engine is None
    assert not _lease.leased(study) and not _lease.wait_for_others(study, 1)


def test_a_dead_local_worker_is_reaped_and_retried(tmp_path: Path) -> None:
    url = str(tmp_path / "s.journal")
    study = optuna.create_study(storage=LeasedStorage(open_storage(url), url))
    trial = study.ask(X)
    for key, value in _lease.worker_attrs().items():
        trial.set_user_attr(key, value)
    alive = study.ask(X)  # this process's: never reaped
    for key, value in _lease.worker_attrs().items():
        alive.set_user_attr(key, value)
    trial.set_user_attr("protolab.worker", "host:999999999:dead")  # no such pid
    runs = _Runs()
    assert _lease.reap(study, runs, max_retries=2) == [trial.number]
    reaped = study.trials[trial.number]
    assert reaped.state == State.FAIL and reaped.user_attrs["protolab.fail_reason"] == "worker died"
    assert runs.failed == [(trial.number, "worker died")]
    (retry,) = [t for t in study.trials if t.state == State.WAITING]
    assert retry.user_attrs["protolab.retry_of"] == trial.number
    assert study.ask(X).params == reaped.params  # the next ask runs the same configuration
    assert study.trials[alive.number].state == State.RUNNING


def test_a_leased_trial_is_renewed_while_it_runs_and_reaped_when_its_lease_ends() -> None:
    storage = LeasedStorage(optuna.storages.InMemoryStorage(), "grpc://127.0.0.1:1")
    storage.tune(1)
    study = optuna.create_study(storage=storage)
    trial = study.ask(X)
    assert _lease.leased(study) and storage.beat_interval() == 1.0
    _lease.beat(study, trial)
    first = study.trials[0].user_attrs["protolab.lease_until"]
    with _lease.heartbeat(study, trial):
        time.sleep(1.3)
    assert study.trials[0].user_attrs["protolab.lease_until"] > first
    assert _lease.reap(study, _Runs(), max_retries=0) == []  # its lease runs 4 s
    storage.set_trial_user_attr(
        storage.trial_id(study.study_name, trial.number), "protolab.lease_until", time.time() - 1
    )
    assert _lease.reap(study, _Runs(), max_retries=0) == [trial.number]


def test_rdb_heartbeats_go_through_the_wrapper(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = LeasedStorage(open_storage(url), url)
    storage.tune(1)
    study = optuna.create_study(storage=storage)
    assert type(storage.inner).__name__ == "_CachedStorage"  # as create_study would wrap it
    assert storage.engine is not None and storage.heartbeat_enabled
    stale, kept = study.ask(X), study.ask(X)
    _lease.beat(study, stale)
    _lease.beat(study, kept)
    rdb = storage.opened
    assert isinstance(rdb, optuna.storages.RDBStorage) and rdb.grace_period == 4
    rdb.grace_period = 2  # stale after 2 s (SQLite keeps whole seconds)
    with _lease.heartbeat(study, kept):  # beats every second meanwhile
        time.sleep(3.5)
        assert _lease.reap(study, _Runs(), max_retries=0) == [stale.number]
    assert study.trials[kept.number].state == State.RUNNING
