"""Every mode measured, side by side: step-time ratios with intervals, the headline, break-even.

A sweep may run any number of modes (backends) on each sampled configuration. Runs that share
``protolab.pair`` (and ``protolab.repeat``, when a pair was re-measured K times) form one
*measurement*: every COMPLETE run in it with a step time takes part, whatever its family.

- **Matrix**: for each two modes measured together, the step-time ratio row/column with a 95 %
  bootstrap interval (:mod:`protolab.report._intervals`); "no clear difference" when the
  interval crosses 1.
- **Headline**: per pair, the fastest mode of each family (by the pair's median step time),
  then the ratio of those two over the study, with its interval: the fair answer to
  "dynamic or static?" is the best of each, not whichever mode a sweep happened to pick.
- **Break-even** of every other mode against the eager reference (tag ``protolab.eager``), in
  steps and wall seconds, and whether this sweep's trials (``train/steps``) were long enough
  to pay it back. Studies from before the tag was written fall back to the pair's only
  dynamic-family run as the reference.

Nothing here knows a backend by name: modes are ordered by family (``dynamic`` first), the
eager one first within its family, then by name.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from protolab.report._compare import RunRecord, break_even_steps, format_break_even
from protolab.report._intervals import N_BOOT, Measurement, Ratio, ratio_interval

__all__ = [
    "FAMILIES",
    "ArchRow",
    "BreakEven",
    "Comparison",
    "Headline",
    "Mode",
    "ModeTagged",
    "Unit",
    "compare_modes",
    "format_seconds",
    "mode_order",
    "paired_units",
]

FAMILIES = ("dynamic", "static")  # the order families are shown in; others follow by name


def _family_rank(family: str) -> tuple[int, str]:
    return (FAMILIES.index(family), "") if family in FAMILIES else (len(FAMILIES), family)


class ModeTagged(Protocol):
    """A run that says which mode it ran: a sweep's :class:`RunRecord`, a watch rerun."""

    @property
    def backend(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def eager(self) -> bool: ...


def mode_order(runs: Iterable[ModeTagged]) -> list[str]:
    """Backends seen in ``runs``: by family, the eager mode first within it, then by name."""
    family: dict[str, str] = {}
    eager: set[str] = set()
    for r in runs:
        family.setdefault(r.backend, r.family)
        if r.eager:
            eager.add(r.backend)
    return sorted(family, key=lambda b: (_family_rank(family[b]), b not in eager, b))


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(present) if present else None


def _trained_steps(run: RunRecord) -> float | None:
    """Optimizer steps the run trained (``train/steps``; per-epoch count x epochs before it)."""
    steps = run.metrics.get("train/steps")
    if steps is not None:
        return steps
    per_epoch, epochs = run.metrics.get("train/steps_per_epoch"), run.params.get("train.epochs")
    if per_epoch is None or epochs is None:
        return None
    try:
        return per_epoch * float(epochs)
    except ValueError:
        return None


@dataclass(frozen=True)
class Mode:
    """One backend as measured in this study (its COMPLETE runs), for the "modes" table."""

    name: str
    family: str
    description: str  # tag protolab.mode ("" when not recorded)
    eager: bool
    auto: tuple[str, ...]  # the alias picks that chose it (tag protolab.auto)
    n_runs: int
    n_pairs: int
    step_ms: float | None  # medians over its runs
    step_ms_p10: float | None
    step_ms_p90: float | None
    compile_s: float | None
    first_step_s: float | None
    train_steps: float | None
    result_s: float | None = None  # median RunRecord.result_s: a trial's wall time, as run
    trial_s: float | None = None  # median time/trial_s (no import)
    import_s: float | None = None  # median time/import_s (once per process)
    # the persistent compile cache (tag protolab.compile_cache): the median cold compile
    # (misses, cache off, and the cold compile a hit recorded) and warm compile (hits)
    compile_cold_s: float | None = None
    compile_warm_s: float | None = None
    n_warm: int = 0  # runs whose compile the cache served
    n_cached: int = 0  # runs that say hit, miss or off


def _mode(name: str, runs: Sequence[RunRecord]) -> Mode:
    def med(key: str) -> float | None:
        return _median(r.metrics.get(key) for r in runs)

    descriptions = Counter(r.mode for r in runs if r.mode)
    return Mode(
        name=name,
        family=runs[0].family,
        description=descriptions.most_common(1)[0][0] if descriptions else "",
        eager=any(r.eager for r in runs),
        auto=tuple(sorted({r.auto for r in runs if r.auto})),
        n_runs=len(runs),
        n_pairs=len({r.pair for r in runs if r.pair}),
        step_ms=_median(r.step_ms for r in runs),
        step_ms_p10=med("time/step_ms_p10"),
        step_ms_p90=med("time/step_ms_p90"),
        compile_s=med("time/compile_s"),
        first_step_s=med("time/first_step_s"),
        train_steps=_median(_trained_steps(r) for r in runs),
        result_s=_median(r.result_s for r in runs),
        trial_s=med("time/trial_s"),
        import_s=med("time/import_s"),
        compile_cold_s=_median(r.cold_compile_s for r in runs),
        compile_warm_s=_median(r.warm_compile_s for r in runs),
        n_warm=sum(1 for r in runs if r.compile_cache == "hit"),
        n_cached=sum(1 for r in runs if r.compile_cache),
    )


def describe_modes(runs: Iterable[RunRecord]) -> list[Mode]:
    """Every mode with at least one COMPLETE run, in :func:`mode_order`."""
    done = [r for r in runs if r.state == "COMPLETE"]
    by_mode: dict[str, list[RunRecord]] = defaultdict(list)
    for r in done:
        by_mode[r.backend].append(r)
    return [_mode(name, by_mode[name]) for name in mode_order(done)]


def _repeat_key(repeat: str) -> tuple[int, str]:
    return (int(repeat), "") if repeat.isdigit() else (-1, repeat)


@dataclass(frozen=True)
class Unit:
    """One measurement of one pair: its runs, one per mode (``protolab.repeat`` apart)."""

    pair: str
    repeat: str  # "" when the pair was measured once
    trial: int
    arch_hash: str
    runs: Mapping[str, RunRecord]  # backend -> its run
    cold_start: bool = False

    def step_ms(self, mode: str) -> float | None:
        run = self.runs.get(mode)
        return None if run is None else run.step_ms


def paired_units(runs: Iterable[RunRecord]) -> list[Unit]:
    """COMPLETE runs with a step time grouped by (pair, repeat); two modes at least.

    A mode that appears twice in one measurement (a retried job) keeps its first run by
    trial number, so a measurement never compares a mode with itself.
    """
    groups: dict[tuple[str, str], dict[str, RunRecord]] = defaultdict(dict)
    ordered = sorted(runs, key=lambda r: (r.trial, r.run_id))
    for r in ordered:
        if r.pair and r.state == "COMPLETE" and r.step_ms is not None:
            groups[(r.pair, r.repeat)].setdefault(r.backend, r)
    units = []
    for (pair, repeat), members in groups.items():
        if len(members) < 2:
            continue
        first = min(members.values(), key=lambda r: r.trial)
        units.append(
            Unit(
                pair=pair,
                repeat=repeat,
                trial=first.trial,
                arch_hash=next((r.arch_hash for r in members.values() if r.arch_hash), ""),
                runs=dict(members),
                cold_start=any(r.cold_start for r in members.values()),
            )
        )
    return sorted(units, key=lambda u: (u.trial, u.pair, _repeat_key(u.repeat)))


def _by_pair(units: Iterable[Unit]) -> list[list[Unit]]:
    """Units grouped by pair, pairs in order of their first trial (units come sorted)."""
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.pair, []).append(u)
    return list(groups.values())


