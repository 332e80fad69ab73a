"""The answer, end to end: which mode gives a result first, how much faster per step the
fastest is and when it overtakes, whether its accuracy matches the reference's, and where.

A study's first question is "which mode gets me a trained model first?", not "which step is
fastest": a compiled mode that steps 5x faster but compiles for seconds loses every short
trial. The verdict therefore says, for the trials as they ran (:func:`answer`):

1. **Result first** - per mode, the median wall seconds a trial took to give its result
   (:attr:`RunRecord.result_s`: build, compile, training and evaluation, plus the framework
   import on a process's first trial), over the paired measurements; ``first_to_result`` is
   the mode with the smallest among those that pass the accuracy parity check.
2. **Per step** - the best of each family against each other with its 95 % interval (or the
   fastest mode against the reference), as :mod:`protolab.report._modes` computes it.
3. **Overtakes** - the fastest-per-step mode's break-even against the reference, with a 95 %
   bootstrap interval over the measurements (each resample recomputes the break-even from
   the medians, as the point estimate does), and whether these trials got that far.
4. **Accuracy parity** - per mode, the paired difference of the study's metric against the
   reference on the same sampled architectures (mode minus reference, mean over pairs, a 95 %
   bootstrap interval over pairs). A mode whose whole interval lies beyond the tolerance
   (:data:`PARITY_TOLERANCE` in objective units for scores in [0, 1], else that fraction of
   the reference's median magnitude) trains a different model: it **fails**, is flagged, and
   is never crowned first to result or fastest per step. With one pair there is no interval
   and parity is not checked (``passes`` is None).
5. **Machine and versions** - the platform, each mode's device and thread tags, and the
   package versions the runs were tagged with (``protolab.env.*``).

Nothing here names a backend: modes, families and versions all come from the runs' tags.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protolab._format import sig3
from protolab.report._compare import break_even_steps, format_break_even
from protolab.report._intervals import LEVEL, N_BOOT, Interval, Ratio
from protolab.report._modes import BreakEven, Comparison, Unit, format_seconds

__all__ = [
    "PARITY_TOLERANCE",
    "Answer",
    "Overtake",
    "Parity",
    "ResultTime",
    "answer",
    "verdict_lines",
]

PARITY_TOLERANCE = 0.01
# Tagged versions the verdict's text leaves out (report.json keeps them): the sweep's own
# machinery, which times nothing a mode runs.
_QUIET_VERSIONS = frozenset({"optuna", "mlflow", "scikit-learn", "git_commit", "git_dirty"})
_MACHINE_KEYS = frozenset({"platform", "device"})


@dataclass(frozen=True)
class ResultTime:
    """How long one mode's trials took to give their result, as they ran."""

    mode: str
    seconds: float  # median RunRecord.result_s over its paired runs
    trial_s: float | None  # median time/trial_s (the import left out)
    import_s: float | None  # median time/import_s (paid once per process)
    n_runs: int
    first_in: int  # measurements in which this mode's result came first


@dataclass(frozen=True)
class Parity:
    """One mode's paired metric gap against the reference (mode minus reference)."""

    mode: str
    reference: str
    metric: str
    n_pairs: int
    mean_gap: float
    max_gap: float  # the largest |gap| of a single pair
    interval: Interval | None  # None: one pair, nothing to resample
    tolerance: float

    @property
    def passes(self) -> bool | None:
        """False when the whole interval lies beyond the tolerance; None: not checked."""
        if self.interval is None:
            return None
        beyond = self.interval.low > self.tolerance or self.interval.high < -self.tolerance
        return not beyond

    @property
    def cell(self) -> str:
        """``m -0.004 (95% CI -0.012 to +0.003) ok``, ``... FAILS``, ``... not checked``."""
        gap = f"{self.mode} {self.mean_gap:+.3g}"
        if self.interval is None:
            return f"{gap} (one pair: not checked)"
        ci = f"{self.interval.level:.0%} CI {self.interval.low:+.3g} to {self.interval.high:+.3g}"
        return f"{gap} ({ci}) {'ok' if self.passes else 'FAILS'}"


