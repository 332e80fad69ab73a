"""What one run measured, and the break-even arithmetic between two modes of one pair.

A *paired* trial trained one sampled configuration on several modes (MLflow runs that share
the ``protolab.pair`` tag); with ``--repeat K`` a pair is measured K times, interleaved
(tag ``protolab.repeat``). Pairs are the only fair comparison, since every mode saw the same
architecture, data, settings and seed. :mod:`protolab.report._modes` builds the N-mode
comparison from these records.

Break-even step count
---------------------
A compiled mode usually pays more before its first optimizer step (tracing and compilation)
than the eager reference (tag ``protolab.eager``) and then runs each step faster. The
break-even step count is the number of training steps after which that extra up-front cost
has paid for itself::

    extra_start = mode.time/first_step_s - eager.time/first_step_s        (seconds)
    saved_step  = (eager.step_ms - mode.step_ms) / 1000                    (seconds per step)

    break_even  = extra_start / saved_step     if saved_step > 0 and extra_start > 0
                = 0                            if extra_start <= 0 and saved_step >= 0
                  (the mode starts no later and is no slower: ahead from the first step)
                = never (None)                 if saved_step <= 0 otherwise
                  (not faster per step, so its extra start is never recovered)

``step_ms`` is a run's steady-state median step time (:attr:`RunRecord.step_ms`), so the
count is where the two wall-clock lines ``first_step_s + steps * step_ms / 1000`` cross, an
estimate rather than an exact replay. ``time/first_step_s`` of a worker's first trial pays
cold caches and lazy framework set-up (tag ``protolab.cold_start``); such pairs are flagged.

Cold and warm compile
---------------------
A mode with a persistent compile cache tags each run ``protolab.compile_cache``: ``miss``
(a cold compile, now kept), ``hit`` (a warm one; ``time/compile_cold_s`` is the cold compile
an earlier run of the same architecture paid) or ``off`` (no cache: always cold). A study's
runs mix both, so the break-even is computed twice, with the mode's first step as it would
be cold and as it would be warm (``first_step_s - compile_s`` plus the cold or the warm
compile): a new architecture pays back after the cold count; the next run of an
architecture the cache holds pays back after the warm one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CACHE_TAG",
    "RunRecord",
    "break_even_steps",
    "format_break_even",
    "pareto_front",
]

# the run's compile: hit | miss | off (a mode's own tag "compile_cache", as the sweep writes it)
CACHE_TAG = "protolab.compile_cache"
_COLD = ("miss", "off")


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
    mode: str = ""  # tag protolab.mode: how the backend runs the model, for people
    eager: bool = False  # tag protolab.eager == "true": the pair's break-even reference
    repeat: str = ""  # tag protolab.repeat: which of K interleaved re-measurements ("" = one)
    auto: str = ""  # tag protolab.auto: the alias that picked this mode, "alias->backend"
    epoch_step_ms: tuple[float, ...] = ()  # history of time/epoch_step_ms, one per epoch
    # where it ran: the ``protolab.env.*`` tags (versions, platform) without their prefix,
    # ``device`` and the ``*_threads`` tags, as the verdict names the machine and versions
    env: Mapping[str, str] = field(default_factory=dict)
    compile_cache: str = ""  # tag protolab.compile_cache: hit | miss | off ("" not cached)

    @property
    def cold_compile_s(self) -> float | None:
        """The cold compile of this run's architecture: its own on a miss (or with the cache
        off), the recorded one on a hit (``time/compile_cold_s``); None: not known."""
        key = "time/compile_s" if self.compile_cache in _COLD else "time/compile_cold_s"
        value = self.metrics.get(key) if self.compile_cache else None
        return value if value is not None and math.isfinite(value) else None

    @property
    def warm_compile_s(self) -> float | None:
        """What this run paid for a compile the persistent cache served (None: not a hit)."""
        value = self.metrics.get("time/compile_s") if self.compile_cache == "hit" else None
        return value if value is not None and math.isfinite(value) else None

    @property
    def step_samples(self) -> tuple[float, ...]:
        """Per-epoch steady-state step times (ms); the run's single median when not logged.

        Older runs (and runs whose epochs were all warm-up) have no per-epoch history: their
        ``time/step_ms`` stands in as one sample, so they still compare, without spread.
        """
        epochs = tuple(v for v in self.epoch_step_ms if math.isfinite(v) and v > 0)
        if epochs:
            return epochs
        ms = self.metrics.get("time/step_ms")
        return (ms,) if ms is not None and math.isfinite(ms) and ms > 0 else ()

    @property
    def step_ms(self) -> float | None:
        """The run's step time: the median of :attr:`step_samples` (None: not measured)."""
        samples = self.step_samples
        return statistics.median(samples) if samples else None

    @property
    def result_s(self) -> float | None:
        """Wall seconds this run took to give its result, as it ran (None: not measured).

        ``time/trial_s`` (build, compile, training, evaluation) plus, on a process's first
        trial (``protolab.cold_start``), the framework import that trial waited for
        (``time/import_s``): later trials of the process found it done and did not pay it.
        """
        trial = self.metrics.get("time/trial_s")
        if trial is None or not math.isfinite(trial):
            return None
        imported = self.metrics.get("time/import_s", 0.0) if self.cold_start else 0.0
        return trial + (imported if math.isfinite(imported) else 0.0)


def break_even_steps(
    eager_first_step_s: float,
    mode_first_step_s: float,
    eager_step_ms: float,
    mode_step_ms: float,
) -> float | None:
    """Training steps after which a mode's extra up-front cost is paid back; None = never.

    See the module docstring for the formula and its edge cases.
    """
    extra_start = mode_first_step_s - eager_first_step_s
    saved_step = (eager_step_ms - mode_step_ms) / 1000.0
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