def _measurements(units: Sequence[Unit], a: str, b: str) -> list[list[Measurement]]:
    """Per pair, the (a, b) step-time samples of each of its measurements with both modes."""
    out: list[list[Measurement]] = []
    for pair in _by_pair(units):
        both: list[Measurement] = [
            (u.runs[a].step_samples, u.runs[b].step_samples) for u in pair if {a, b} <= set(u.runs)
        ]
        if both:
            out.append(both)
    return out


def ratio_matrix(
    units: Sequence[Unit], modes: Sequence[str], n_boot: int = N_BOOT, seed: int = 0
) -> dict[tuple[str, str], Ratio]:
    """``(row, col) -> row/col`` step-time ratio, for every two modes measured together.

    Each unordered couple is resampled once with its own seed (``seed`` + its index) and the
    opposite cell is its exact inverse, so the matrix is antisymmetric on the log scale.
    """
    out: dict[tuple[str, str], Ratio] = {}
    k = 0
    for i, a in enumerate(modes):
        for b in modes[i + 1 :]:
            groups = _measurements(units, a, b)
            if groups:
                ratio = ratio_interval(groups, n_boot=n_boot, seed=seed + k)
                out[(a, b)], out[(b, a)] = ratio, ratio.inverted()
            k += 1
    return out


