"""A backend run in a worker process of its own, behind the same :class:`Backend` contract.

Why: some settings are fixed per process (Keras' backend is chosen when Keras is
imported), so Keras on JAX cannot share a process with the TensorFlow modes. The proxy
starts one long-lived worker (``python -m protolab.backends._process``, by the launcher
contract of ``_launch.py``), sends it each job, relays every epoch's metrics to the
caller's hook (which may raise to prune: the worker is told to stop) and hands back the
result. Jobs, results and exceptions travel pickled over two private pipes; the worker's
stdout/stderr stay the terminal's. The worker ignores SIGINT: an interrupt is handled
once, by the sweep, which then stops the worker.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from protolab.backends._base import WORKER_ENV, Backend, EpochHook, Job, JobResult, Program
from protolab.backends._launch import (
    Call,
    Channel,
    Launcher,
    Stopped,
    WorkerDied,
    dumps_job,
    picklable,
    spawn,
    worker_entry,
)

__all__ = ["ProcessBackend", "ProcessLauncher", "RemoteModel", "WorkerDied"]


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
        return tuple(cast("Iterable[str]", self.proxy.call("formats")))

    def save_checkpoint(self, directory: Path) -> None:
        """The worker writes the weights (a path on this machine: same host)."""
        self.proxy.call("save", str(directory))

    def export(self, fmt: str, out: Path, checkpoint: Path) -> Path:
        return Path(str(self.proxy.call("export", (fmt, str(out), str(checkpoint)))))


class ProcessLauncher(Launcher):
    """One long-lived worker (``target``: a Backend class path) started with ``env``."""

    def __init__(self, name: str, target: str, env: Mapping[str, str]) -> None:
        self.name, self.target, self.env = name, target, dict(env)
        self._channel: Channel | None = None
        self._pending = False  # a submitted call's reply is still to be read

    @property
    def alive(self) -> bool:
        return self._channel is not None and self._channel.alive

    def submit(self, call: Call) -> None:
        """Send ``call`` and go on: its reply is read (its error raised) by the next launch,
        so the worker imports its framework while this process does other start-up work."""
        self._started().send.send(call)
        self._pending = True

    def settle(self) -> None:
        """Wait for a submitted call's reply (its error raised here), if one is pending."""
        if self._pending and self._channel is not None:
            self._call(self._channel, None)

    def launch(self, call: Call, on_epoch: EpochHook | None = None) -> object:
        return self._call(self._started(), call, on_epoch)

    def _call(
        self, channel: Channel, call: Call | None, on_epoch: EpochHook | None = None
    ) -> object:
        """Read a pending reply, then send ``call`` (None: none) and return its reply."""
        try:
            if self._pending:
                self._pending = False
                self._answer(channel, None)
            if call is None:
                return None
            channel.send.send(call)
            return self._answer(channel, on_epoch)
        except KeyboardInterrupt:
            self.close()  # mid-call: the worker's state is unknown, start afresh next time
            raise
        except (EOFError, OSError):
            self._died(channel)

    def _started(self) -> Channel:
        if self._channel is None or not self._channel.alive:
            self.close()
            self._channel = spawn(__name__, self.target, self.env)
        return self._channel

    def _answer(self, channel: Channel, on_epoch: EpochHook | None) -> object:
        """The call's reply, serving the epochs it reports to ``on_epoch`` first."""
        kind, value = channel.recv.recv()
        while kind == "epoch":
            try:
                if on_epoch is not None:
                    on_epoch(*value)
            except BaseException:
                channel.send.send(Call("stop"))
                with contextlib.suppress(Stopped):
                    self._answer(channel, None)
                raise
            channel.send.send(Call("go"))
            kind, value = channel.recv.recv()
        if kind == "error":
            raise value
        return value

    def _died(self, channel: Channel) -> NoReturn:
        code = channel.exit_code(None)
        self.close()
        raise WorkerDied(f"the {self.name} worker process died (exit code {code})") from None

    def close(self) -> None:
        channel, self._channel, self._pending = self._channel, None, False
        if channel is not None:
            channel.close_pipes()
            channel.end(kill=False)
            channel.exit_code(5)


class ProcessBackend(Backend):
    """Runs ``cls`` in a worker process started with ``cls.process_env``.

    ``env`` adds settings of this worker only (a TensorFlow mode's logical CPU devices,
    fixed when TF starts), on top of the class's own.
    """

    loads_elsewhere = True

    def __init__(self, name: str, cls: type[Backend], env: dict[str, str] | None = None) -> None:
        self.name = name  # type: ignore[misc]  # per instance: the proxied backend's name
        self.family = cls.family  # type: ignore[misc]
        self.max_devices = cls.max_devices  # type: ignore[misc]
        self.env: dict[str, str] = dict(env or {})
        settings = {**cls.process_env, **self.env, WORKER_ENV: cls.__name__}
        self.launcher = ProcessLauncher(name, f"{cls.__module__}:{cls.__name__}", settings)

    def call(self, op: str, arg: object = None) -> object:
        """One call to the backend in the worker (its trained model's, after a job)."""
        return self.launcher.launch(Call(op, arg))

    def load(self) -> None:
        """Start the worker and let it import its framework while this process goes on."""
        self.launcher.submit(Call("load"))

    def wait_loaded(self) -> None:
        """Block until the worker's import is done, so no job is timed beside it."""
        self.launcher.settle()

    def program(self, job: Job) -> Program:
        raise NotImplementedError("a ProcessBackend runs whole jobs in its worker")

    def run(self, job: Job, on_epoch: EpochHook | None = None) -> JobResult:
        result = self.launcher.launch(Call("run", dumps_job(job)), on_epoch)
        assert isinstance(result, JobResult), f"the {self.name} worker sent {result!r}"
        result.model = RemoteModel(self.name, self)
        return result

    def release(self) -> None:
        if self.launcher.alive:
            self.call("release")

    def restore(self, directory: Path) -> RemoteModel:
        """Load a checkpoint in the worker: the model ``predict`` and ``export`` then use."""
        self.call("restore", (self.name, str(directory)))
        return RemoteModel(self.name, self)

    def close(self) -> None:
        """Stop the worker (it also exits by itself when this process's pipe closes)."""
        self.launcher.close()


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
            send.send(("error", picklable(e)))


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
            raise Stopped(f"stopped by the caller after epoch {epoch}")

    return on_epoch


def main(argv: list[str]) -> None:
    _serve(*worker_entry(argv))


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: exceptions and results the
    # worker pickles must name protolab.backends._process, which the caller can import.
    from protolab.backends import _process

    _process.main(sys.argv[1:])
