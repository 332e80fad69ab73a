"""An advisory file lock: the one primitive local processes use to take turns.

Kept apart (stdlib only) because both sweep workers and the tracking writer process use
it, and the writer should not import the sweep machinery to get it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_SUFFIX", "file_lock", "lock_for", "wait_unlocked"]

# Never ``<store>.lock``: Optuna's JournalFileBackend takes ``<journal>.lock`` as its own
# lock file (created with O_EXCL), so holding a file of that name made every journal write
# wait out Optuna's 30 s grace period. This suffix is no store's.
LOCK_SUFFIX = ".protolab-lock"


def lock_for(store: Path) -> Path:
    """The lock file beside a local store: held while the store is created or changed."""
    return store.with_name(store.name + LOCK_SUFFIX)


@contextlib.contextmanager
def file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op when None)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_unlocked(path: Path) -> None:
    """Wait until no process holds the lock ``path``; never creates it (a check that only
    looks must leave the project as it found it)."""
    if not path.exists():  # never locked: nobody is at work behind it
        return
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        fcntl.flock(f, fcntl.LOCK_UN)
