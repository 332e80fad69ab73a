"""Keeping a study consistent when workers die, get interrupted or race each other.

- **Leases.** Each running trial records its owner (``host:pid:token``, unique across hosts
  and containers) and where its pid is visible (``protolab.worker_scope``: boot id + pid
  namespace). Before each trial a worker fails any RUNNING trial whose owner process it
  can see is gone (journal and SQLite stores have no heartbeat), and on RDB storages any
  trial whose Optuna heartbeat went stale (``study.heartbeat_s``), wherever its worker
  ran. Stores shared across hosts without Optuna heartbeats (the gRPC proxy, Redis) get a
  lease instead: the worker renews ``protolab.lease_until`` every ``heartbeat_s`` and a
  trial whose lease ran out (4x that) is reaped the same way. A reaped trial's MLflow runs
  are ended FAILED, so nothing stays RUNNING.
- **Retries.** A trial lost to a dead worker or an interrupt is re-enqueued with the same
  params, up to ``study.max_retries`` times; its failure was the machine's, not the model's.
- **Surplus.** Those stores have no lock across workers either, so two workers may both
  count ``n_trials - 1`` and ask: the later-numbered trial is given back (FAIL, never run,
  never retried), so no more than ``n_trials`` run.
- **Local locks.** Several processes on one fresh local store must not race on table
  creation, parent-run creation or on asking for the trial that would exceed ``n_trials``:
  those steps run under an advisory file lock beside the store.
- **Whole writes.** SIGINT/SIGTERM raise :class:`Interrupted` wherever the sweep is, but
  never inside a store write: writes run :func:`shielded` (see :mod:`protolab._signals`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protolab._lock import LOCK_SUFFIX, file_lock, lock_for
from protolab._signals import (
    Interrupted,
    deferred,
    interrupt,
    interrupt_again,
    raise_if_interrupted,
    reset_interrupts,
    shielded,
)
from protolab._tags import ATTR

__all__ = [
    "INDEX_ENV",
    "LOCK_SUFFIX",
    "RETRYABLE",
    "Interrupted",
    "beat",
    "creation_lock",
    "deferred",
    "file_lock",
    "interrupt",
    "interrupt_again",
    "join_count",
    "leased",
    "lock_path",
    "raise_if_interrupted",
    "reap",
    "reset_interrupts",
    "retry",
    "shielded",
    "study_lock",
    "surplus",
    "tune_heartbeat",
    "wait_for_others",
    "worker_attrs",
    "worker_id",
    "worker_index",
    "worker_scope",
]

# Failure reasons that say nothing about the configuration: retry it.
RETRYABLE = ("worker died", "interrupted", "store write failed")
SURPLUS = "surplus: the study already had n_trials (asked at the same time as another worker)"
_lease_s = [30.0]  # study.heartbeat_s of this process's sweep (tune_heartbeat)


_tokens: dict[int, str] = {}  # per pid: a forked worker must not keep its launcher's


def worker_id() -> str:
    """``host:pid:token``, unique across hosts and containers (where every pid may be 1).

    The token is drawn per process (pids repeat across hosts and containers), also in a
    worker forked by ``sweep --workers`` from a launcher that had drawn one already.
    """
    pid = os.getpid()
    token = _tokens.setdefault(pid, uuid.uuid4().hex[:8])
    return f"{socket.gethostname()}:{pid}:{token}"


# Set per worker by ``sweep --workers``; array jobs number their tasks themselves.
INDEX_ENV = ("PROTOLAB_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def worker_index() -> int | None:
    """This worker's number among workers started together, if the environment gives one.

    Workers started at the same moment see the same study (no trial yet, none running), so
    without it they would seed their samplers alike and train the same configurations;
    without one, :func:`join_count` numbers them in the order they open the study.
    """
    for name in INDEX_ENV:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def join_count(study: Any) -> int:
    """How many workers opened ``study`` before this one (and count this one). Atomic under
    :func:`file_lock` on one host and :func:`study_lock` on PostgreSQL; through the gRPC
    proxy or Redis two workers may read the same count (then they seed alike)."""
    joined = int(study.user_attrs.get(ATTR.JOINED, 0))
    study.set_user_attr(ATTR.JOINED, joined + 1)
    return joined


def worker_scope() -> str:
    """Which processes ``os.kill(pid, 0)`` can see: this boot of this host's pid namespace.

    Two containers may share a hostname (host networking) and a pid (1) but never a pid
    namespace; two hosts share the initial namespace's inode but not their boot id.
    """
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip() if "boot" in path else os.readlink(path))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def worker_attrs() -> dict[str, str]:
    """The trial user attrs (and MLflow tags) naming the worker that runs it."""
    attrs = {ATTR.WORKER: worker_id(), ATTR.WORKER_SCOPE: worker_scope()}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # set per worker by --workers
        attrs[ATTR.CUDA_VISIBLE_DEVICES] = os.environ["CUDA_VISIBLE_DEVICES"]
    return attrs


def lock_path(url: str | None, default: Path) -> Path | None:
    """The lock file for a local store (``None`` = default journal, SQLite, journal file).

    Servers (PostgreSQL, MLflow over HTTP) get None: they serialise writes themselves.
    """
    from protolab._stores import local_store_file

    store = local_store_file(url, default)
    return None if store is None else lock_for(store)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(attrs: dict[str, Any]) -> bool:
    """The trial's worker ran where this process can see its pid, and that pid is gone."""
    host, _, rest = str(attrs.get(ATTR.WORKER, "")).partition(":")
    pid = rest.split(":", 1)[0]
    scope = attrs.get(ATTR.WORKER_SCOPE)
    local = scope == worker_scope() if scope else host == socket.gethostname()
    return local and pid.isdigit() and not _alive(int(pid))


