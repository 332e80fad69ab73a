"""MLflow writes in a separate process, so a trial never waits on the tracking store.

Each MLflow call costs ~10 ms of CPU on a SQLite store (SQLAlchemy, one transaction per
call): ~80-100 ms per child run, a third of a tiny trial's wall time when made inline, and
``import mlflow`` alone takes ~2 s. So a sweep process only sends small messages down a
pipe; a writer process makes the calls, on the other core. It is started when the command
starts (:func:`start_writer`) and imports MLflow while the config and the experiment load.

- Order: one pipe, one writer: calls happen in the order the sweep made them.
- Errors: opening the store is synchronous, so a bad or unreachable URI still fails before
  anything runs. A later failed write (disk full, store gone, permissions) is kept by the
  writer, not printed, and raised as :class:`StoreWriteError` (exit 1) by the sweep's next
  :meth:`AsyncTracker.sync` (before a trial is told COMPLETE: no COMPLETE trial lacks its
  runs), :meth:`AsyncTracker.child` or :meth:`AsyncTracker.end`: the sweep stops with one
  message.
- Signals: each message goes down the pipe whole (:func:`~protolab._signals.deferred`),
  and a reply is awaited interruptibly, so a Ctrl-C never leaves half a message behind.
- Exit: :meth:`AsyncTracker.end` waits until every write is done. If the sweep process dies
  (kill -9), the writer sees its pipe close, ends the child runs it still has open as
  FAILED ("worker died") and exits. It ignores SIGINT and SIGTERM: a Ctrl-C reaches the
  whole process group, and the sweep process decides what to log about it.

``PROTOLAB_TRACKING=inline`` makes the calls in the sweep process instead (debugging).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from protolab._signals import deferred
from protolab.errors import ProtolabError
from protolab.tracking._held import Held
from protolab.tracking._study_id import StudyRuns
from protolab.tracking._types import DescribeStudy

__all__ = ["AsyncChildRun", "AsyncTracker", "StoreWriteError", "start_writer"]


class StoreWriteError(ProtolabError):
    """A write to a store failed mid-sweep (disk full, store gone, permissions): exit 1."""


# A long job's held metrics reach the store at most this often (see AsyncChildRun).
_LIVE_EVERY_S = 3.0

_started: _Writer | None = None  # launched by start_writer(), until open_tracker takes it


def start_writer() -> None:
    """Launch the writer process now, so its MLflow import overlaps the caller's set-up."""
    global _started
    if _started is None and os.environ.get("PROTOLAB_TRACKING", "") != "inline":
        _started = _Writer()


def adopt(conn: Any) -> None:
    """Use the writer at the other end of ``conn`` (forked for this worker by the launcher's
    pool, tracking/_pool.py) instead of starting one."""
    global _started
    _started = _Writer(conn)


def take_writer() -> _Writer:
    """The pre-started writer if there is one (each is used once), else a new one."""
    global _started
    writer, _started = _started, None
    return writer if writer is not None and writer.alive() else _Writer()