@dataclass(frozen=True)
class Overtake:
    """Where the fastest-per-step mode's wall-clock line crosses the reference's."""

    even: BreakEven
    interval: tuple[float, float | None] | None  # (low, high) steps; high None: never

    @property
    def text(self) -> str:
        b, steps = self.even, self.even.steps
        if steps is None:
            return f"{b.mode} never overtakes {b.reference}: it is not faster per step"
        if steps == 0:
            return f"{b.mode} is ahead of {b.reference} from the first step"
        seconds = b.seconds or 0.0
        ci = ""
        if self.interval is not None:
            low, high = self.interval
            ci = f" ({LEVEL:.0%} CI {format_break_even(low)}-{format_break_even(high)})"
        said = (
            f"{b.mode} overtakes {b.reference} after {format_break_even(steps)} steps{ci}, "
            f"{format_seconds(seconds)} into a trial"
        )
        if b.trained_steps is None:
            return said
        if b.trained_steps >= steps:
            return f"{said}; these trials trained ~{b.trained_steps:,.0f} steps: past it"
        return (
            f"{said}; these trials trained ~{b.trained_steps:,.0f} steps: "
            f"{b.reference} finishes first at this length"
        )


@dataclass(frozen=True)
class Answer:
    """The verdict of one study's comparison: see the module docstring."""

    metric: str
    reference: str
    results: tuple[ResultTime, ...]
    step_text: str
    fastest_step: str | None  # the crowned fastest mode per step (parity not failed)
    step_ratio: Ratio | None  # its step time over the reference's (None: it is the reference)
    overtake: Overtake | None
    parity: tuple[Parity, ...]
    machine: Mapping[str, str]  # platform, and per mode its device and thread tags
    versions: Mapping[str, str]  # package -> version(s) the runs were tagged with

    @property
    def time_to_result(self) -> dict[str, float]:
        return {r.mode: r.seconds for r in self.results}

    @property
    def flagged(self) -> list[str]:
        """Modes that fail the accuracy parity check: never crowned."""
        return [p.mode for p in self.parity if p.passes is False]

    @property
    def first_to_result(self) -> str | None:
        """The mode with the smallest time to result among those not flagged."""
        ok = [r for r in self.results if r.mode not in self.flagged]
        return min(ok, key=lambda r: (r.seconds, r.mode)).mode if ok else None

    def lines(self) -> list[str]:
        """The headline, one sentence each: result first, per step, overtake, parity, where."""
        out = [self._result_line()] if self.results else []  # older runs: no time/trial_s
        out.append(self.step_text)
        if self.overtake is not None:
            out.append(self.overtake.text)
        if self.parity:
            out.append(self._parity_line())
        return [*out, self._machine_line()]

    def _result_line(self) -> str:
        first = self.first_to_result
        if first is None:
            return "no mode passes the accuracy parity check: none is crowned"
        mine = next(r for r in self.results if r.mode == first)
        others = ", ".join(f"{r.mode} {sig3(r.seconds)} s" for r in self.results if r.mode != first)
        said = (
            f"{first} gives a result first: {sig3(mine.seconds)} s median per trial"
            + (f" against {others}" if others else "")
            + f" (build, compile, training, evaluation; first in {mine.first_in} of "
            f"{_count(self.results)} pairs)"
        )
        quicker = [
            r.mode for r in self.results if r.mode in self.flagged and r.seconds < mine.seconds
        ]
        if quicker:
            said += f"; {', '.join(quicker)} quicker but flagged by the parity check"
        return said

    def _parity_line(self) -> str:
        tol = self.parity[0].tolerance
        cells = "; ".join(p.cell for p in self.parity)
        said = (
            f"accuracy parity against {self.reference} ({self.metric}, mode minus reference, "
            f"tolerance ±{tol:.3g}): {cells}"
        )
        if self.flagged:
            said += f"; flagged, not crowned: {', '.join(self.flagged)}"
        return said

    def _machine_line(self) -> str:
        where = [self.machine.get("platform", "platform not recorded")]
        where += [f"{k} {v}" for k, v in self.machine.items() if k != "platform"]
        shown = [f"{k} {v}" for k, v in self.versions.items() if k not in _QUIET_VERSIONS]
        return "measured on " + "; ".join(where) + (f"; {', '.join(shown)}" if shown else "")


def _count(results: Sequence[ResultTime]) -> int:
    return sum(r.first_in for r in results)


# -- result times ------------------------------------------------------------------------------


