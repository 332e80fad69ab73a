"""Dynamic vs static, pair by pair: step-time ratio, accuracy delta and the break-even point.

A *paired* trial trained one sampled configuration twice, once per family (MLflow runs that
share the ``protolab.pair`` tag: one ``dynamic``, one ``static``). Pairs are the only fair
comparison, since both jobs saw the same architecture, data, settings and seed.

Break-even step count
---------------------
The static job (XLA) usually pays more before its first optimizer step (tracing and
compilation) and then runs each step faster. The break-even step count is the number of
training steps after which that extra up-front cost has paid for itself::

    extra_start = static.time/first_step_s - dynamic.time/first_step_s      (seconds)
    saved_step  = (dynamic.time/step_ms - static.time/step_ms) / 1000       (seconds per step)

    break_even  = extra_start / saved_step     if saved_step > 0 and extra_start > 0
                = 0                            if extra_start <= 0 and saved_step >= 0
                  (static starts no later and is no slower: ahead from the first step)
                = never (None)                 if saved_step <= 0 otherwise
                  (static is not faster per step, so its extra start is never recovered)

Steps are steady-state median step times (``time/step_ms``), so the count is an estimate of
where the two wall-clock curves cross, not an exact replay. ``time/first_step_s`` of a
worker's first trial pays cold caches and lazy framework set-up (tag
``protolab.cold_start``; the import itself is ``time/import_s``); such pairs are flagged.

Per architecture (``protolab.arch_hash``), several pairs may exist (other train settings);
each input is the median over them and the ratio, delta and break-even are computed from
those medians. The study-wide summary takes medians over the pairs themselves.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ArchComparison",
    "PairComparison",
    "RunRecord",
    "Summary",
    "break_even_steps",
    "by_architecture",
    "format_break_even",
    "pair_runs",
    "pareto_front",
    "summarise",
]


@dataclass(frozen=True)
class RunRecord:
    """One MLflow child run of a sweep trial (one trial on one backend), as the report needs it."""

    run_id: str
    name: str
    trial: int
    backend: str
    family: str  # "dynamic" | "static" | "" when the tag is missing
    state: str  # COMPLETE | PRUNED | FAIL
    pair: str  # "" when the trial ran on one backend only
    arch_hash: str
    cold_start: bool = False
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    script_hash: str = ""  # tag protolab.script_hash: which script version ran ("" unknown)
    config_hash: str = ""  # tag protolab.config_hash: which resolved config ran


def break_even_steps(
    dynamic_first_step_s: float,
    static_first_step_s: float,
    dynamic_step_ms: float,
    static_step_ms: float,
) -> float | None:
    """Training steps after which static's extra up-front cost is paid back; None = never.

    See the module docstring for the formula and its edge cases.
    """
    extra_start = static_first_step_s - dynamic_first_step_s
    saved_step = (dynamic_step_ms - static_step_ms) / 1000.0
    if extra_start <= 0 and saved_step >= 0:
        return 0.0
    if saved_step > 0:
        return extra_start / saved_step
    return None


def format_break_even(steps: float | None) -> str:
    """``never``, ``0`` or a whole number of steps (rounded up: the step where it has paid)."""
    if steps is None or math.isinf(steps):
        return "never"
    return f"{math.ceil(steps):,}"


@dataclass(frozen=True, kw_only=True)
class _Sides:
    """Dynamic vs static figures and what follows from them (pairs and architectures)."""

    step_ms_dynamic: float
    step_ms_static: float
    first_step_s_dynamic: float
    first_step_s_static: float
    compile_s_dynamic: float | None
    compile_s_static: float | None
    metric_dynamic: float | None
    metric_static: float | None
    cold_start: bool

    @property
    def step_ratio(self) -> float:
        """static / dynamic step time: below 1 means static is faster per step."""
        return self.step_ms_static / self.step_ms_dynamic

    @property
    def metric_delta(self) -> float | None:
        """static - dynamic value of the study's metric."""
        if self.metric_dynamic is None or self.metric_static is None:
            return None
        return self.metric_static - self.metric_dynamic

    @property
    def break_even(self) -> float | None:
        return break_even_steps(
            self.first_step_s_dynamic,
            self.first_step_s_static,
            self.step_ms_dynamic,
            self.step_ms_static,
        )


@dataclass(frozen=True, kw_only=True)
class PairComparison(_Sides):
    """The two runs of one paired trial side by side (dynamic first, then static)."""

    trial: int
    pair: str
    arch_hash: str
    dynamic: str  # backend names, e.g. lightning / keras
    static: str


