"""Small measuring helpers shared by backends (no framework imports here)."""

from __future__ import annotations

import importlib
import resource
import statistics
import sys
import time
from collections.abc import Sequence

__all__ = ["import_timed", "peak_rss_mb", "step_stats"]

_IMPORTED: dict[str, float] = {}


def import_timed(*modules: str) -> tuple[float, bool]:
    """Import ``modules``; return (seconds this process spent importing them, cold start).

    The first call in a process pays the import and is the cold start; later trials in the
    same worker report the same one-off cost with ``cold=False`` so sweeps show both.
    """
    key = ",".join(modules)
    if key in _IMPORTED:
        return _IMPORTED[key], False
    already = all(m in sys.modules for m in modules)
    t0 = time.perf_counter()
    for m in modules:
        importlib.import_module(m)
    _IMPORTED[key] = 0.0 if already else time.perf_counter() - t0
    return _IMPORTED[key], not already


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def step_stats(step_s: Sequence[float]) -> tuple[float, float]:
    """(median, p90) in milliseconds of steady-state step times."""
    if not step_s:
        return float("nan"), float("nan")
    ms = sorted(s * 1000 for s in step_s)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return statistics.median(ms), p90
