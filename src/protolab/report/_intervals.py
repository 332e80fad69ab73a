"""Step-time ratios with a 95 % bootstrap interval: how sure the report is that A beats B.

A single ratio of two medians says nothing about noise: the same run can vary 2-4x on a busy
machine. The report therefore resamples what it measured, at every level it has:

1. **epochs within a run** - each run logs one steady-state median step time per epoch
   (``time/epoch_step_ms``); a resample draws that many epochs with replacement and takes
   their median (a run with a single value contributes it unchanged);
2. **repeats within a pair** - ``--repeat K`` re-measures one paired configuration K times,
   interleaved; repeats are drawn with replacement among the pair's repeats;
3. **pairs across the study** - pairs (different sampled configurations) are drawn with
   replacement among the study's pairs.

One measurement's ratio is ``median(a) / median(b)``; a pair's ratio is the geometric mean over
its repeats and the study's the geometric mean over its pairs (ratios average on the log
scale: 2x faster and 2x slower cancel). The interval is the percentile interval of the
log-ratio over ``n_boot`` resamples, so ``ratio(b, a)`` is exactly ``1 / ratio(a, b)`` with the
interval inverted. The RNG is a seeded ``numpy.random.Generator``: the same data always gives
the same report.

With one pair, one repeat and one value per run there is nothing to resample: the interval is
``None`` ("single measurement"), never a misleading zero-width one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["LEVEL", "N_BOOT", "Interval", "Ratio", "ratio_interval"]

N_BOOT = 2000
LEVEL = 0.95

# One measurement: (step-time samples of mode a, samples of mode b), both in ms, all > 0.
Measurement = tuple[Sequence[float], Sequence[float]]


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval ``[low, high]`` at ``level``."""

    low: float
    high: float
    level: float = LEVEL

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def inverted(self) -> Interval:
        return Interval(1.0 / self.high, 1.0 / self.low, self.level)


@dataclass(frozen=True)
class Ratio:
    """Step time of mode a over mode b: below 1, a is faster per step."""

    value: float
    interval: Interval | None  # None: a single measurement, no spread to resample
    n_pairs: int
    n_measurements: int  # (pair, repeat) units

    @property
    def clear(self) -> bool:
        """The interval excludes 1: a real difference, not noise."""
        return self.interval is not None and not self.interval.contains(1.0)

    @property
    def unclear(self) -> bool:
        """The interval crosses 1: "no clear difference"."""
        return self.interval is not None and self.interval.contains(1.0)

    def inverted(self) -> Ratio:
        interval = None if self.interval is None else self.interval.inverted()
        return Ratio(1.0 / self.value, interval, self.n_pairs, self.n_measurements)

    def cell(self) -> str:
        """``0.42 [0.38-0.47]`` (``~`` appended when the interval crosses 1)."""
        if self.interval is None:
            return f"{self.value:.3g}"
        lo, hi = self.interval.low, self.interval.high
        return f"{self.value:.3g} [{lo:.3g}-{hi:.3g}]" + (" ~" if self.unclear else "")

    def speedup_text(self) -> str:
        """``2.1x (95% CI 1.9-2.3x)``: how many times faster a is than b, with its interval."""
        return f"{1.0 / self.value:.3g}x ({_ci(self.inverted().interval)})"

    def compare_text(self, a: str, b: str) -> str:
        """``a is 2.1x faster per step than b (95% CI 1.9-2.3x; 4 pairs)``, or "no clear ..."."""
        count = f"{self.n_pairs} pair{'s' if self.n_pairs != 1 else ''}"
        if self.n_measurements != self.n_pairs:
            count += f", {self.n_measurements} measurements"
        if self.unclear:
            return (
                f"no clear difference between {a} and {b}: step time {a}/{b} {self.value:.3g}x, "
                f"{_ci(self.interval)} crosses 1 ({count})"
            )
        if self.value <= 1.0:
            fast = self.inverted()
            return (
                f"{a} is {fast.value:.3g}x faster per step than {b} ({_ci(fast.interval)}; {count})"
            )
        return f"{a} is {self.value:.3g}x slower per step than {b} ({_ci(self.interval)}; {count})"


def _ci(interval: Interval | None) -> str:
    if interval is None:
        return "single measurement, no interval"
    return f"{interval.level:.0%} CI {interval.low:.3g}-{interval.high:.3g}x"


def _boot_medians(
    samples: Sequence[float], n_boot: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """``n_boot`` medians of ``samples`` resampled with replacement (shape ``(n_boot,)``)."""
    import numpy as np

    x = np.asarray(samples, dtype=float)
    if x.size == 1:
        return np.full(n_boot, x[0])
    picks = rng.integers(0, x.size, size=(n_boot, x.size))
    return np.median(x[picks], axis=1)


def _resample_mean(
    rows: NDArray[np.float64], n_boot: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Per resample b, the mean of ``rows[i, b]`` over rows drawn with replacement."""
    import numpy as np

    k = rows.shape[0]
    if k == 1:
        return rows[0]
    picks = rng.integers(0, k, size=(n_boot, k))
    return rows[picks, np.arange(n_boot)[:, None]].mean(axis=1)


def _log_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    import statistics

    return math.log(statistics.median(a)) - math.log(statistics.median(b))


def _has_spread(pairs: Sequence[Sequence[Measurement]]) -> bool:
    if len(pairs) > 1 or any(len(p) > 1 for p in pairs):
        return True
    return any(len(a) > 1 or len(b) > 1 for p in pairs for a, b in p)


def _check(pairs: Sequence[Sequence[Measurement]]) -> None:
    if not pairs or any(not p for p in pairs):
        raise ValueError("a ratio needs at least one pair, each with at least one measurement")
    for p in pairs:
        for a, b in p:
            if not a or not b or min(min(a), min(b)) <= 0 or not all(map(math.isfinite, [*a, *b])):
                raise ValueError("step times must be finite and > 0 in every measurement")


def ratio_interval(
    pairs: Sequence[Sequence[Measurement]],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Ratio:
    """Geometric-mean step-time ratio a/b over ``pairs`` and its bootstrap interval.

    ``pairs[i]`` holds the measurements (repeats) of pair i, each ``(samples_a, samples_b)``:
    the per-epoch step times of the two modes in that measurement. See the module docstring.
    """
    import numpy as np

    _check(pairs)
    point = sum(sum(_log_ratio(a, b) for a, b in p) / len(p) for p in pairs) / len(pairs)
    n_units = sum(len(p) for p in pairs)
    if not _has_spread(pairs):
        return Ratio(math.exp(point), None, len(pairs), n_units)
    rng = np.random.default_rng(seed)
    per_pair = []
    for p in pairs:
        rows = np.stack(
            [
                np.log(_boot_medians(a, n_boot, rng)) - np.log(_boot_medians(b, n_boot, rng))
                for a, b in p
            ]
        )
        per_pair.append(_resample_mean(rows, n_boot, rng))
    study = _resample_mean(np.stack(per_pair), n_boot, rng)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(study, [alpha, 1.0 - alpha])
    return Ratio(math.exp(point), Interval(math.exp(lo), math.exp(hi), level), len(pairs), n_units)
