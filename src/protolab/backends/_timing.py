"""Small measuring helpers shared by backends (no framework imports here)."""

from __future__ import annotations

import importlib
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protolab._signals import importing_natives

__all__ = ["TrialClock", "import_timed", "peak_rss_mb", "preload", "step_stats"]

_IMPORTED: dict[str, tuple[float, bool]] = {}  # key -> (seconds, imported by us)
_REPORTED: set[str] = set()


def preload(*modules: str) -> None:
    """Import ``modules`` now and remember how long it took (once per process).

    The import runs in :func:`~protolab._signals.importing_natives`: an interrupt raised
    inside a framework's C++ initialisation aborts the process (exit -6) instead of
    stopping it cleanly.
    """
    key = ",".join(modules)
    if key not in _IMPORTED:
        already = all(m in sys.modules for m in modules)
        t0 = time.perf_counter()
        with importing_natives():
            for m in modules:
                importlib.import_module(m)
        _IMPORTED[key] = (0.0, False) if already else (time.perf_counter() - t0, True)


def import_timed(*modules: str) -> tuple[float, bool]:
    """Import ``modules``; return (seconds this process spent importing them, cold start).

    The import happens once per process, here or earlier through :func:`preload` (a sweep
    imports its frameworks while the tracking writer starts). Every job reports that
    one-off cost; only the first job that reports it is the cold start, so sweeps show
    both. Modules someone else had already imported cost 0 and are never cold.
    """
    preload(*modules)
    key = ",".join(modules)
    seconds, ours = _IMPORTED[key]
    cold = ours and key not in _REPORTED
    _REPORTED.add(key)
    return seconds, cold


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def step_stats(step_s: Sequence[float]) -> tuple[float, float, float]:
    """(median, p10, p90) in milliseconds of steady-state step times."""
    if not step_s:
        return float("nan"), float("nan"), float("nan")
    ms = sorted(s * 1000 for s in step_s)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]

    return statistics.median(ms), pct(0.1), pct(0.9)


@dataclass
class TrialClock:
    """The wall-clock bookkeeping of one job, shared so both backends report alike.

    Backends fill in what only they can measure (import, build, compile, first step, the
    steady step samples); the epoch boundaries and the contract's derived figures live here.
    """

    start: float = field(default_factory=time.perf_counter)
    import_s: float = 0.0
    build_s: float = 0.0
    compile_s: float = 0.0
    first_step_s: float = float("nan")
    first_epoch_s: float = float("nan")
    train_s: float = 0.0
    eval_s: float = 0.0
    step_s: list[float] = field(default_factory=list)  # steady-state seconds per step

    def end_epoch(
        self,
        epoch: int,
        metrics: dict[str, float],
        t_epoch: float,
        t_trained: float,
        history: list[dict[str, float]],
        on_epoch: Callable[[int, dict[str, float]], None] | None,
    ) -> None:
        """Close an epoch (training ended at ``t_trained``, evaluation just now)."""
        t_done = time.perf_counter()
        self.train_s += t_trained - t_epoch
        self.eval_s += t_done - t_trained
        metrics["time/epoch_s"] = t_done - t_epoch
        if epoch == 1:
            self.first_epoch_s = t_done - self.start
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    def metrics(self, batch: int) -> dict[str, float]:
        """The contract's time/* and throughput figures."""
        step_ms, step_p10, step_p90 = step_stats(self.step_s)
        return {
            "time/import_s": self.import_s,
            "time/build_s": self.build_s,
            "time/compile_s": self.compile_s,
            "time/first_step_s": self.first_step_s,
            "time/first_epoch_s": self.first_epoch_s,
            "time/step_ms": step_ms,
            "time/step_ms_p10": step_p10,
            "time/step_ms_p90": step_p90,
            "time/train_s": self.train_s,
            "time/eval_s": self.eval_s,
            "time/trial_s": time.perf_counter() - self.start,
            "throughput/samples_per_s": batch / (step_ms / 1000) if step_ms > 0 else 0.0,
            "memory/peak_rss_mb": peak_rss_mb(),
        }