# -- the headline: best of each family ---------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """Per pair the fastest mode of two families; their step-time ratio over the study."""

    families: tuple[str, str]  # (a, b): ratio is best b / best a (below 1: b is faster)
    ratio: Ratio
    winners: Mapping[str, Mapping[str, int]]  # family -> {mode: pairs where it was fastest}
    points: tuple[tuple[int, float, float], ...] = ()  # per pair: (trial, best a ms, best b ms)

    def label(self, family: str) -> str:
        """``best static (m)`` or ``best static (m in 3 pairs, n in 1)``: who won where."""
        counts = sorted(self.winners[family].items(), key=lambda kv: (-kv[1], kv[0]))
        if len(counts) == 1:
            return f"best {family} ({counts[0][0]})"
        first, *rest = counts
        inner = ", ".join([f"{first[0]} in {first[1]} pairs", *(f"{m} in {n}" for m, n in rest)])
        return f"best {family} ({inner})"

    @property
    def text(self) -> str:
        a, b = self.families
        return self.ratio.compare_text(self.label(b), self.label(a))


def _fastest(pair: Sequence[Unit], family: str) -> str | None:
    """The family's mode with the lowest median step time over the pair's measurements."""
    times: dict[str, list[float]] = defaultdict(list)
    for u in pair:
        for mode, run in u.runs.items():
            if run.family == family and run.step_ms is not None:
                times[mode].append(run.step_ms)
    if not times:
        return None
    return min(sorted(times), key=lambda m: statistics.median(times[m]))


def _best_pair(pair: Sequence[Unit], fa: str, fb: str) -> tuple[str, str, list[Measurement]] | None:
    """The pair's fastest mode of each family and its (b, a) measurements with both."""
    a, b = _fastest(pair, fa), _fastest(pair, fb)
    if a is None or b is None:
        return None
    both: list[Measurement] = [
        (u.runs[b].step_samples, u.runs[a].step_samples) for u in pair if {a, b} <= set(u.runs)
    ]
    return (a, b, both) if both else None


def headline(units: Sequence[Unit], n_boot: int = N_BOOT, seed: int = 0) -> Headline | None:
    """The best-of-each-family comparison of the first two families paired; None without."""
    present = {r.family for u in units for r in u.runs.values() if r.family}
    families = sorted(present, key=_family_rank)
    if len(families) < 2:
        return None
    fa, fb = families[0], families[1]
    groups: list[list[Measurement]] = []
    winners: dict[str, Counter[str]] = {fa: Counter(), fb: Counter()}
    points: list[tuple[int, float, float]] = []
    for pair in _by_pair(units):
        best = _best_pair(pair, fa, fb)
        if best is None:
            continue
        a, b, both = best
        groups.append(both)
        winners[fa][a] += 1
        winners[fb][b] += 1
        ms_b = statistics.median(statistics.median(b_ms) for b_ms, _ in both)
        ms_a = statistics.median(statistics.median(a_ms) for _, a_ms in both)
        points.append((pair[0].trial, ms_a, ms_b))
    if not groups:
        return None
    ratio = ratio_interval(groups, n_boot=n_boot, seed=seed + 7919)  # its own stream
    wins = {f: dict(c) for f, c in winners.items()}
    return Headline((fa, fb), ratio, wins, tuple(points))