class _Writer:
    """The process and the parent's end of its pipe (``adopted``: only the pipe, the writer
    being another process's child)."""

    def __init__(self, adopted: Any = None) -> None:
        import multiprocessing as mp

        self.proc: Any = None
        if adopted is not None:
            self.conn = adopted
            atexit.register(self.conn.close)
            return

        # spawn, not fork: the sweep process may already hold threads and framework state.
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child_conn,), name="protolab-tracking")
        self.proc.daemon = True  # never outlives an interpreter that exits without end()
        # The child starts with SIGINT/SIGTERM blocked (a signal mask survives exec), so a
        # Ctrl-C during its start-up cannot raise a KeyboardInterrupt traceback there; it
        # ignores both once running. Here they are only held back for the fork, then run.
        held = {signal.SIGINT, signal.SIGTERM}
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        child_conn.close()
        # The interpreter's exit does not wait for it (multiprocessing's exit hook joins its
        # children): an interrupted command would wait seconds for a writer still importing
        # MLflow or creating a fresh store. It exits by itself on EOF (our end closes, here
        # or by the OS), ending what it opened; close() joins it when the command ends well.
        mp.process._children.discard(self.proc)  # type: ignore[attr-defined]
        atexit.register(self.conn.close)

    def alive(self) -> bool:
        if self.proc is None:  # adopted: it says nothing until asked, so readable means EOF
            return not self.conn.closed and not self.conn.poll()
        return bool(self.proc.is_alive())

    def send(self, op: str, ref: int, *args: Any) -> None:
        with deferred():  # whole messages only: half of one would garble every later one
            self.conn.send((op, ref, args, False))

    def call(self, op: str, ref: int, *args: Any) -> Any:
        """Send and wait for the reply."""
        self.request(op, ref, *args)
        return self.reply()

    def request(self, op: str, ref: int, *args: Any) -> None:
        """Send a call whose reply :meth:`reply` collects later (calls in between are fine)."""
        with deferred():
            self.conn.send((op, ref, args, True))

    def _recv(self) -> Any:
        """The next message: waited for interruptibly (nothing read yet), read whole."""
        self.conn.poll(None)
        with deferred():
            return self.conn.recv()

    def reply(self) -> Any:
        """The oldest outstanding call's result; a failed call raises _WriterError."""
        while True:
            kind, payload = self._recv()
            if kind == "async-error":
                continue  # already printed by the writer; the caller asked for this reply
            if kind == "error":
                raise _WriterError(payload)
            return payload

    def pending_error(self) -> str | None:
        """The first write error reported since the last check, if any."""
        first = None
        while self.conn.poll():
            kind, payload = self._recv()
            if kind == "async-error" and first is None:
                first = payload
        return first

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, _WriterError):
            self.call("close", 0)
        self.conn.close()
        if self.proc is not None:
            self.proc.join(timeout=30)


class _WriterError(Exception):
    """A write failed in the writer; the message is its ``Type: first line``."""