def _lease_expired(attrs: dict[str, Any]) -> bool:
    """A leased trial (gRPC, Redis) whose worker stopped renewing it (host clocks agree)."""
    until = attrs.get(ATTR.LEASE_UNTIL)
    return isinstance(until, int | float) and until < time.time()


def leased(storage: Any) -> bool:
    """Stores shared across hosts with neither Optuna heartbeats nor a lock of ours."""
    backend = getattr(storage, "_backend", None)
    names = {type(storage).__name__, type(backend).__name__}
    return bool(names & {"GrpcStorageProxy", "JournalRedisBackend"})


def _renew(storage: Any, trial_id: int) -> None:
    storage.set_trial_user_attr(trial_id, ATTR.LEASE_UNTIL, time.time() + 4 * _lease_s[0])


@contextlib.contextmanager
def _leasing(storage: Any, trial_id: int) -> Iterator[None]:
    """Renew the trial's lease every ``heartbeat_s`` while it runs (a daemon thread)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(_lease_s[0]):
            with contextlib.suppress(Exception):  # a late renewal is a late heartbeat
                _renew(storage, trial_id)

    thread = threading.Thread(target=loop, name="protolab-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def surplus(study: Any, trial: Any, n_trials: int) -> bool:
    """On a leased store, a trial asked past ``n_trials`` (racing another worker's ask)."""
    import optuna

    State = optuna.trial.TrialState
    states = (State.COMPLETE, State.PRUNED, State.RUNNING)
    numbers = sorted(t.number for t in study.get_trials(deepcopy=False, states=states))
    return trial.number in numbers and numbers.index(trial.number) >= n_trials


def _claim(storage: Any, trial_id: int) -> bool:
    """Fail a dead worker's trial; True for the one reaper that wins (others race it)."""
    import optuna

    try:  # the reason first: a finished trial takes no more attrs
        storage.set_trial_user_attr(trial_id, ATTR.FAIL_REASON, "worker died")
        return bool(storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # it finished meanwhile, or another worker reaped it first


def _dead_trials(study: Any) -> list[int]:
    """Trial ids whose worker is gone: by pid where visible, by heartbeat on RDB storages."""
    import optuna

    running = optuna.trial.TrialState.RUNNING
    ids = [
        t._trial_id
        for t in study.get_trials(deepcopy=False, states=(running,))
        if _owner_gone(t.user_attrs) or _lease_expired(t.user_attrs)
    ]
    if optuna.storages._heartbeat.is_heartbeat_enabled(study._storage):
        ids += [i for i in study._storage._get_stale_trial_ids(study._study_id) if i not in ids]
    return ids


def reap(study: Any, tracker: Any, max_retries: int) -> list[int]:
    """Fail the trials of dead workers (by pid where visible, any host's by heartbeat),
    end their MLflow runs FAILED and retry their configurations; the numbers reaped."""
    reaped: list[int] = []
    for trial_id in _dead_trials(study):
        if _claim(study._storage, trial_id):
            trial = study._storage.get_trial(trial_id)
            tracker.fail_running_children(trial.number, "worker died")
            retry(study, trial, max_retries)
            reaped.append(trial.number)
    return reaped


@contextlib.contextmanager
def creation_lock(url: str | None) -> Iterator[None]:
    """On PostgreSQL, one worker at a time opens the storage: Optuna creates its tables on
    first use, and two workers doing it at once fail with a UniqueViolation. Without a
    connection it does nothing: opening the storage then says what is wrong. A local SQLite
    store is created under its file lock, for the same reason."""
    if url and url.startswith("sqlite:///"):
        with file_lock(lock_for(Path(url.removeprefix("sqlite:///")))):
            yield
        return
    if not url or not url.startswith(("postgresql://", "postgresql+")):
        yield
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10})
        conn = engine.connect()
    except Exception:
        yield
        return
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _CREATION_KEY})
        yield
    finally:
        with contextlib.suppress(Exception):
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _CREATION_KEY})
        conn.close()
        engine.dispose()