# -- break-even against the eager reference ----------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``14.2 s``, ``3.5 min``, ``2.1 h``: a wall time at a glance."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _steps_text(steps: float) -> str:
    return f"{steps:,.0f}" if steps >= 10 else f"{steps:.3g}"


@dataclass(frozen=True)
class BreakEven:
    """Where a mode's wall-clock line crosses the eager reference's, and did trials get there.

    The lines are ``first_step_s + steps * step_ms / 1000`` from the medians over the
    measurements with both modes (the "typical trial"); ``per_unit`` holds each measurement's
    own break-even, and ``paid`` counts those that trained at least that many steps.
    """

    mode: str
    reference: str
    n_units: int
    reference_first_step_s: float
    mode_first_step_s: float
    reference_step_ms: float
    mode_step_ms: float
    trained_steps: float | None  # median train/steps of the measurements
    trained_range: tuple[float, float] | None  # fewest and most steps a measurement trained
    per_unit: tuple[float | None, ...] = ()
    paid: int = 0  # measurements that trained past their own break-even
    known: int = 0  # measurements whose trained steps are known
    # the mode's first step as it is with a cold and with a warm compile cache (None: not
    # known), and the compiles behind them; cached: its runs say hit, miss or off
    cold_first_step_s: float | None = None
    warm_first_step_s: float | None = None
    compile_cold_s: float | None = None
    compile_warm_s: float | None = None
    cached: bool = False
    cache_off: bool = False  # every run compiled without a persistent cache

    @property
    def steps(self) -> float | None:
        return break_even_steps(
            self.reference_first_step_s,
            self.mode_first_step_s,
            self.reference_step_ms,
            self.mode_step_ms,
        )

    def _steps_from(self, first_step_s: float | None) -> float | None:
        if first_step_s is None:
            return None
        return break_even_steps(
            self.reference_first_step_s, first_step_s, self.reference_step_ms, self.mode_step_ms
        )

    @property
    def cold_steps(self) -> float | None:
        """Break-even of a new architecture (a cold compile); None: never, or not known."""
        return self._steps_from(self.cold_first_step_s)

    @property
    def warm_steps(self) -> float | None:
        """Break-even of the next run of an architecture the compile cache holds."""
        return self._steps_from(self.warm_first_step_s)

    @property
    def cache_text(self) -> str:
        """Cold and warm break-even, when the mode's runs say how they compiled ("": no
        compile cache tag, e.g. an eager mode or runs from before the cache)."""
        if not self.cached or self.cold_first_step_s is None:
            return ""
        cold = (
            f"a new architecture (cold compile {format_seconds(self.compile_cold_s or 0.0)}) "
            f"pays back after {format_break_even(self.cold_steps)} steps"
        )
        if self.cache_off:
            return f"{self.mode}: compile cache off, every run compiles cold: {cold}"
        if self.warm_first_step_s is None:
            return (
                f"{self.mode}: {cold}; warm: no run hit the compile cache yet (rerun an "
                "architecture, e.g. --repeat 2, to measure it)"
            )
        warm = format_seconds(self.compile_warm_s or 0.0)
        return (
            f"{self.mode}: {cold}; your next run of this architecture (warm compile {warm}) "
            f"pays back after {format_break_even(self.warm_steps)} steps"
        )

    @property
    def seconds(self) -> float | None:
        """Wall time from trial start at the crossing (None: never)."""
        steps = self.steps
        if steps is None:
            return None
        return self.reference_first_step_s + steps * self.reference_step_ms / 1000.0

    def wall_s(self, steps: float, reference: bool = False) -> float:
        """Wall time after ``steps`` steps on this mode (or the reference), the linear model."""
        if reference:
            return self.reference_first_step_s + steps * self.reference_step_ms / 1000.0
        return self.mode_first_step_s + steps * self.mode_step_ms / 1000.0

    @property
    def verdict(self) -> str:
        """Whether this sweep's trials paid back: ``compile never paid back in this sweep``."""
        if self.known == 0:
            return "trained steps not recorded (train/steps)"
        if self.paid == 0:
            return "compile never paid back in this sweep"
        if self.paid == self.known:
            return "paid back within this sweep's trials"
        return f"paid back in {self.paid} of {self.known} measurements of this sweep"

    @property
    def text(self) -> str:
        """``trials trained ~95 steps; B pays back after 1,172 steps (14.2 s) against A: ...``."""
        steps, ref = self.steps, self.reference
        if steps is None:
            return f"{self.mode} never pays back against {ref}: it is not faster per step"
        if steps == 0:
            return f"{self.mode} is ahead of {ref} from the first step (no extra start-up cost)"
        seconds = self.seconds
        assert seconds is not None
        pays = (
            f"{self.mode} pays back after {format_break_even(steps)} steps "
            f"({format_seconds(seconds)}) against {ref}"
        )
        if self.trained_steps is None:
            return f"{pays}; {self.verdict}"
        return f"trials trained ~{_steps_text(self.trained_steps)} steps; {pays}: {self.verdict}"

    @property
    def lines(self) -> list[str]:
        """:attr:`text`, then the cold and warm break-even when the runs say which they were."""
        return [self.text, *([self.cache_text] if self.cache_text else [])]


