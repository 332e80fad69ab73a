"""A backend run in a worker process of its own, behind the same :class:`Backend` contract.

Why: some settings are fixed per process (Keras' backend is chosen when Keras is
imported), so Keras on JAX cannot share a process with the TensorFlow modes. The proxy
starts one long-lived worker (``python -m protolab.backends._process``, so no user
``__main__`` is re-imported), sends it each job, relays every epoch's metrics to the
caller's hook (which may raise to prune: the worker is told to stop) and hands back the
result. Jobs, results and exceptions travel pickled over two private pipes; the worker's
stdout/stderr stay the terminal's. The worker ignores SIGINT: an interrupt is handled
once, by the sweep, which then stops the worker.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from protolab.backends._base import WORKER_ENV, Backend, EpochHook, Job, JobResult, Program

__all__ = ["ProcessBackend", "RemoteModel"]

EXPERIMENT_MODULE_PREFIX = "protolab_experiment_"  # how script/_loader names scripts


class _Stop(Exception):
    """Raised inside the worker when the caller's epoch hook raised (pruned, interrupted)."""


class WorkerDied(RuntimeError):
    """The backend's worker process ended unexpectedly (killed, out of memory)."""


@dataclass
class RemoteModel:
    """The trained model of a job that ran in a worker: predicts there (until its next job)."""

    backend: str
    proxy: ProcessBackend

    @property
    def native(self) -> object:
        """The framework's model lives in the worker process; this side has its outputs."""
        return None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.proxy.call("predict", x))

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self.proxy.call("formats"))

    def save_checkpoint(self, directory: Path) -> None:
        """The worker writes the weights (a path on this machine: same host)."""
        self.proxy.call("save", str(directory))

    def export(self, fmt: str, out: Path, checkpoint: Path) -> Path:
        return Path(self.proxy.call("export", (fmt, str(out), str(checkpoint))))


