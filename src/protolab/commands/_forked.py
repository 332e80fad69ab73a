"""Workers forked from a launcher that imported PyTorch once, for ``sweep --workers``.

Each worker started as a new process pays the framework import again (~6-8 s of CPU for
torch + Lightning Fabric); N of them on N cores, each beside its own tracking writer
importing MLflow, took twice as long to reach a first trial as one worker did. Forked from
a launcher that imported the fork-safe frameworks (``Backend.fork_safe``: PyTorch, whose
import starts only idle BLAS pools that handle ``fork``, as DataLoader workers rely on), a
worker starts with them already imported and shares their pages.

The forked child then behaves exactly as ``protolab sweep`` started by ``subprocess``: its
own session, its output appended to its log, the launcher's signal handlers undone, the
worker's environment set before anything reads it, and its exit code the command's. The
command line's entry point is handed in by the command line itself (``Entry``): commands
are what the command line calls, never the other way round.
TensorFlow and JAX are never imported before a fork (their runtimes start threads and
device state a child cannot use); a worker imports them itself.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Entry", "ForkedWorker", "preload"]

# The command line's ``main``: parses ``sys.argv``, runs the command, exits with its code
Entry = Callable[[], None]


def preload(modules: list[str]) -> float:
    """Import ``modules`` here, before any fork; the seconds it took."""
    t0 = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - t0


def _main(
    entry: Entry, argv: list[str], log: Path, env: dict[str, str], writers: Sequence[Any], k: int
) -> None:
    """A forked worker: what ``subprocess.Popen([... 'sweep', ...], start_new_session=True,
    stdout=log, stderr=log, env=env)`` would have set up, then the command itself (through
    ``entry``), with writer ``k`` of the launcher's pool (if any) as its tracking writer."""
    if writers:
        from protolab.tracking import adopt_writer

        adopt_writer(writers, k)
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["protolab", "sweep", *argv]
    entry()  # exits: SystemExit's code is this process's exit code


class ForkedWorker:
    """One forked worker, with the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(
        self,
        entry: Entry,
        argv: list[str],
        log: Path,
        env: dict[str, str],
        writers: Sequence[Any],
        k: int,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        args = (entry, argv, log, env, writers, k)  # a fork: nothing here is pickled
        self._proc = ctx.Process(target=_main, args=args, name="protolab-worker")
        sys.stdout.flush()
        sys.stderr.flush()
        self._proc.start()
        assert self._proc.pid is not None
        self.pid: int = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def send_signal(self, signum: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, signum)