def _reference(unit: Unit, tagged: bool) -> RunRecord | None:
    """The measurement's eager run; untagged studies: its only dynamic-family run."""
    if tagged:
        return next((r for r in unit.runs.values() if r.eager), None)
    dynamic = [r for r in unit.runs.values() if r.family == FAMILIES[0]]
    return dynamic[0] if len(dynamic) == 1 else None


def _unit_break_even(ref: RunRecord, run: RunRecord) -> tuple[float | None, float | None] | None:
    """(break-even steps, steps trained) of one measurement; None without first-step times."""
    a, b = ref.metrics.get("time/first_step_s"), run.metrics.get("time/first_step_s")
    if a is None or b is None or ref.step_ms is None or run.step_ms is None:
        return None
    trained = _trained_steps(run)
    return break_even_steps(a, b, ref.step_ms, run.step_ms), trained if trained else _trained_steps(
        ref
    )


def break_evens(units: Sequence[Unit], modes: Sequence[str]) -> list[BreakEven]:
    """Every non-reference mode against the eager reference, in mode order."""
    tagged = any(r.eager for u in units for r in u.runs.values())
    rows: dict[tuple[str, str], list[tuple[RunRecord, RunRecord, float | None, float | None]]]
    rows = defaultdict(list)
    for u in units:
        ref = _reference(u, tagged)
        if ref is None:
            continue
        for mode, run in u.runs.items():
            got = None if mode == ref.backend else _unit_break_even(ref, run)
            if got is not None:
                rows[(mode, ref.backend)].append((ref, run, *got))
    rank = {m: i for i, m in enumerate(modes)}
    return [
        _break_even(mode, ref, rows[(mode, ref)])
        for mode, ref in sorted(rows, key=lambda k: (rank.get(k[0], len(rank)), k[1]))
    ]


