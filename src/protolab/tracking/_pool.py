"""Tracking writers for ``sweep --workers``: MLflow imported once, one writer forked per worker.

Each worker of a launcher would otherwise start its own writer process, and each writer
pays MLflow's import (~2 s of CPU) and, on a database store, its SQL store's import and ORM
set-up (~1.3 s more) while the workers themselves start on the same cores. Here one process
(the pool) pays that once, while the launcher imports the frameworks, then forks a writer
per worker from itself: a fork of a process that only imported modules (no threads, no
open store) is safe, and the writers start with MLflow's pages shared.

Each writer serves one pipe exactly as a writer of ``start_writer`` does (``_writer._Server``).
The launcher keeps the other end of every pipe until it has forked its workers; worker
``k`` keeps only end ``k`` (:func:`adopt_writer`) and the launcher then closes them all, so
a writer still sees EOF when its worker dies and ends that worker's runs. A writer writes
what it prints to its worker's log, and the pool waits for its writers, then exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["WriterPool", "adopt_writer"]


class WriterPool:
    """The pool process and the launcher's end of each writer's pipe."""

    def __init__(self, logs: Sequence[Path], tracking_uri: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # the launcher is about to import the frameworks
        pairs = [ctx.Pipe() for _ in logs]
        self.ends: list[Any] = [ours for ours, _ in pairs]
        theirs = [child for _, child in pairs]
        sql = tracking_uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql")
        self.proc = ctx.Process(
            target=_pool, args=(theirs, [str(p) for p in logs], sql), name="protolab-writers"
        )
        self.proc.daemon = True
        held = {signal.SIGINT, signal.SIGTERM}  # no KeyboardInterrupt while it starts
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        for conn in theirs:
            conn.close()
        mp.process._children.discard(self.proc)  # type: ignore[attr-defined]  # see _Writer

    def join(self, timeout: float = 10.0) -> None:
        """Reap the pool (and so count its writers' CPU as the launcher's children's)."""
        self.proc.join(timeout=timeout)

    def release(self) -> None:
        """Every worker has its end: close the launcher's copies (EOF must mean "worker gone")."""
        for conn in self.ends:
            conn.close()
        self.ends = []


def adopt_writer(ends: Sequence[Any], k: int) -> None:
    """In forked worker ``k``: use writer ``k`` as this process's pre-started writer, and
    close the other workers' ends (holding one would hide that worker's death from its
    writer)."""
    from protolab.tracking import _writer

    for i, conn in enumerate(ends):
        if i != k:
            conn.close()
    _writer.adopt(ends[k])


def _pool(conns: list[Any], logs: list[str], sql: bool) -> None:
    """Import MLflow once, fork one writer per pipe, wait for them all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    from protolab.tracking._writer import import_mlflow

    import_mlflow(sql)
    sys.stdout.flush()
    sys.stderr.flush()
    pids = [_fork_writer(conns, k, logs[k]) for k in range(len(conns))]
    for conn in conns:
        conn.close()
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    os._exit(0)


def _fork_writer(conns: list[Any], k: int, log: str) -> int:
    """Writer ``k`` in a child of the pool: its output to worker ``k``'s log, then serve."""
    pid = os.fork()
    if pid:
        return pid
    try:
        for i, conn in enumerate(conns):
            if i != k:
                conn.close()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        from protolab.tracking._writer import serve

        serve(conns[k])
    finally:
        os._exit(0)
