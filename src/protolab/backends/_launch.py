"""One contract for running a backend's calls elsewhere: in worker processes of its own.

Why: three paths did it by hand, each the same way. A mode that needs a process of its own
(``ProcessBackend``: Keras on JAX), the DDP ranks of a multi-device PyTorch trial
(``torch/_ddp.py``) and a TensorFlow mode's worker with logical CPU devices (which is a
``ProcessBackend`` with more settings) all start ``python -m <module> <target> FD FD``
with a given environment, hand it a pickled call over two private pipes, relay each
epoch it reports to the caller's hook (which may raise to stop it), take back its result
or its exception, and reap the process(es) on an interrupt or when one died. As Lightning
Fabric's launchers (``launch(function)`` returns what the function returned), a
:class:`Launcher` has one call, :meth:`Launcher.launch`, and :meth:`Launcher.close`; the
pieces the launchers share (starting a process with its pipes, what a worker does first,
pickling a job and an error) live here beside it.

The sweep's own worker processes (``sweep --workers``, in ``protolab.commands``) are not
launchers of this kind: they run the whole ``protolab sweep`` command, not a call; their
result is an exit code, read by polling N of them at once; they run in a session of their
own with their output in a log; and an interrupt is passed on to them to clean up their
trial, where a launcher's processes are killed (the sweep handles the interrupt, once).
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import NamedTuple

from protolab._quiet import quiet_tensorflow_import
from protolab.backends._base import Backend, EpochHook, Job

__all__ = [
    "EXPERIMENT_MODULE_PREFIX", "Call", "Channel", "Launcher", "Stopped", "WorkerDied",
    "die_with_parent", "dumps_job", "picklable", "spawn", "worker_entry",
]  # fmt: skip

EXPERIMENT_MODULE_PREFIX = "protolab_experiment_"  # how script/_loader names scripts


class WorkerDied(RuntimeError):
    """A launcher's process ended unexpectedly (killed, out of memory)."""


class Stopped(Exception):
    """Raised inside a worker when the caller's epoch hook raised (pruned, interrupted);
    it comes back as the call's error, which the caller knows it asked for."""


class Call(NamedTuple):
    """What a launcher hands its process(es): an operation and its picklable argument."""

    op: str
    arg: object = None


class Launcher(abc.ABC):
    """Runs calls in processes of its own, started (again) when they are not running."""

    @abc.abstractmethod
    def launch(self, call: Call, on_epoch: EpochHook | None = None) -> object:
        """Run ``call`` in this launcher's process(es) and return its result.

        Each epoch they report goes to ``on_epoch``, which may raise to stop the call:
        they are told to stop, and the hook's exception is raised here. The call's own
        exception is raised here as itself. An interrupt reaps the processes (their state
        is unknown; fresh ones start for the next call) and goes on; a process that died
        raises :class:`WorkerDied`, with nothing left behind.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and reap every process (each also exits by itself when its pipes close)."""


@dataclass
class Channel:
    """A started worker process and the two pipes to it: calls go down, replies come up."""

    proc: subprocess.Popen[bytes]
    send: Connection
    recv: Connection

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close_pipes(self) -> None:
        for conn in (self.send, self.recv):
            with contextlib.suppress(OSError):
                conn.close()

    def end(self, kill: bool) -> None:
        """Ask it to stop (``terminate``), or ``kill`` it: one stuck in a collective never
        answers a polite signal."""
        if self.alive:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()

    def exit_code(self, wait_s: float | None) -> int | None:
        """Its exit code once it exited, waiting up to ``wait_s`` (None: as long as it
        takes); None while it still runs."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait_s)
        return self.proc.poll()


def spawn(module: str, target: str, env: Mapping[str, str]) -> Channel:
    """``python -m module target FD FD`` with ``env`` on top of this process's.

    ``-m``: no user ``__main__`` is imported again there (a sweep's script would run once
    more). Its stdout and stderr stay the terminal's; only the two pipes are private.
    """
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    args = [sys.executable, "-m", module, target, str(to_child_r), str(to_parent_w)]
    full = {**os.environ, **env, "PYTHONPATH": _import_path()}
    proc = subprocess.Popen(args, env=full, pass_fds=(to_child_r, to_parent_w))
    os.close(to_child_r)
    os.close(to_parent_w)
    send = Connection(to_child_w, readable=False)
    return Channel(proc, send, Connection(to_parent_r, writable=False))


def _import_path() -> str:
    """This process's import path for the worker: a job pickled by reference (a class of
    an importable module) must resolve there as here, wherever the worker is started from
    (a long-lived worker outlives the folder a sweep ran in)."""
    here = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys([*here, *given]))


def worker_entry(argv: list[str]) -> tuple[Backend, Connection, Connection]:
    """What a worker started by :func:`spawn` does first: its backend, its two pipes.

    It ignores SIGINT: an interrupt is handled once, by the caller, which then stops it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_tensorflow_import()  # TensorFlow's start-up notices, as in the caller's process
    target, fd_in, fd_out = argv
    module_name, _, cls_name = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module_name), cls_name)()
    recv = Connection(int(fd_in), writable=False)
    return backend, recv, Connection(int(fd_out), readable=False)


def die_with_parent() -> None:
    """Linux: this worker is killed when the process that started it dies (no orphans)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def dumps_job(job: Job) -> bytes:
    """The job, with classes from experiment scripts (custom layers) pickled by value.

    The worker never executed the user's script, so a class defined there could not be
    found by name; cloudpickle carries its definition instead.
    """
    import cloudpickle

    for name, module in list(sys.modules.items()):
        if name.startswith(EXPERIMENT_MODULE_PREFIX):
            cloudpickle.register_pickle_by_value(module)
    data: bytes = cloudpickle.dumps(job)
    return data


def picklable(e: BaseException) -> BaseException:
    """``e`` if it survives the pipe, else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")
