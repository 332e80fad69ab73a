"""Keeping a study consistent when workers die, get interrupted or race each other.

- **Leases.** Each running trial records its owner (``host:pid``). A worker that opens the
  study fails any RUNNING trial whose owner process on this host is gone (journal and
  SQLite stores have no heartbeat), and RDB storages add Optuna's heartbeat for workers on
  other machines. A reaped trial's MLflow runs are ended FAILED, so nothing stays RUNNING.
- **Retries.** A trial lost to a dead worker or an interrupt is re-enqueued with the same
  params, up to ``study.max_retries`` times; its failure was the machine's, not the model's.
- **Local locks.** Several processes on one fresh local store must not race on table
  creation, parent-run creation or on asking for the trial that would exceed ``n_trials``:
  those steps run under an advisory file lock beside the store.
- **Whole writes.** SIGINT/SIGTERM raise :class:`Interrupted` wherever the sweep is, so a
  long epoch stops at once; but a store write cut in the middle (e.g. inside the journal's
  lock dance) fails with an unrelated error that hides the interrupt. Writes run
  :func:`shielded`: a signal arriving inside is raised as soon as the write is done.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protolab._lock import file_lock

__all__ = [
    "LOCK_SUFFIX",
    "RETRYABLE",
    "Interrupted",
    "file_lock",
    "interrupt",
    "lock_path",
    "raise_if_interrupted",
    "reap",
    "reset_interrupts",
    "retry",
    "shielded",
    "worker_id",
]

# Failure reasons that say nothing about the configuration: retry it.
RETRYABLE = ("worker died", "interrupted")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` picks the exit code (130 or 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_shield_depth = 0
# Every signal received in this sweep, kept until the sweep ends (see reset_interrupts).
# A handler's exception can be swallowed: raised while a ``__del__``, a weakref or GC
# callback runs, Python prints "Exception ignored" and carries on, and the sweep ran to its
# end (exit 0). So the signal is also remembered here and raised again at the next
# shielded() exit (every store write, every epoch report, every trial start).
_received: list[int] = []


def interrupt(signum: int) -> None:
    """From a signal handler: raise :class:`Interrupted` now, or after the current write."""
    _received.append(signum)
    if _shield_depth:
        return
    raise Interrupted(signum)


def reset_interrupts() -> None:
    """Forget received signals (a new command in this process starts clean)."""
    _received.clear()


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived (even one whose raise got swallowed)."""
    if _received and not _shield_depth:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run a store write whole; an interrupt that arrives meanwhile is raised right after."""
    global _shield_depth
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
    raise_if_interrupted()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# Never ``<store>.lock``: Optuna's JournalFileBackend takes ``<journal>.lock`` as its own
# lock file (created with O_EXCL), so holding a file of that name made every journal write
# wait out Optuna's 30 s grace period. This suffix is no store's.
LOCK_SUFFIX = ".protolab-lock"


def lock_path(url: str | None, default: Path) -> Path | None:
    """The lock file for a local store (``None`` = default journal, SQLite, journal file).

    Servers (PostgreSQL, MLflow over HTTP) get None: they serialise writes themselves.
    """
    if url is None:
        store = default
    elif url.startswith("sqlite:///"):
        store = Path(url.removeprefix("sqlite:///"))
    elif url.endswith((".journal", ".log")):
        store = Path(url.removeprefix("journal://"))
    else:
        return None
    return store.with_name(store.name + LOCK_SUFFIX)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(study: Any, tracker: Any, max_retries: int) -> list[int]:
    """Fail the trials of dead workers (this host's by pid, any host's by heartbeat)."""
    import optuna

    running = optuna.trial.TrialState.RUNNING
    host = socket.gethostname()
    before = {t.number for t in study.get_trials(deepcopy=False, states=(running,))}
    reaped: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(running,)):
        h, _, pid = str(t.user_attrs.get("protolab.worker", "")).rpartition(":")
        if h == host and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_user_attr(t._trial_id, "protolab.fail_reason", "worker died")
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            reaped.append(t.number)
    if optuna.storages._heartbeat.is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        still = {t.number for t in study.get_trials(deepcopy=False, states=(running,))}
        for n in sorted(before - still - set(reaped)):
            trial = study.trials[n]
            if trial.state == optuna.trial.TrialState.FAIL:
                study._storage.set_trial_user_attr(
                    trial._trial_id, "protolab.fail_reason", "worker died"
                )
                reaped.append(n)
    for n in reaped:
        tracker.fail_running_children(n, "worker died")
        retry(study, study.trials[n], max_retries)
    return reaped


def retry(study: Any, trial: Any, max_retries: int) -> bool:
    """Enqueue ``trial``'s params again unless it was already retried ``max_retries`` times."""
    attempt = int(trial.user_attrs.get("protolab.attempt", 0))
    if attempt >= max_retries or not trial.params:
        return False
    origin = int(trial.user_attrs.get("protolab.retry_of", trial.number))
    study.enqueue_trial(
        dict(trial.params),
        user_attrs={"protolab.retry_of": origin, "protolab.attempt": attempt + 1},
        skip_if_exists=False,
    )
    return True


def heartbeat(study: Any, trial: Any) -> Any:
    """Optuna's heartbeat thread for RDB storages (a no-op context otherwise)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)
