"""The watch session: frameworks imported once, a short rerun on every save, until Ctrl-C.

Start-up checks everything a run would (config, script, values, stores) and exits 2 on
bad input before anything is written; then the configured modes' frameworks are imported,
the tracking store is opened and the model runs once. After that
``watchfiles`` reports saves of the script, the config and the script's local modules
(debounced: an editor's write-and-rename is one save); a save whose bytes did not change
anything is ignored. A broken script is shown and the session keeps watching. Ctrl-C
(or SIGTERM) stops it: a run being written ends KILLED, the session's parent ends, exit 130
(143). A second Ctrl-C exits at once.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from protolab._signals import (
    Interrupted,
    deferred,
    interrupt,
    interrupt_again,
    reset_interrupts,
    shielded,
)
from protolab._stores import redact
from protolab._tags import TAG
from protolab.backends import configure_compile_cache
from protolab.errors import UserInputError
from protolab.sweep import best_params
from protolab.watch._rerun import Rerun, run_modes, start_rerun
from protolab.watch._show import Show, study_best
from protolab.watch._source import Source, fingerprint, user_traceback
from protolab.watch._track import WatchTracker, open_watch_tracker

if TYPE_CHECKING:
    from watchfiles import Change

    from protolab.sweep import SweepContext

__all__ = ["WatchOptions", "watch"]

CACHE_ENTRIES = "4"  # compiled programs kept per mode (protolab.backends._cache)
_STEP_MS = 50  # a save is reported once no change came for this long


@dataclass(frozen=True)
class WatchOptions:
    config: Path
    overrides: list[str]
    values: dict[str, Any]
    best: bool = False
    epochs: int = 1
    steps: int | None = None
    track: bool = True


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop the session where it is, but never inside an MLflow write (``_signals``)."""
    signal.signal(signal.SIGINT, _hard_exit)
    signal.signal(signal.SIGTERM, _hard_exit)
    interrupt(signum)


def _hard_exit(signum: int, frame: FrameType | None) -> None:
    def now() -> None:
        os.write(2, b"error: interrupted again: stopped at once\n")
        os._exit(128 + signum)

    interrupt_again(now)


class Session:
    """One watch session: the source, the display, the tracker and the rerun counter."""

    def __init__(self, opts: WatchOptions) -> None:
        self.opts = opts
        source = "--best" if opts.best else "--params"
        self.source = Source(opts.config, list(opts.overrides), dict(opts.values), source)
        self.tracker: WatchTracker | None = None
        self.number = 0
        self.last = ""  # fingerprint of the files the last rerun read

    def prepare(self) -> None:
        """Everything checked and imported before the first run; bad input raises here."""
        loaded = self.source.load()
        ctx = loaded.ctx
        if self.opts.best:
            self.source.values = best_params(ctx)
            self.source.values_from = f"--best (study '{ctx.study_name}', renamed a choice?)"
            loaded = self.source.load()
        self.show = Show(ctx.metric, study_best(ctx))
        hw = ctx.cfg.hardware  # the compile cache sweep and run use: an architecture seen
        # before compiles warm (read once: a framework reads its folder at its first compile)
        configure_compile_cache(
            hw.compile_cache, hw.compile_cache_max_mb, ctx.tracking_uri, hw.compile_cache_sync
        )
        _load_frameworks(list(ctx.cfg.backends))
        if self.opts.track:  # after the frameworks: imports in two threads could interleave
            experiment = ctx.cfg.tracking.experiment or ctx.study_name
            self.tracker = open_watch_tracker(ctx.tracking_uri, experiment, ctx.study_name)
            steps = str(self.opts.steps) if self.opts.steps else "all"
            self.tracker.log_parent(
                {},
                {
                    TAG.WATCH_BACKENDS: ",".join(ctx.cfg.backends),
                    TAG.WATCH_JOB: f"epochs={self.opts.epochs} steps={steps}",
                },
            )
        self._header(loaded.ctx)

    def _header(self, ctx: SweepContext) -> None:
        steps = f" x {self.opts.steps} steps" if self.opts.steps else ""
        job = f"{self.opts.epochs} epoch(s){steps}"
        where = "off (--no-track)"
        if self.tracker is not None:
            where = f"{self.tracker.session} in {redact(ctx.tracking_uri)}"
        names = [f.name for f in self.source.files()]
        self.show.header(ctx.study_name, names, list(ctx.cfg.backends), job, where)

    def rerun(self, saved_at: float, reason: str) -> Rerun:
        """Load the files afresh and train each mode briefly; never raises for user errors."""
        self.number += 1
        rerun = Rerun(self.number, saved_at)
        self.show.start(rerun, reason)
        job, files = None, self.source.files()
        read = fingerprint(files)  # before reading: a save during the load reruns again
        try:
            loaded = self.source.load()
            job = start_rerun(rerun, loaded, self.opts.epochs, self.opts.steps)
        except UserInputError as e:
            rerun.error = str(e)
        except Exception as e:  # the user's own code raised while building the Arch
            rerun.error = user_traceback(e, self.source.files())
            rerun.traceback = "".join(traceback.format_exception(e))
        now = self.source.files()  # a new local module joins the watched files
        self.last = read if now == files else fingerprint(now)
        if job is not None:
            self.show.configured(rerun)
            run_modes(rerun, job, self.show.epoch)
        with shielded():  # shown means logged: a Ctrl-C now waits for the runs to be written
            self.show.finish(rerun)
            self._log(rerun)
        return rerun

    def _log(self, rerun: Rerun) -> None:
        if self.tracker is None:
            return
        if rerun.error or rerun.loaded is None:
            backends = list(rerun.loaded.ctx.cfg.backends) if rerun.loaded else []
            self.tracker.log_failure(rerun, backends)
        else:
            self.tracker.log_rerun(rerun)

    def close(self, status: str) -> None:
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            with deferred():
                tracker.end(status)