def result_times(units: Sequence[Unit], modes: Sequence[str]) -> list[ResultTime]:
    """Per mode (in ``modes`` order), its paired runs' median time to result."""
    seconds: dict[str, list[float]] = defaultdict(list)
    first: Counter[str] = Counter()
    for u in units:
        timed = {m: r.result_s for m, r in u.runs.items() if r.result_s is not None}
        for m, s in timed.items():
            seconds[m].append(s)
        if len(timed) == len(u.runs) and len(timed) > 1:
            first[min(sorted(timed), key=lambda m: timed[m])] += 1
    out = []
    for m in modes:
        if not seconds[m]:
            continue
        runs = [u.runs[m] for u in units if m in u.runs]
        out.append(
            ResultTime(
                mode=m,
                seconds=statistics.median(seconds[m]),
                trial_s=_median(r.metrics.get("time/trial_s") for r in runs),
                import_s=_median(r.metrics.get("time/import_s") for r in runs),
                n_runs=len(seconds[m]),
                first_in=first[m],
            )
        )
    return out


def _median(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(found) if found else None


# -- accuracy parity ---------------------------------------------------------------------------


def tolerance(reference_values: Sequence[float]) -> float:
    """:data:`PARITY_TOLERANCE` in objective units for scores in [0, 1], else relative."""
    if reference_values and all(0.0 <= v <= 1.0 for v in reference_values):
        return PARITY_TOLERANCE
    scale = statistics.median(abs(v) for v in reference_values) if reference_values else 0.0
    return PARITY_TOLERANCE * scale if scale > 0 else PARITY_TOLERANCE


def _pair_gaps(
    units: Sequence[Unit], mode: str, ref: str, metric: str
) -> list[tuple[float, float]]:
    """Per pair, (mean gap mode - reference over its repeats, the reference's mean value)."""
    by_pair: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for u in units:
        if mode in u.runs and ref in u.runs:
            a, b = u.runs[mode].metrics.get(metric), u.runs[ref].metrics.get(metric)
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
                by_pair[u.pair].append((a - b, b))
    return [
        (statistics.fmean(g for g, _ in rows), statistics.fmean(v for _, v in rows))
        for rows in by_pair.values()
    ]


def _mean_interval(values: Sequence[float], n_boot: int, seed: int) -> Interval | None:
    """The percentile interval of the mean over ``values`` resampled with replacement."""
    import numpy as np

    if len(values) < 2:
        return None
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - LEVEL) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(lo), float(hi), LEVEL)


def parity(
    units: Sequence[Unit], modes: Sequence[str], ref: str, metric: str, n_boot: int, seed: int
) -> list[Parity]:
    """Every paired mode but the reference, against the reference, on the study's metric."""
    out = []
    for k, mode in enumerate(m for m in modes if m != ref):
        rows = _pair_gaps(units, mode, ref, metric)
        if not rows:
            continue
        gaps = [g for g, _ in rows]
        out.append(
            Parity(
                mode=mode,
                reference=ref,
                metric=metric,
                n_pairs=len(gaps),
                mean_gap=statistics.fmean(gaps),
                max_gap=max(abs(g) for g in gaps),
                interval=_mean_interval(gaps, n_boot, seed + 104729 + k),
                tolerance=tolerance([v for _, v in rows]),
            )
        )
    return out


# -- overtaking --------------------------------------------------------------------------------


def _crossing_inputs(units: Sequence[Unit], mode: str, ref: str) -> list[tuple[float, ...]]:
    """Per measurement with both: (ref first step s, mode first step s, ref ms, mode ms)."""
    rows: list[tuple[float, ...]] = []
    for u in units:
        a, b = u.runs.get(ref), u.runs.get(mode)
        if a is None or b is None or a.step_ms is None or b.step_ms is None:
            continue
        fa, fb = a.metrics.get("time/first_step_s"), b.metrics.get("time/first_step_s")
        if fa is not None and fb is not None:
            rows.append((fa, fb, a.step_ms, b.step_ms))
    return rows


def overtake_interval(
    rows: Sequence[tuple[float, ...]], n_boot: int, seed: int
) -> tuple[float, float | None] | None:
    """Percentile interval of the break-even of resampled measurements; None: one only.

    A resample that never breaks even counts as infinitely many steps, so a high end of
    ``None`` means "never" is inside the interval.
    """
    import numpy as np

    if len(rows) < 2:
        return None
    x = np.asarray(rows, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, len(rows), size=(n_boot, len(rows)))], axis=1)
    steps = sorted(
        math.inf if (s := break_even_steps(*map(float, m))) is None else s for m in medians
    )
    alpha = (1.0 - LEVEL) / 2.0
    low = steps[math.floor(alpha * (n_boot - 1))]
    high = steps[math.ceil((1.0 - alpha) * (n_boot - 1))]
    return low, (None if math.isinf(high) else high)