_CREATION_KEY = int.from_bytes(hashlib.sha1(b"protolab:create-tables").digest()[:8], "big") >> 1


@contextlib.contextmanager
def study_lock(study: Any) -> Iterator[None]:
    """On PostgreSQL, what :func:`file_lock` is on one host: count + ask, reap, enqueue
    as one step across hosts (a transaction-level advisory lock per study).

    A holder whose host vanished (no FIN ever arrives) is cut off by the server after
    60 s idle in its transaction, so the lock cannot be lost for good. Elsewhere a no-op.
    """
    backend = getattr(study._storage, "_backend", study._storage)
    engine = getattr(backend, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy

    digest = hashlib.sha1(f"protolab:{study.study_name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SET LOCAL idle_in_transaction_session_timeout = '60s'"))
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.rollback()  # ends the transaction, which releases the lock


def tune_heartbeat(storage: Any, seconds: int) -> None:
    """Beat (or renew a lease) every ``seconds``; a trial silent for 4x that is reaped."""
    _lease_s[0] = float(seconds)
    if getattr(storage, "heartbeat_interval", None) is not None:
        storage.heartbeat_interval, storage.grace_period = seconds, 4 * seconds


def beat(study: Any, trial: Any) -> None:
    """Record a heartbeat now (RDB): a worker dying before its thread starts is reaped too."""
    import optuna

    if optuna.storages._heartbeat.is_heartbeat_enabled(study._storage):
        study._storage.record_heartbeat(trial._trial_id)
    elif leased(study._storage):
        _renew(study._storage, trial._trial_id)


def wait_for_others(study: Any, running: int) -> bool:
    """With the study full but ``running`` trials still RUNNING elsewhere, wait a beat.

    On RDB storages any of them may belong to a worker that died on another host: when its
    heartbeat goes stale this worker reaps it and runs the retry. Elsewhere (no heartbeat)
    the other workers' trials are theirs to finish: False, stop now.
    """
    import optuna

    storage = study._storage
    if not running:
        return False
    if optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        time.sleep(min(float(storage.get_heartbeat_interval() or 1), 5.0))
        return True
    if leased(storage):
        time.sleep(min(_lease_s[0], 5.0))
        return True
    return False


def retry(study: Any, trial: Any, max_retries: int) -> bool:
    """Enqueue ``trial``'s params again unless it was already retried ``max_retries`` times."""
    attempt = int(trial.user_attrs.get(ATTR.ATTEMPT, 0))
    if attempt >= max_retries or not trial.params:
        return False
    origin = int(trial.user_attrs.get(ATTR.RETRY_OF, trial.number))
    study.enqueue_trial(
        dict(trial.params),
        user_attrs={ATTR.RETRY_OF: origin, ATTR.ATTEMPT: attempt + 1},
        skip_if_exists=False,
    )
    return True


def heartbeat(study: Any, trial: Any) -> Any:
    """Optuna's heartbeat thread for RDB storages, a lease for leased ones, else a no-op."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    if leased(study._storage):
        return _leasing(study._storage, trial._trial_id)
    return get_heartbeat_thread(trial._trial_id, study._storage)