def _load_frameworks(names: list[str]) -> None:
    """Import each named mode's framework now (aliases load theirs when they calibrate)."""
    from protolab.backends import ALIASES, load_backends

    load_backends(name for name in names if name not in ALIASES)


class _Watcher:
    """``watchfiles`` in a thread of its own, from before the first run to the end.

    Saves made while a rerun trains are queued, not missed; the main thread waits on the
    queue (interruptible). The set of watched files is re-read after every rerun; a file
    in a folder not watched yet restarts the thread on the new folders.
    """

    def __init__(self) -> None:
        self.changes: queue.Queue[set[tuple[Change, str]]] = queue.Queue()
        self.wanted: set[str] = set()
        self.folders: list[str] = []
        self._stop: threading.Event | None = None

    def follow(self, files: list[Path]) -> None:
        self.wanted = {str(f) for f in files}
        folders = sorted({str(f.parent) for f in files})
        if folders == self.folders:
            return
        self.close()
        import watchfiles  # noqa: F401 - here, not in the thread: imports in two threads

        self.folders, self._stop = folders, threading.Event()
        thread = threading.Thread(
            target=self._run, args=(folders, self._stop), name="protolab-watch", daemon=True
        )
        thread.start()

    def _run(self, folders: list[str], stop: threading.Event) -> None:
        import watchfiles

        def ours(change: Change, path: str) -> bool:
            return path in self.wanted

        for changes in watchfiles.watch(
            *folders, watch_filter=ours, step=_STEP_MS, stop_event=stop, recursive=False
        ):
            self.changes.put(changes)

    def next_save(self, session: Session) -> tuple[float, str]:
        """Block until a watched file's bytes differ from what the last rerun read: (save
        time, what changed). The save time is the newest changed file's mtime."""
        paths: set[Path] = set()
        while True:
            try:
                changes = self.changes.get(timeout=0.5)
            except queue.Empty:
                continue
            paths |= {Path(p) for _, p in changes}
            while not self.changes.empty():  # saves queued during a rerun: one rerun
                paths |= {Path(p) for _, p in self.changes.get()}
            if fingerprint(session.source.files()) != session.last:
                break
            paths.clear()  # touched, not changed (or changed back)
        saved = max((p.stat().st_mtime for p in paths if p.exists()), default=time.time())
        return saved, ", ".join(sorted(p.name for p in paths)) + " changed"

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._stop, self.folders = None, []


def watch(opts: WatchOptions) -> int:
    """Run a watch session until interrupted: its exit code (130 Ctrl-C, 143 SIGTERM)."""
    os.environ.setdefault("PROTOLAB_PROGRAM_CACHE", CACHE_ENTRIES)
    reset_interrupts()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    session, watcher = Session(opts), _Watcher()
    try:
        session.prepare()
        watcher.follow(session.source.files())
        session.rerun(time.time(), "start")
        while True:
            watcher.follow(session.source.files())  # a rerun may have found new modules
            session.rerun(*watcher.next_save(session))
    except KeyboardInterrupt as e:  # Interrupted (SIGINT, SIGTERM) or a bare Ctrl-C
        signal.signal(signal.SIGINT, _hard_exit)
        signal.signal(signal.SIGTERM, _hard_exit)
        session.close("FINISHED")
        print("\nprotolab watch: stopped", flush=True)
        return 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)
    finally:
        watcher.close()
        session.close("FINISHED")
