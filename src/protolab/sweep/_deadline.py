"""``study.trial_timeout_s``: a trial that runs over it is stopped, failed ``timeout``, and the
sweep goes on with the next one.

How: a one-shot ``SIGALRM`` (``signal.setitimer``) armed around the trial in the sweep's
main thread, whose handler raises :class:`TrialTimeout` there. It stops whatever Python is
running: the experiment's builder, a ``@pl.data`` function, a training loop in this
process, a ``time.sleep`` (interrupted at once), or the wait on a mode's worker process
(that process is then killed: sweep/_run.py). A store write in progress is never cut: the
alarm comes back 50 ms later until it is whole (protolab._signals). What it cannot stop:
C code that never returns to Python (a hung native op, a blocking call that retries on
EINTR inside a library); the trial then ends when that call does. Unix only (SIGALRM);
elsewhere, or where a sweep runs outside the main thread, the limit is not applied and the
sweep says so once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from protolab._signals import in_shield

__all__ = ["TIMEOUT", "TrialTimeout", "can_time_trials", "trial_deadline"]

TIMEOUT = "timeout"  # the fail reason (user attr and MLflow tag) of a trial over the limit
_RETRY_S = 0.05  # a store write in progress: look again this much later


class TrialTimeout(BaseException):
    """The trial ran past ``study.trial_timeout_s``.

    A BaseException, as KeyboardInterrupt: a model function's ``except Exception`` does not
    swallow it. Not a KeyboardInterrupt: the sweep fails this trial and goes on (an
    interrupt stops the sweep, and Lightning turns one into ``sys.exit``).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the trial ran over study.trial_timeout_s={seconds:g} s")
        self.seconds = seconds


def can_time_trials() -> bool:
    """Whether this process can bound a trial: SIGALRM exists and this is the main thread."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def trial_deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this (main) thread once ``seconds`` have passed."""
    if seconds is None or not can_time_trials():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if in_shield():  # a write to a store: never cut it
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
            return
        raise TrialTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
