"""Interrupts that are raised where the sweep can act on them, never inside a write.

SIGINT/SIGTERM raise :class:`Interrupted` wherever the sweep is, so a long epoch stops at
once; but a write cut in the middle fails with an unrelated error that hides the
interrupt (a journal append inside its lock dance) or corrupts what follows (a message
half-sent down the tracking writer's pipe). Such sections run :func:`shielded` or
:func:`deferred`: a signal arriving inside is raised as soon as the section is done.

Stdlib only: both the sweep and the tracking proxy use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = [
    "Interrupted",
    "deferred",
    "importing_natives",
    "in_native_import",
    "in_shield",
    "interrupt",
    "interrupt_again",
    "raise_if_interrupted",
    "reset_interrupts",
    "shielded",
]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` picks the exit code (130 or 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_shield_depth = 0
_native_depth = 0  # inside a framework's import (importing_natives)
# Every signal received in this sweep, kept until the sweep ends (see reset_interrupts).
# A handler's exception can be swallowed: raised while a ``__del__``, a weakref or GC
# callback runs, Python prints "Exception ignored" and carries on, and the sweep ran to its
# end (exit 0). So the signal is also remembered here and raised again at the next
# shielded() exit (every store write, every epoch report, every trial start).
_received: list[int] = []
# A second signal's hard exit, held until the write in progress is whole (an Optuna
# journal write cut there leaves its lock file, and the next run waits 30 s for it).
_pending_exit: list[Callable[[], None]] = []


def interrupt(signum: int) -> None:
    """From a signal handler: raise :class:`Interrupted` now, or after the current write."""
    _received.append(signum)
    if _shield_depth:
        return
    raise Interrupted(signum)


def interrupt_again(exit_now: Callable[[], None]) -> None:
    """From a handler, for a second signal: ``exit_now()`` at once, or right after the write
    in progress (a third signal does not wait)."""
    if _shield_depth and not _pending_exit:
        _pending_exit.append(exit_now)
        return
    exit_now()


def reset_interrupts() -> None:
    """Forget received signals (a new command in this process starts clean)."""
    _received.clear()
    _pending_exit.clear()


def _leave() -> None:
    """Leaving a shielded section: a hard exit that waited for it happens now."""
    if not _shield_depth and _pending_exit:
        _pending_exit[0]()


def in_shield() -> bool:
    """A store write is in progress (:func:`shielded`, :func:`deferred`): another raise
    from a signal handler (a trial's deadline) must wait until it is whole."""
    return _shield_depth > 0


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived (even one whose raise got swallowed)."""
    if _received and not _shield_depth:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run a store write whole; an interrupt that arrives meanwhile is raised right after.

    Also raises a signal received earlier whose raise was swallowed: use it on the sweep's
    forward path only, never while cleaning up after an interrupt.
    """
    global _shield_depth
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        _leave()
    raise_if_interrupted()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Like :func:`shielded`, but raises only a signal that arrived inside the section.

    For writes made on every path, cleanup included (a message to the tracking writer):
    a signal handled before the section is not raised again at its end.
    """
    global _shield_depth
    seen = len(_received)
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        _leave()
    if len(_received) > seen and not _shield_depth:
        raise Interrupted(_received[seen])


@contextlib.contextmanager
def importing_natives() -> Iterator[None]:
    """A framework's import: no exception may be raised from a signal handler inside it.

    Its C++ extensions run Python while they initialise (pybind11 calls back into the
    framework's modules), and an exception raised inside such a callback cannot cross the
    C++ frames: the process aborts (``terminate called after throwing
    'pybind11::error_already_set'``, exit -6). Waiting for the import would take seconds
    (lightning: ~6 s on a busy machine), so the CLI, seeing :func:`in_native_import`,
    exits at once instead (nothing is being written during an import); anywhere else the
    signal is raised as soon as the import is done (:func:`deferred`).
    """
    global _native_depth
    _native_depth += 1
    try:
        with deferred():
            yield
    finally:
        _native_depth -= 1


def in_native_import() -> bool:
    """A framework is being imported (:func:`importing_natives`): do not raise here."""
    return _native_depth > 0
