"""Journal files that a crash or a stray write damaged: recover what is safe, repair the rest.

An Optuna journal is one JSON record per line, appended whole under Optuna's lock. A
kill -9 or a power loss in the middle of an append leaves an incomplete *last* line; the
next append would glue a good record onto it and make the journal unreadable. That torn
tail carries no finished record (the write never returned), so it is cut automatically,
with a note. Damage anywhere else (garbage appended, bytes overwritten) is not guessed at:
the sweep stops with exit 2 naming the file and line, and ``protolab doctor JOURNAL``
rewrites the journal from its intact records, keeping a backup of the original.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from protolab.errors import StorageError

__all__ = ["check_journal", "repair_journal"]


def _record(line: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) and "op_code" in value else None


def _cut_torn_tail(path: Path) -> str | None:
    """Under Optuna's own journal lock: drop (or finish) an incomplete last line."""
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(JournalFileSymlinkLock(str(path))):
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return None  # a writer finished it meanwhile
        start = data.rfind(b"\n") + 1
        tail = data[start:]
        with path.open("r+b") as f:
            if _record(tail) is not None:  # whole record, newline lost: finish the line
                f.seek(len(data))
                f.write(b"\n")
                kept = "it was whole and is kept"
            else:
                f.truncate(start)
                kept = "it held no finished write and was removed; every complete record is kept"
            f.flush()
            os.fsync(f.fileno())
    line = data.count(b"\n") + 1
    return (
        f"{path}:{line}: the journal's last line was incomplete ({len(tail)} bytes, a write "
        f"cut short by a crash); {kept}"
    )


def check_journal(path: Path) -> str | None:
    """Recover a torn last line (returns a note), or refuse other damage (StorageError)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    note = None
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        torn = f.read(1) != b"\n"
    if torn:
        note = _cut_torn_tail(path)
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if _record(line) is None:
                shown = line[:80].decode("utf-8", "replace").rstrip("\n")
                raise StorageError(
                    f"study.storage: {path}:{number}: not a journal record ({shown!r}); the "
                    f"journal is damaged. Repair it with `protolab doctor {path}` (keeps every "
                    "intact trial and a backup of the original), then rerun this command"
                )
    return note


def repair_journal(path: Path) -> str:
    """Rewrite ``path`` from its intact records; the original is kept as a backup.

    A damaged line is dropped, except that a record glued onto garbage (an append after a
    torn line) is recovered from the line's end. The result is checked by loading every
    study with Optuna before it replaces the original.
    """
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if not path.is_file():
        raise StorageError(f"doctor: {path} is not a file; give the journal to repair")
    with get_lock_file(JournalFileSymlinkLock(str(path))):
        lines = path.read_bytes().splitlines()
        kept: list[bytes] = []
        dropped: list[int] = []
        glued: list[int] = []
        for number, line in enumerate(lines, start=1):
            record = _record(line)
            if record is None and (record := _glued(line)) is not None:
                glued.append(number)
            if record is None:
                dropped.append(number)
            else:
                kept.append(json.dumps(record, separators=(",", ":")).encode())
        if not dropped and not glued:
            return f"{path}: all {len(lines)} records are intact; nothing to repair"
        fixed = path.with_name(f"{path.name}.repaired")
        fixed.write_bytes(b"".join(r + b"\n" for r in kept))
        summary = _load_summary(fixed)
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        os.replace(path, backup)
        os.replace(fixed, path)
    return (
        f"{path}: kept {len(kept)} of {len(lines)} records ({summary}); "
        f"{_lines('dropped damaged', dropped)}{_lines('cut garbage before the record on', glued)}"
        f"the original is at {backup}"
    )


def _lines(what: str, numbers: list[int]) -> str:
    if not numbers:
        return ""
    shown = ", ".join(str(n) for n in numbers[:10]) + (" ..." if len(numbers) > 10 else "")
    return f"{what} line(s) {shown}; "


def _glued(line: bytes) -> dict[str, object] | None:
    """A whole record after garbage on one line: what an append after a torn line makes."""
    start = line.rfind(b'{"op_code"')
    return _record(line[start:]) if start > 0 else None


def _load_summary(path: Path) -> str:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        studies = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as e:
        path.unlink(missing_ok=True)
        raise StorageError(
            f"doctor: the intact records of {path.with_suffix('')} do not load as a study "
            f"({type(e).__name__}: {str(e)[:200]}); the original is left untouched"
        ) from None
    trials = sum(s.n_trials for s in studies)
    return f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}, {trials} trials"