def _break_even(
    mode: str, ref: str, rows: Sequence[tuple[RunRecord, RunRecord, float | None, float | None]]
) -> BreakEven:
    trained = [t for *_, t in rows if t is not None]
    paid = sum(1 for *_, steps, t in rows if t is not None and steps is not None and steps <= t)

    def med(values: Iterable[float | None]) -> float:
        found = _median(values)
        assert found is not None  # every row has both first-step times and step times
        return found

    runs = [m for _, m, *_ in rows]
    warm = _median(m.warm_compile_s for m in runs)
    return BreakEven(
        mode=mode,
        reference=ref,
        n_units=len(rows),
        reference_first_step_s=med(r.metrics.get("time/first_step_s") for r, *_ in rows),
        mode_first_step_s=med(m.metrics.get("time/first_step_s") for m in runs),
        reference_step_ms=med(r.step_ms for r, *_ in rows),
        mode_step_ms=med(m.step_ms for m in runs),
        trained_steps=_median(trained),
        trained_range=(min(trained), max(trained)) if trained else None,
        per_unit=tuple(steps for *_, steps, _ in rows),
        paid=paid,
        known=len(trained),
        cold_first_step_s=_median(_first_step(m, m.cold_compile_s) for m in runs),
        warm_first_step_s=_median(_first_step(m, _warm(m, warm)) for m in runs),
        compile_cold_s=_median(m.cold_compile_s for m in runs),
        compile_warm_s=warm,
        cached=any(m.compile_cache for m in runs),
        cache_off=all(m.compile_cache == "off" for m in runs),
    )


def _warm(run: RunRecord, warm_s: float | None) -> float | None:
    """The run's warm compile: its own on a hit; on a miss, the mode's measured one (its
    hits' median); None with the cache off or untagged (no warm compile exists)."""
    if run.compile_cache == "hit":
        return run.warm_compile_s
    return warm_s if run.compile_cache == "miss" else None


def _first_step(run: RunRecord, compile_s: float | None) -> float | None:
    """The run's first step with ``compile_s`` in place of the compile it paid."""
    first, paid = run.metrics.get("time/first_step_s"), run.metrics.get("time/compile_s")
    if compile_s is None or first is None or paid is None:
        return None
    return max(first - paid, 0.0) + compile_s


# -- per architecture, and the whole comparison ------------------------------------------------


@dataclass(frozen=True)
class ArchRow:
    """All measurements of one architecture (``protolab.arch_hash``): medians per mode."""

    arch_hash: str
    trials: tuple[int, ...]
    n_units: int
    step_ms: Mapping[str, float]  # mode -> median step time over the measurements
    metric: Mapping[str, float]  # mode -> median of the study's metric
    cold_start: bool

    @property
    def fastest(self) -> str:
        return min(sorted(self.step_ms), key=lambda m: self.step_ms[m])


def by_architecture(units: Sequence[Unit], metric: str) -> list[ArchRow]:
    """One row per architecture, in order of its first trial."""
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.arch_hash, []).append(u)
    rows = []
    for arch, us in groups.items():
        modes = sorted({m for u in us for m in u.runs})
        step = {m: _median(u.step_ms(m) for u in us) for m in modes}
        value = {
            m: _median(u.runs[m].metrics.get(metric) for u in us if m in u.runs) for m in modes
        }
        rows.append(
            ArchRow(
                arch_hash=arch,
                trials=tuple(sorted({u.trial for u in us})),
                n_units=len(us),
                step_ms={m: v for m, v in step.items() if v is not None},
                metric={m: v for m, v in value.items() if v is not None},
                cold_start=any(u.cold_start for u in us),
            )
        )
    return sorted(rows, key=lambda r: r.trials[0])