class AsyncTracker:
    """:class:`~protolab.tracking.Tracker`'s interface, with its calls made by the writer.

    The store is opened (under ``lock``, for a fresh local store) when the writer gets to
    it; :meth:`wait_open` returns once it is, or raises why it could not be. ``describe``
    (a module-level function, sent by name) goes to the writer with :meth:`end`, which
    stores the study's notes it computes there.
    """

    def __init__(
        self,
        writer: _Writer,
        uri: str,
        experiment: str,
        study: str,
        lock: Path | None = None,
        describe: DescribeStudy | None = None,
        *,
        bind_later: bool = False,
    ) -> None:
        self._writer = writer
        self.uri = uri
        self.study = study
        self.describe = describe
        self.experiment_id = self.parent_id = self.study_id = ""
        env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
        lock_at = str(lock) if lock is not None else None
        writer.request("open", 0, uri, experiment, study, env, lock_at, bind_later)
        self._opening = True
        self._next_ref = 0
        self.live_every_s = _LIVE_EVERY_S  # how often a long job's metrics are written

    def wait_open(self) -> AsyncTracker:
        if self._opening:
            self._opening = False
            self.experiment_id, self.parent_id = self._writer.reply()
        return self

    def _send(self, op: str, ref: int, *args: Any) -> None:
        try:
            self._writer.send(op, ref, *args)
        except OSError as e:  # the writer is gone: say so where the sweep can act on it
            raise self._failed(f"the MLflow writer process exited ({e})") from None

    def child(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> AsyncChildRun:
        self.wait_open()
        error = self._writer.pending_error()
        if error is not None:
            raise self._failed(error)
        self._next_ref += 1
        self._send("child", self._next_ref, name, dict(tags), dict(params))
        return AsyncChildRun(self, self._next_ref)

    def log_parent(self, metrics: Mapping[str, float], tags: Mapping[str, str] = {}) -> None:
        self._send("log_parent", 0, dict(metrics), dict(tags))

    def log_parent_artifact(self, text: str, name: str) -> None:
        self._send("log_parent_artifact", 0, text, name)

    def fail_running_children(self, trial: int, reason: str) -> None:
        self._send("fail_running_children", 0, trial, reason)

    def end_finished(self, trials: Mapping[int, tuple[str, str]]) -> None:
        self._send("end_finished", 0, dict(trials))

    def _ask(self, op: str, *args: Any) -> Any:
        """A call whose answer the sweep needs now (reads, and the binding)."""
        self.wait_open()
        try:
            return self._writer.call(op, 0, *args)
        except _WriterError as e:
            raise self._failed(str(e)) from None
        except OSError as e:
            raise self._failed(f"the MLflow writer process exited ({e})") from None

    def study_runs(self, study_id: str) -> StudyRuns:
        found: StudyRuns = self._ask("study_runs", study_id)
        return found

    def bind(self, study_id: str, adopt: bool = False) -> str:
        self.study_id = study_id
        self.parent_id = str(self._ask("bind", study_id, adopt))
        return self.parent_id

    def _leave(self, status: str) -> None:
        """End the parent run, without waiting: the writer makes the writes still queued
        (a busy store's backlog took 10+ s), then reads EOF and exits by itself."""
        with contextlib.suppress(Exception):
            self._send("end", 0, status)
        self._writer.conn.close()

    def _failed(self, error: str) -> StoreWriteError:
        from protolab.tracking._mlflow import redact

        return StoreWriteError(f"tracking.uri {redact(self.uri)!r}: a write failed: {error}")

    def sync(self) -> None:
        """Wait until every write sent so far has landed; raise the first that failed."""
        try:
            error = self._writer.call("sync", 0)
        except OSError as e:
            raise self._failed(f"the MLflow writer process exited ({e})") from None
        if error is not None:
            raise self._failed(error)

    def end(self, status: str = "FINISHED") -> None:
        """End the parent run, wait for every write to land and stop the writer; raise
        :class:`StoreWriteError` if a write failed on the way (the writer is stopped)."""
        if status == "KILLED" and not self._opening:  # interrupted: stop within a second
            return self._leave("KILLED")
        error = None
        try:
            if self._opening:  # never waited for: nothing was logged, just close
                self._opening = False
                self._writer.reply()
            error = self._writer.call("end", 0, status, self.describe)
        except _WriterError as e:
            error = str(e)
        except OSError as e:
            error = f"the MLflow writer process exited ({e})"
        finally:
            self._writer.close()
        if error is not None:
            raise self._failed(error)


class AsyncChildRun:
    """A child run's handle; :class:`~protolab.tracking.ChildRun`'s interface.

    Metrics and tags are held here and sent with the run's end (one message, written by
    the writer as one batch), so nothing reaches the writer while a job's steps run. A
    long job's are sent every ``_LIVE_EVERY_S`` or more (at the call that finds that time
    passed: an epoch's end) and written while the caller waits, between epochs: the store
    stays live without its writes overlapping the steps that follow (issue 26). A store
    whose writes take long is written to less often (``AsyncTracker.live_every_s``).
    """

    def __init__(self, tracker: AsyncTracker, ref: int) -> None:
        self._tracker = tracker
        self._ref = ref
        self.ended = False
        self._held = Held()
        self._sent_at = time.monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self._held.metrics.append((dict(metrics), step, int(time.time() * 1000)))
        if time.monotonic() - self._sent_at >= self._tracker.live_every_s:
            t0 = time.monotonic()
            self.flush()
            self._tracker.sync()  # written now, between epochs; a failed write raises here
            # a slow store (a server far away) is waited for less often: <= ~2 % of the time
            self._tracker.live_every_s = max(_LIVE_EVERY_S, 50 * (time.monotonic() - t0))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._held.tags.update({k: str(v) for k, v in tags.items()})

    def _take(self) -> Held:
        held, self._held = self._held, Held()
        self._sent_at = time.monotonic()
        return held

    def _send(self, op: str, *args: Any) -> None:
        """``op`` after what is held (the writer makes calls in the order they come)."""
        if self._held:
            self._tracker._send("held", self._ref, self._take())
        self._tracker._send(op, self._ref, *args)

    def log_texts(self, texts: Mapping[str, str]) -> None:
        self._send("log_texts", dict(texts))

    def log_text(self, text: str, name: str) -> None:
        self.log_texts({name: text})

    def flush(self) -> None:
        """Send what is held and have the writer write it (it does not wait)."""
        self._send("flush")

    def call(self, fn: Callable[..., None], *args: object) -> None:
        """Have the writer call ``fn(client, run_id, *args)`` (a module-level function) in
        order with this run's writes, e.g. to upload a checkpoint."""
        self._send("call", fn, *args)

    def end(self, state: str, reason: str = "") -> None:
        if self.ended:
            return
        self.ended = True
        self._tracker._send("end_child", self._ref, state, reason, self._take())


# --- the writer process --------------------------------------------------------------------


def serve(conn: Any) -> None:
    """The writer's loop: make each call in order until ``close`` or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    # The sweep process gone mid-reply: nothing left to tell it, and no traceback.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):
        _loop(conn)
    # Every write is committed (each MLflow call is its own transaction): skip the teardown
    # of MLflow and SQLAlchemy, which took 5+ s on a busy machine while the sweep process
    # waited in join() after an interrupt that should stop within a second.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _loop(conn: Any) -> None:
    """Serve calls until ``close`` or the pipe closes (every open child run is then ended)."""
    import_mlflow()  # the ~2 s import, while the sweep process starts
    _Server(conn).serve()


def import_mlflow(sql: bool = False) -> None:
    """What every writer needs imported; ``sql``: also the SQL store and its ORM mappers
    (~1.3 s, otherwise paid when the store opens), for writers forked from one import."""
    import logging

    quiet_mlflow()
    import mlflow.tracking

    # MLflow logs a failed SQL write with its traceback before raising it; the error goes
    # back to the sweep (one message), not to the terminal (issue 13: 1,046 lines).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    if sql:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        import sqlalchemy.orm

        sqlalchemy.orm.configure_mappers()


def quiet_mlflow() -> None:
    """Before MLflow is imported: no usage telemetry from protolab's writer process, unless
    the user set ``MLFLOW_DISABLE_TELEMETRY`` themselves. MLflow 3 starts threads at import
    that fetch a config and post a record per tracked call over the network; in the writer
    they hold the GIL against its store work, and the first run's creation took 0.15-0.3 s
    longer with them (issue 26; offline, each request waits for its timeout)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class _Close(Exception):
    """``close`` was served: the loop ends."""


class _Server:
    """The writer's state: the tracker, its open child runs and the first failed write.

    A failed write is not printed: it is kept, sent once unasked (``async-error``, read by
    :meth:`AsyncTracker.child`) and returned by every later ``sync`` and ``end``, so the
    sweep stops and says so once.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.tracker: Any = None
        self.runs: dict[int, Any] = {}
        self.failed: str | None = None
        self.unread = False  # an async error is waiting in the pipe: never queue more than one

    def serve(self) -> None:
        while True:
            try:
                op, ref, args, reply = self.conn.recv()
            except (EOFError, OSError):  # the sweep process died (kill -9): nothing RUNNING
                return self.abandon()
            try:
                result = self.handle(op, ref, args)
                if reply:
                    self.conn.send(("ok", result))
                if op == "open":
                    self.warm_up()
            except _Close:
                return None
            except (BrokenPipeError, ConnectionResetError):  # the sweep is gone mid-reply
                return self.abandon()
            except Exception as e:
                if not self.report(_one_line(e), reply):
                    return self.abandon()

    def handle(self, op: str, ref: int, args: tuple[Any, ...]) -> Any:
        """Make one call; its result is the reply (if one was asked for)."""
        from protolab.tracking._mlflow import Tracker

        if op == "open":
            uri, experiment, study, env, lock, bind_later = args
            os.environ.update(env)
            from protolab._lock import file_lock

            with file_lock(Path(lock) if lock else None):  # a fresh store: one creator
                self.tracker = Tracker(uri, experiment, study, bind_later=bind_later)
            return (self.tracker.experiment_id, self.tracker.parent_id)
        if op == "close":
            _end_all(self.runs, "worker exited without ending this run")  # none, normally
            self.checkpoint()
            self.conn.send(("ok", None))
            self.conn.close()
            raise _Close
        if op == "sync":  # every earlier call is made: the first that failed, if any
            return self.failed
        if self.tracker is None:
            raise RuntimeError(f"{op} before open")
        if op == "child":
            self.unread = False  # AsyncTracker.child() read the pipe before sending this
            self.runs[ref] = self.tracker.child(*args)
        elif op == "end_child":
            if ref in self.runs:
                state, reason, held = args
                run = self.runs.pop(ref)
                run.log_held(held)
                run.end(state, reason)
        elif op in ("held", "log_texts", "flush", "call"):
            if ref in self.runs:  # a run whose creation failed: its error was reported
                run = self.runs[ref]
                if op == "call":  # fn(client, run_id, *rest): an extension's writes
                    args[0](self.tracker.client, run.run_id, *args[1:])
                else:
                    getattr(run, "log_held" if op == "held" else op)(*args)
        elif op == "end":
            self.end(*args)
            return self.failed
        elif op in ("study_runs", "bind"):  # answered: the sweep waits for them
            return getattr(self.tracker, op)(*args)
        else:  # log_parent, log_parent_artifact, fail_running_children, end_finished
            getattr(self.tracker, op)(*args)
        return None

    def warm_up(self) -> None:
        """Once the store is open, while the sweep process imports its frameworks: a first
        search of the study's runs (the sweep's next question, asked under its study lock),
        so that MLflow's first-search set-up (~0.15-0.2 s) is not paid while it waits."""
        with contextlib.suppress(Exception):
            self.tracker.study_runs("")

    def end(self, status: str, describe: DescribeStudy | None = None) -> None:
        """End the parent run, storing the study's notes ``describe`` computes. After an
        interrupt or a failed write only its status is set: the notes (a view, refreshed by
        the next sweep) would delay the exit."""
        if status == "KILLED" or self.failed is not None:
            self.tracker.client.set_terminated(self.tracker.parent_id, status=status)
        else:
            self.tracker.describe = describe
            self.tracker.end(status)

    def report(self, message: str, reply: bool) -> bool:
        """Keep a failed call's error and tell the sweep; False if the sweep is gone."""
        if self.failed is None:
            self.failed = message
        try:
            if reply:
                self.conn.send(("error", message))
            elif not self.unread:
                self.unread = True
                self.conn.send(("async-error", message))
        except OSError:
            return False
        return True

    def abandon(self) -> None:
        """The sweep process is gone: end what it left open, so nothing stays RUNNING."""
        _end_all(self.runs, "worker died")
        _end_parent(self.tracker)
        self.checkpoint()

    def checkpoint(self) -> None:
        """Before this process exits without closing its store connections (``serve``):
        a local SQLite store's log copied into its ``.db`` file (``Tracker.checkpoint``)."""
        if self.tracker is not None:
            with contextlib.suppress(Exception):
                self.tracker.checkpoint()


def _one_line(e: BaseException) -> str:
    """``Type: first line`` of the root cause (``OperationalError: database or disk is
    full``, not MLflow's wrapper around SQLAlchemy's wrapper around it)."""
    from protolab.tracking._mlflow import redact

    seen = {id(e)}
    while (cause := _cause(e)) is not None and id(cause) not in seen:
        seen.add(id(cause))
        e = cause
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return redact(f"{type(e).__name__}: {first}")[:500]


def _cause(e: BaseException) -> BaseException | None:
    return e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def _end_parent(tracker: Any) -> None:
    """The sweep process died without ending its parent run: end it KILLED, not RUNNING.

    A worker that joins the study later marks it RUNNING again, as after any sweep's end.
    """
    if tracker is not None:
        with contextlib.suppress(Exception):
            tracker.client.set_terminated(tracker.parent_id, status="KILLED")


def _end_all(runs: dict[int, Any], reason: str) -> None:
    for run in runs.values():
        with contextlib.suppress(Exception):
            run.end("FAIL", reason)
    runs.clear()