# -- per step, machine, and the whole answer ----------------------------------------------------


def _fastest(c: Comparison, ref: str, flagged: Sequence[str]) -> tuple[str | None, Ratio | None]:
    """The crowned fastest mode per step: lowest step-time ratio to the reference."""
    ratios = {m: r for m, r in c.vs(ref) if m not in flagged}
    if not ratios:
        return (ref, None) if ref not in flagged else (None, None)
    best = min(sorted(ratios), key=lambda m: ratios[m].value)
    return (best, ratios[best]) if ratios[best].value < 1.0 else (ref, None)


def _step_text(c: Comparison, ref: str, fastest: str | None, flagged: Sequence[str]) -> str:
    """The per-step sentence with its interval; a flagged family winner is said to be so."""
    if c.headline is not None:
        text = c.headline.text
        crowned = [m for w in c.headline.winners.values() for m in w if m in flagged]
        if crowned:
            text += f"; but {', '.join(sorted(crowned))} fails the accuracy parity check"
        return text
    if fastest is None:
        return "no mode passes the accuracy parity check: none is fastest per step"
    if fastest != ref:
        return c.matrix[(fastest, ref)].compare_text(fastest, ref)
    slower = [(m, r) for m, r in c.vs(ref) if m not in flagged]
    if not slower:
        return f"{ref} is the only mode measured per step"
    m, r = min(slower, key=lambda mr: mr[1].value)
    return r.inverted().compare_text(ref, m)


def _common(values: Iterable[str]) -> str:
    """Every distinct value, the most common first, joined by ``/``."""
    return "/".join(v for v, _ in Counter(values).most_common())


def where_measured(
    units: Sequence[Unit], modes: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(machine, versions): the platform, per mode its device and thread tags; versions."""
    runs = [r for u in units for r in u.runs.values()]
    machine: dict[str, str] = {}
    platform = _common(r.env["platform"] for r in runs if "platform" in r.env)
    if platform:
        machine["platform"] = platform
    for m in modes:
        mine = [r for r in runs if r.backend == m]
        keys = sorted({k for r in mine for k in r.env if k == "device" or k.endswith("_threads")})
        said = [f"{k} {_common(r.env[k] for r in mine if k in r.env)}" for k in keys]
        if said:
            machine[m] = ", ".join(said)
    names = sorted({k for r in runs for k in r.env} - _MACHINE_KEYS)
    versions = {
        k: _common(r.env[k] for r in runs if k in r.env)
        for k in names
        if not k.endswith("_threads")
    }
    return machine, versions


def answer(c: Comparison, n_boot: int = N_BOOT, seed: int = 0) -> Answer | None:
    """The study's verdict from its comparison; None without a paired measurement."""
    ref = c.base
    if ref is None or not c.units:
        return None
    modes, units = c.paired, c.units
    checks = parity(units, modes, ref, c.metric, n_boot, seed)
    flagged = [p.mode for p in checks if p.passes is False]
    fastest, ratio = _fastest(c, ref, flagged)
    even = next((b for b in c.break_even if b.mode == fastest and b.reference == ref), None)
    overtake = None
    if even is not None:
        rows = _crossing_inputs(units, even.mode, ref)
        overtake = Overtake(even, overtake_interval(rows, n_boot, seed + 1299709))
    machine, versions = where_measured(units, modes)
    return Answer(
        metric=c.metric,
        reference=ref,
        results=tuple(result_times(units, modes)),
        step_text=_step_text(c, ref, fastest, flagged),
        fastest_step=fastest,
        step_ratio=ratio,
        overtake=overtake,
        parity=tuple(checks),
        machine=machine,
        versions=versions,
    )


def verdict_lines(c: Comparison, said: Answer | None) -> list[str]:
    """What the report and the parent run say: the answer's headline, then each break-even."""
    if said is None:
        return c.lines()
    return [*said.lines(), *(line for b in c.break_even for line in b.lines)]