def pair_runs(runs: Iterable[RunRecord], metric: str) -> list[PairComparison]:
    """Match the COMPLETE runs sharing a ``protolab.pair`` tag into dynamic/static pairs.

    A pair needs exactly one complete dynamic and one complete static run with step times and
    times to first step (contract metrics); anything else is not a fair comparison, skipped.
    """
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.pair and run.state == "COMPLETE":
            groups[run.pair].append(run)
    out: list[PairComparison] = []
    for pair, members in groups.items():
        dyn = [r for r in members if r.family == "dynamic"]
        sta = [r for r in members if r.family == "static"]
        if len(dyn) != 1 or len(sta) != 1:
            continue
        d, s = dyn[0], sta[0]
        need = ("time/step_ms", "time/first_step_s")
        if not all(k in r.metrics for k in need for r in (d, s)):
            continue
        if d.metrics["time/step_ms"] <= 0:
            continue
        out.append(
            PairComparison(
                trial=d.trial,
                pair=pair,
                arch_hash=d.arch_hash or s.arch_hash,
                dynamic=d.backend,
                static=s.backend,
                step_ms_dynamic=d.metrics["time/step_ms"],
                step_ms_static=s.metrics["time/step_ms"],
                first_step_s_dynamic=d.metrics["time/first_step_s"],
                first_step_s_static=s.metrics["time/first_step_s"],
                compile_s_dynamic=d.metrics.get("time/compile_s"),
                compile_s_static=s.metrics.get("time/compile_s"),
                metric_dynamic=d.metrics.get(metric),
                metric_static=s.metrics.get(metric),
                cold_start=d.cold_start or s.cold_start,
            )
        )
    return sorted(out, key=lambda p: p.trial)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True, kw_only=True)
class ArchComparison(_Sides):
    """All pairs of one architecture, each input the median over them."""

    arch_hash: str
    trials: tuple[int, ...]


def by_architecture(pairs: Sequence[PairComparison]) -> list[ArchComparison]:
    """One row per ``arch_hash``, in order of its first trial."""
    groups: dict[str, list[PairComparison]] = defaultdict(list)
    for p in pairs:
        groups[p.arch_hash].append(p)
    rows = []
    for arch, ps in groups.items():
        rows.append(
            ArchComparison(
                arch_hash=arch,
                trials=tuple(p.trial for p in ps),
                step_ms_dynamic=statistics.median(p.step_ms_dynamic for p in ps),
                step_ms_static=statistics.median(p.step_ms_static for p in ps),
                first_step_s_dynamic=statistics.median(p.first_step_s_dynamic for p in ps),
                first_step_s_static=statistics.median(p.first_step_s_static for p in ps),
                compile_s_dynamic=_median(p.compile_s_dynamic for p in ps),
                compile_s_static=_median(p.compile_s_static for p in ps),
                metric_dynamic=_median(p.metric_dynamic for p in ps),
                metric_static=_median(p.metric_static for p in ps),
                cold_start=any(p.cold_start for p in ps),
            )
        )
    return sorted(rows, key=lambda r: r.trials[0])


@dataclass(frozen=True)
class Summary:
    """The study's verdict in one line, from medians over pairs."""

    n_pairs: int
    speedup: float  # median over pairs of dynamic/static step time (>1: static faster)
    break_even: float | None  # median over pairs ("never" counts as infinitely many steps)

    @property
    def text(self) -> str:
        if self.speedup >= 1:
            speed = f"static is {self.speedup:.1f}x faster per step"
        else:
            speed = f"static is {1 / self.speedup:.1f}x slower per step"
        speed += f" (median over {self.n_pairs} pair{'s' if self.n_pairs != 1 else ''})"
        if self.break_even is None:
            pays = "compile never pays back (median)"
        elif self.break_even == 0:
            pays = "static is ahead from the first step (median)"
        else:
            pays = f"compile pays back after ~{format_break_even(self.break_even)} steps (median)"
        return f"{speed}; {pays}"


def summarise(pairs: Sequence[PairComparison]) -> Summary | None:
    """Median speed-up and break-even over all pairs; None without pairs."""
    if not pairs:
        return None
    speedup = statistics.median(p.step_ms_dynamic / p.step_ms_static for p in pairs)
    steps = statistics.median(math.inf if p.break_even is None else p.break_even for p in pairs)
    return Summary(len(pairs), speedup, None if math.isinf(steps) else steps)


def pareto_front(step_ms: Sequence[float], values: Sequence[float], maximize: bool) -> list[bool]:
    """Which points no other point beats on both axes (faster step and better metric).

    A point is dominated when another is at least as fast and at least as good, and strictly
    better on one of the two.
    """
    sign = 1.0 if maximize else -1.0
    points = [(s, sign * v) for s, v in zip(step_ms, values, strict=True)]
    front = []
    for i, (s, v) in enumerate(points):
        dominated = any(
            s2 <= s and v2 >= v and (s2 < s or v2 > v)
            for j, (s2, v2) in enumerate(points)
            if j != i
        )
        front.append(not dominated)
    return front