@dataclass(frozen=True)
class Comparison:
    """The study's N-mode comparison: what :func:`compare_modes` found."""

    metric: str
    modes: tuple[Mode, ...]  # every mode with a COMPLETE run
    units: tuple[Unit, ...]  # paired measurements
    matrix: Mapping[tuple[str, str], Ratio]
    headline: Headline | None
    break_even: tuple[BreakEven, ...]
    architectures: tuple[ArchRow, ...]

    @property
    def paired(self) -> list[str]:
        """Modes in at least one paired measurement, in mode order."""
        seen = {m for u in self.units for m in u.runs}
        return [m.name for m in self.modes if m.name in seen]

    @property
    def reference(self) -> str | None:
        """The eager reference of the break-even (the most common one)."""
        refs = Counter(b.reference for b in self.break_even for _ in range(b.n_units))
        return refs.most_common(1)[0][0] if refs else None

    @property
    def n_pairs(self) -> int:
        return len({u.pair for u in self.units})

    def vs(self, base: str) -> list[tuple[str, Ratio]]:
        """Every other paired mode's step time over ``base``'s."""
        return [(m, self.matrix[(m, base)]) for m in self.paired if (m, base) in self.matrix]

    @property
    def base(self) -> str | None:
        """What the ratio plot compares against: the reference, else the first paired mode."""
        paired = self.paired
        return self.reference or (paired[0] if paired else None)

    def lines(self) -> list[str]:
        """The verdict: the headline (or each mode against the base), then every break-even."""
        out = []
        if self.headline is not None:
            out.append(self.headline.text)
        elif self.base is not None:
            out += [r.compare_text(m, self.base) for m, r in self.vs(self.base)]
        return out + [line for b in self.break_even for line in b.lines]

    def metrics(self) -> dict[str, float]:
        """Comparison numbers for the study's MLflow parent run (finite values only).

        ``compare/speedup`` (with ``_low``/``_high``, the 95 % interval) is how many times
        faster per step the headline's second family's best mode is than the first's (below
        1: slower); ``compare/step_ratio/<mode>`` each mode's step time over the reference's;
        ``compare/break_even_steps/<mode>`` (absent: never) and
        ``compare/paid_back_frac/<mode>`` the share of measurements that trained past it.
        """
        out: dict[str, float] = {"compare/n_pairs": float(self.n_pairs)}
        if self.headline is not None:
            fast = self.headline.ratio.inverted()
            out["compare/speedup"] = fast.value
            if fast.interval is not None:
                out["compare/speedup_low"] = fast.interval.low
                out["compare/speedup_high"] = fast.interval.high
        base = self.base
        for m, r in self.vs(base) if base else []:
            out[f"compare/step_ratio/{m}"] = r.value
        for b in self.break_even:
            if b.steps is not None:
                out[f"compare/break_even_steps/{b.mode}"] = b.steps
            if b.known:
                out[f"compare/paid_back_frac/{b.mode}"] = b.paid / b.known
            for key, value in _cache_numbers(b).items():
                out[f"compare/{key}/{b.mode}"] = value
        return {k: v for k, v in out.items() if math.isfinite(v)}


def _cache_numbers(b: BreakEven) -> dict[str, float]:
    """The cold and warm compile, and break-even, a mode's cache tags allow (never: absent)."""
    if not b.cached:
        return {}
    found = {
        "compile_cold_s": b.compile_cold_s,
        "compile_warm_s": b.compile_warm_s,
        "break_even_steps_cold": b.cold_steps,
        "break_even_steps_warm": b.warm_steps,
    }
    return {k: v for k, v in found.items() if v is not None}


def compare_modes(
    runs: Sequence[RunRecord], metric: str, n_boot: int = N_BOOT, seed: int = 0
) -> Comparison:
    """Modes, matrix, headline, break-even and per-architecture rows of a study's runs."""
    modes = describe_modes(runs)
    units = paired_units(runs)
    order = [m.name for m in modes]
    return Comparison(
        metric=metric,
        modes=tuple(modes),
        units=tuple(units),
        matrix=ratio_matrix(units, order, n_boot=n_boot, seed=seed),
        headline=headline(units, n_boot=n_boot, seed=seed),
        break_even=tuple(break_evens(units, order)),
        architectures=tuple(by_architecture(units, metric)),
    )
