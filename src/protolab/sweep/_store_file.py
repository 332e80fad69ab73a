"""The study store's local file, checked before every call: deleted, replaced or cut short
while a sweep runs, it stops the sweep with one message instead of being written anew.

Stdlib only (the sweep imports it without Optuna).
"""

from __future__ import annotations

import os
from pathlib import Path

from protolab.tracking._writer import StoreWriteError

__all__ = ["StoreFile", "StudyStoreLost"]


class StudyStoreLost(StoreWriteError):
    """The study store's file was deleted, replaced or cut short while the sweep ran."""


class StoreFile:
    """The local file a study store was opened on, and what it must stay.

    Deleted, or replaced by another file (a new inode), Optuna would go on with a file it
    never read: a journal recreated by the next append, read from stale offsets (one trial
    run dozens of times, then a raw JSONDecodeError). A journal only grows; one that
    shrank lost records. Checked before every call to the storage: a ``stat``, ~1 us.
    """

    def __init__(self, path: Path) -> None:
        st = path.stat()
        self.path, self.identity, self.size = path, (st.st_dev, st.st_ino), st.st_size
        self.grows = path.suffix in (".journal", ".log")

    def check(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise self._lost("deleted, moved or replaced") from None
        if (st.st_dev, st.st_ino) != self.identity:  # a new file (an append made one)
            raise self._lost("deleted, moved or replaced")
        if self.grows and st.st_size < self.size:
            raise self._lost(f"cut short ({self.size} -> {st.st_size} bytes)")
        self.size = st.st_size

    def _lost(self, what: str) -> StudyStoreLost:
        return StudyStoreLost(
            f"study.storage: {self.path} was {what} while the sweep ran; stopped here, "
            "writing nothing more to it (the MLflow runs so far are kept). Put the file "
            "back as it was and rerun, or rerun with --new-study to start the study over"
        )
