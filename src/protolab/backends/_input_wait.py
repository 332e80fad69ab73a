"""How long a model that trains itself waits for its next batch (``time/data_wait_ms``).

Both frameworks' own loops fetch the next batch between one step's end hook and the next
step's start hook, so that gap is the input wait: its median per step is
``time/data_wait_ms`` and its total over the training time is ``perf/input_bound_frac``.
The first step of each epoch has no previous end in that epoch (validation ran between)
and is not counted. Framework-free: the hooks of each loop call it.
"""

from __future__ import annotations

import statistics
import time

__all__ = ["InputWait"]


class InputWait:
    """Gaps between a step's end and the next step's start, and the epochs' train time."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.train_s = 0.0
        self._end: float | None = None

    def new_epoch(self) -> None:
        """No previous step in this epoch: the next start opens no gap."""
        self._end = None

    def batch_start(self) -> None:
        if self._end is not None:
            # a batch end Keras dispatched on its thread pool may be read late: never < 0
            self.gaps.append(max(0.0, time.perf_counter() - self._end))

    def batch_end(self) -> None:
        self._end = time.perf_counter()

    def trained(self, seconds: float) -> None:
        """One epoch's training time (its steps and their waits), for the fraction."""
        self.train_s += seconds
        self._end = None

    def metrics(self) -> dict[str, float]:
        """The two names, when a gap was measured (a one-step epoch has none)."""
        if not self.gaps or self.train_s <= 0:
            return {}
        return {
            "time/data_wait_ms": statistics.median(self.gaps) * 1e3,
            "perf/input_bound_frac": min(1.0, sum(self.gaps) / self.train_s),
        }