class ProcessBackend(Backend):
    """Runs ``cls`` in a worker process started with ``cls.process_env``.

    ``env`` adds settings of this worker only (a TensorFlow mode's logical CPU devices,
    fixed when TF starts), on top of the class's own.
    """

    def __init__(self, name: str, cls: type[Backend], env: dict[str, str] | None = None) -> None:
        self.name = name  # type: ignore[misc]  # per instance: the proxied backend's name
        self.family = cls.family  # type: ignore[misc]
        self.max_devices = cls.max_devices  # type: ignore[misc]
        self._cls = cls
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        env = {
            **os.environ,
            **self._cls.process_env,
            **self._env,
            WORKER_ENV: self._cls.__name__,
        }
        target = f"{self._cls.__module__}:{self._cls.__name__}"
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "protolab.backends._process",
                target,
                str(to_child_r),
                str(to_parent_w),
            ],
            env=env,
            pass_fds=(to_child_r, to_parent_w),
        )
        os.close(to_child_r)
        os.close(to_parent_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(to_parent_r, writable=False)

    def _conns(self) -> tuple[Connection, Connection]:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        assert self._send is not None and self._recv is not None
        return self._send, self._recv

    def _reply(self) -> Any:
        assert self._recv is not None
        try:
            kind, value = self._recv.recv()
        except (EOFError, OSError):
            code = self._proc.wait() if self._proc is not None else None
            self.close()
            raise WorkerDied(f"the {self.name} worker process died (exit code {code})") from None
        if kind == "error":
            raise value
        return value

    def call(self, op: str, arg: Any = None) -> Any:
        send, _ = self._conns()
        send.send((op, arg))
        return self._reply()

    def load(self) -> None:
        """Start the worker and let it import its framework while this process goes on."""
        send, _ = self._conns()
        send.send(("load", None))
        self._pending_load = True

    def program(self, job: Job) -> Program:
        raise NotImplementedError("a ProcessBackend runs whole jobs in its worker")

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        send, recv = self._conns()
        try:
            if getattr(self, "_pending_load", False):
                self._pending_load = False
                self._reply()
            send.send(("run", _dumps(job)))
            while True:
                kind, value = recv.recv()
                if kind != "epoch":
                    break
                try:
                    if on_epoch is not None:
                        on_epoch(*value)
                except BaseException:
                    send.send(("stop", None))
                    with contextlib.suppress(_Stop):
                        self._reply()
                    raise
                send.send(("go", None))
        except KeyboardInterrupt:
            self.close()  # mid-job: the worker's state is unknown, start afresh next time
            raise
        except (EOFError, OSError):
            code = self._proc.wait() if self._proc is not None else None
            self.close()
            raise WorkerDied(f"the {self.name} worker process died (exit code {code})") from None
        if kind == "error":
            raise value
        result: JobResult = value
        result.model = RemoteModel(self.name, self)
        return result

    def release(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.call("release")

    def restore(self, directory: Path) -> RemoteModel:
        """Load a checkpoint in the worker: the model ``predict`` and ``export`` then use."""
        if getattr(self, "_pending_load", False):
            self._pending_load = False
            self._reply()
        self.call("restore", (self.name, str(directory)))
        return RemoteModel(self.name, self)

    def close(self) -> None:
        """Stop the worker (it also exits by itself when this process's pipe closes)."""
        for conn in (self._send, self._recv):
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = self._send = self._recv = None


def _serve(backend: Backend, recv: Connection, send: Connection) -> None:
    """The worker's loop: one request at a time until the parent closes the pipe."""
    last: JobResult | None = None
    while True:
        try:
            op, arg = recv.recv()
        except EOFError:
            return
        try:
            if op == "load":
                backend.load()
                send.send(("ok", None))
            elif op == "run":
                last = backend.run(pickle.loads(arg), _relay(recv, send))
                model, last.model = last.model, None
                send.send(("result", last))
                last.model = model
            elif op == "predict":
                assert last is not None and last.model is not None, "no trained model yet"
                send.send(("ok", last.model.predict(arg)))
            elif op == "release":
                backend.release()
                send.send(("ok", None))
            elif op == "restore":  # a checkpoint becomes the model predict/save/export use
                last = JobResult(model=_load_checkpoint(backend, *arg))
                send.send(("ok", None))
            elif op in ("save", "export", "formats"):
                assert last is not None and last.model is not None, "no trained model yet"
                send.send(("ok", _model_op(last.model, op, arg)))
        except BaseException as e:  # every failure goes back to the caller, as itself
            send.send(("error", _picklable(e)))


def _load_checkpoint(backend: Backend, name: str, directory: str) -> Any:
    """Rebuilt by the ``export`` module beside the backend's class (as the registry finds it)."""
    module = importlib.import_module(f"{type(backend).__module__}.export")
    return module.load_checkpoint(name, Path(directory))


def _model_op(model: Any, op: str, arg: Any) -> Any:
    """The trained-model handle's checkpoint and export calls, made in the worker."""
    if op == "save":
        return model.save_checkpoint(Path(arg))
    if op == "export":
        fmt, out, checkpoint = arg
        return str(model.export(fmt, Path(out), Path(checkpoint)))
    return tuple(model.formats)


def _relay(recv: Connection, send: Connection) -> EpochHook:
    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        send.send(("epoch", (epoch, metrics)))
        op, _ = recv.recv()
        if op == "stop":
            raise _Stop(f"stopped by the caller after epoch {epoch}")

    return on_epoch


def _dumps(job: Job) -> bytes:
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


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles interrupts
    target, fd_in, fd_out = argv
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    _serve(cls(), Connection(int(fd_in), writable=False), Connection(int(fd_out), readable=False))


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: exceptions and results the
    # worker pickles must name protolab.backends._process, which the caller can import.
    from protolab.backends import _process

    _process.main(sys.argv[1:])
