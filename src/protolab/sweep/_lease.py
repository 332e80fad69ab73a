"""Keeping a study consistent when workers die, get interrupted or race each other.

- **Leases.** Each running trial records its owner (``host:pid:token``, unique across hosts
  and containers) and where its pid is visible (``protolab.worker_scope``: boot id + pid
  namespace). Before each trial a worker fails any RUNNING trial whose owner process it
  can see is gone (journal and SQLite stores have no heartbeat), and on RDB storages any
  trial whose Optuna heartbeat went stale (``study.heartbeat_s``), wherever its worker
  ran. Stores shared across hosts without Optuna heartbeats (the gRPC proxy, Redis) get a
  lease instead: the worker renews ``protolab.lease_until`` every ``heartbeat_s`` and a
  trial whose lease ran out (4x that) is reaped the same way. A reaped trial's MLflow runs
  are ended FAILED, so nothing stays RUNNING. The storage the sweep opens does the beating
  and claiming: :class:`~protolab.sweep._storage.LeasedStorage`, wrapping Optuna's.
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
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # Optuna loads in the functions that use it: never at `import protolab`
    import optuna
    from optuna.trial import FrozenTrial

    from protolab.sweep._storage import LeasedStorage
    from protolab.sweep._types import TrialRuns

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


def join_count(study: optuna.Study) -> int:
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


def storage_of(study: optuna.Study) -> LeasedStorage:
    """The storage ``study`` was opened on, as the :class:`LeasedStorage` the sweep opens.

    The one place that reads a private Optuna attribute: a ``Study`` has no public
    accessor for its storage (``Study._storage``), and the sweep's functions are handed
    the study, not the storage. A study opened on another storage (tests, tools) is seen
    through a fresh wrapper: heartbeats and pids, but no leases unless it is gRPC's.
    """
    from protolab.sweep._storage import LeasedStorage

    storage = study._storage
    return storage if isinstance(storage, LeasedStorage) else LeasedStorage(storage)


def leased(study: optuna.Study) -> bool:
    """Stores shared across hosts with neither Optuna heartbeats nor a lock of ours."""
    return storage_of(study).leases


def surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """On a leased store, a trial asked past ``n_trials`` (racing another worker's ask)."""
    import optuna

    State = optuna.trial.TrialState
    states = (State.COMPLETE, State.PRUNED, State.RUNNING)
    numbers = sorted(t.number for t in study.get_trials(deepcopy=False, states=states))
    return trial.number in numbers and numbers.index(trial.number) >= n_trials


def _dead_trials(study: optuna.Study, storage: LeasedStorage) -> list[int]:
    """Trial ids whose worker is gone: by pid where visible, by lease on leased storages,
    by heartbeat on RDB storages (any host's)."""
    import optuna

    running = optuna.trial.TrialState.RUNNING
    study_id = storage.study_id(study.study_name)
    ids = [
        storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        for t in study.get_trials(deepcopy=False, states=(running,))
        if _owner_gone(t.user_attrs) or _lease_expired(t.user_attrs)
    ]
    return ids + [i for i in storage.stale_trial_ids(study_id) if i not in ids]


def reap(study: optuna.Study, tracker: TrialRuns, max_retries: int) -> list[int]:
    """Fail the trials of dead workers (by pid where visible, any host's by heartbeat),
    end their MLflow runs FAILED and retry their configurations; the numbers reaped."""
    storage = storage_of(study)
    reaped: list[int] = []
    for trial_id in _dead_trials(study, storage):
        # True for the one reaper that wins: others race it, or it finished meanwhile
        if storage.claim(trial_id, "worker died"):
            trial = storage.get_trial(trial_id)
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
def study_lock(study: optuna.Study) -> Iterator[None]:
    """On PostgreSQL, what :func:`file_lock` is on one host: count + ask, reap, enqueue
    as one step across hosts (a transaction-level advisory lock per study).

    A holder whose host vanished (no FIN ever arrives) is cut off by the server after
    60 s idle in its transaction, so the lock cannot be lost for good. Elsewhere a no-op.
    """
    engine = storage_of(study).engine
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


def tune_heartbeat(storage: LeasedStorage, seconds: int) -> None:
    """Beat (or renew a lease) every ``seconds``; a trial silent for 4x that is reaped."""
    storage.tune(seconds)


def beat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record a heartbeat now (RDB) or renew the lease (leased stores): a worker dying
    before its beating thread starts is reaped too."""
    storage = storage_of(study)
    if storage.beat_interval() is not None:  # else nothing to record: skip the id lookup
        storage.beat(storage.trial_id(study.study_name, trial.number))


def wait_for_others(study: optuna.Study, running: int) -> bool:
    """With the study full but ``running`` trials still RUNNING elsewhere, wait a beat.

    On RDB and leased storages any of them may belong to a worker that died on another
    host: when its heartbeat or lease goes stale this worker reaps it and runs the retry.
    Elsewhere the other workers' trials are theirs to finish: False, stop now.
    """
    interval = storage_of(study).beat_interval() if running else None
    if interval is None:
        return False
    time.sleep(min(interval, 5.0))
    return True


def retry(study: optuna.Study, trial: FrozenTrial, max_retries: int) -> bool:
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


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> AbstractContextManager[None]:
    """While ``trial`` runs: Optuna's heartbeat on RDB storages, a lease on leased ones,
    else nothing."""
    storage = storage_of(study)
    if storage.beat_interval() is None:
        return contextlib.nullcontext()
    return storage.keep_alive(storage.trial_id(study.study_name, trial.number))
