"""Pruning for studies with several objectives: Pareto rank at the same epoch.

Optuna's ``trial.report`` and ``should_prune`` take one float, so a multi-objective study
has no pruning (optuna/optuna#3450). Here each epoch's *vector* of objective values is
stored on the trial as the user attr ``protolab.curve.<epoch>`` (a JSON list, ``null`` for
an objective the epoch does not measure), so every worker on the study's storage reads it.

The rule (:func:`pareto_prune`) generalises Optuna's percentile pruner. In one dimension
"worse than the median" is "more than half of the other trials are better"; with several
objectives "better" becomes "in a strictly better Pareto front" (non-dominated sorting of
the vectors every trial recorded at that epoch). A plain dominance count ("dominated by at
least half of them") would be the other reading, but in two dimensions only ~15 % of
independent points are dominated by half of the rest (the area ``u*v >= 1/2`` of the unit
square), against 50 % in one: it would hardly prune. Ranks by fronts keep the share
pruned close to what the same option prunes with one objective. docs: README "Pruners".

``pareto`` (:class:`OptimisticParetoPruner`, :func:`optimistic_prune`) asks what the
hypervolume asks instead: can this trial still reach the front? Ranks compare trials at the
same epoch, so a slow-learning but fast model (behind in accuracy now, on the front later)
is pruned as readily as a slow one that will never be there. This rule moves the trial's
vector by a quantile (``optimism``) of the gains that finished trials made from this epoch
to their end, and prunes only when even that is dominated by a finished trial: step time
hardly moves after epoch 1, so slow models stop early; accuracy still rises, so fast ones
go on. The defaults (``optimism`` 0.45, just under the median finisher's gain, and two
dominators) were chosen by replaying recorded curves of 12 unpruned studies (seeds 20-31)
and then run once on 15 fresh seeds (40-54): 0.984x of the unpruned hypervolume for 0.58x
of its epochs (README "Pruners"). 0.9 kept the front but pruned too little (0.91x epochs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from optuna.pruners import BasePruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "CURVE_ATTR",
    "ObjectiveThresholdPruner",
    "OptimisticParetoPruner",
    "ParetoMedianPruner",
    "ParetoRankPruner",
    "VectorPruner",
    "curve_key",
    "dominates",
    "optimistic_prune",
    "optimistic_vector",
    "pareto_fronts",
    "pareto_prune",
    "upper_quantile",
]

CURVE_ATTR = "protolab.curve."
"""Trial user-attr prefix: ``protolab.curve.<epoch>`` -> that epoch's objective vector."""

Vector = Sequence[float | None]


class VectorPruner(Protocol):
    """What the sweep's epoch hook asks: does trial ``number`` stop at ``epoch``?"""

    def prune_vector(self, study: Study, number: int, epoch: int, vector: Vector) -> bool: ...


def curve_key(epoch: int) -> str:
    return f"{CURVE_ATTR}{epoch}"


def _known(v: Vector) -> bool:
    return all(x is not None and math.isfinite(x) for x in v)


def dominates(a: Vector, b: Vector, maximize: Sequence[bool]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one.

    A vector with an unknown entry (None, NaN) neither dominates nor is dominated: the
    rule must not prune on a value it does not have.
    """
    if not (_known(a) and _known(b)):
        return False
    better = False
    for x, y, up in zip(a, b, maximize, strict=True):
        gain = (x - y) if up else (y - x)  # type: ignore[operator]
        if gain < 0:
            return False
        better = better or gain > 0
    return better


def pareto_fronts(vectors: Sequence[Vector], maximize: Sequence[bool]) -> list[int]:
    """Each vector's front by non-dominated sorting: 0 is the Pareto front, 1 the front
    once 0 is removed, and so on (O(n^2) per front: a study holds hundreds, not millions)."""
    front = [-1] * len(vectors)
    left = set(range(len(vectors)))
    rank = 0
    while left:
        top = {
            i for i in left if not any(dominates(vectors[j], vectors[i], maximize) for j in left)
        }
        for i in top:
            front[i] = rank
        left -= top
        rank += 1
    return front


def pareto_prune(
    vector: Vector, others: Sequence[Vector], maximize: Sequence[bool], fraction: float
) -> bool:
    """True when more than ``fraction`` of ``others`` lie in strictly better fronts than
    ``vector`` (fronts of ``others`` plus ``vector``). Unknown entries never prune."""
    known = [o for o in others if _known(o)]
    if not known or not _known(vector):
        return False
    fronts = pareto_fronts([*known, vector], maximize)
    mine = fronts[-1]
    better = sum(f < mine for f in fronts[:-1])
    return better > fraction * len(known)


def _maximize(study: Study) -> list[bool]:
    return [d == StudyDirection.MAXIMIZE for d in study.directions]


def _last_curve(trial: FrozenTrial) -> tuple[int, list[float | None]] | None:
    epochs = [
        int(k[len(CURVE_ATTR) :])
        for k in trial.user_attrs
        if k.startswith(CURVE_ATTR) and k[len(CURVE_ATTR) :].isdigit()
    ]
    if not epochs:
        return None
    return max(epochs), list(trial.user_attrs[curve_key(max(epochs))])


class _CurvePruner(BasePruner):
    """Optuna's pruner API over the objective vectors the sweep records per epoch: a
    subclass says only whether a vector stops its trial (``prune_vector``)."""

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """The trial's last recorded epoch vector, judged by ``prune_vector``."""
        last = _last_curve(trial)
        return last is not None and self.prune_vector(study, trial.number, *last)

    def prune_vector(self, study: Study, number: int, epoch: int, vector: Vector) -> bool:
        raise NotImplementedError


class ParetoRankPruner(_CurvePruner):
    """Prune a trial whose objective vector at an epoch is behind most of the trials that
    recorded the same epoch, by Pareto fronts (:func:`pareto_prune`).

    ``percentile`` keeps the top share, as Optuna's ``PercentilePruner`` does with one
    objective: 25 prunes a trial when more than 25 % of the others are in better fronts.
    The others are every COMPLETE, PRUNED or RUNNING trial that recorded this epoch: a
    recorded epoch never changes, so a running trial on another worker counts as soon as
    it got there. Judged only once ``n_startup_trials`` are COMPLETE, after
    ``n_warmup_steps`` epochs, and with at least ``n_min_trials`` others at that epoch.
    """

    def __init__(
        self,
        percentile: float = 25.0,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 1,
        n_min_trials: int = 1,
    ) -> None:
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100, but got {percentile}")
        for name, n in (
            ("n_startup_trials", n_startup_trials),
            ("n_warmup_steps", n_warmup_steps),
            ("n_min_trials", n_min_trials),
        ):
            if int(n) != n or n < (1 if name == "n_min_trials" else 0):
                raise ValueError(f"{name} must be an integer >= {int(name == 'n_min_trials')}")
        self.fraction = percentile / 100.0
        self.n_startup_trials, self.n_warmup_steps = int(n_startup_trials), int(n_warmup_steps)
        self.n_min_trials = int(n_min_trials)

    def prune_vector(self, study: Study, number: int, epoch: int, vector: Vector) -> bool:
        """Whether trial ``number``, at ``epoch`` with ``vector``, stops here."""
        if epoch <= self.n_warmup_steps:
            return False
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        trials = study.get_trials(deepcopy=False, states=states)
        if sum(t.state == TrialState.COMPLETE for t in trials) < self.n_startup_trials:
            return False
        key = curve_key(epoch)
        others = [t.user_attrs[key] for t in trials if t.number != number and key in t.user_attrs]
        if len(others) < self.n_min_trials:
            return False
        return pareto_prune(vector, others, _maximize(study), self.fraction)


class ParetoMedianPruner(ParetoRankPruner):
    """``median`` with several objectives: :class:`ParetoRankPruner` at the 50th percentile."""

    def __init__(
        self, n_startup_trials: int = 3, n_warmup_steps: int = 1, n_min_trials: int = 1
    ) -> None:
        super().__init__(50.0, n_startup_trials, n_warmup_steps, n_min_trials)


class ObjectiveThresholdPruner(_CurvePruner):
    """``threshold`` with several objectives: a bound per objective metric, on its bad side
    (below it for a maximised objective, above it for a minimised one); any one crossed, or
    a NaN, prunes. An objective the epoch does not measure is not judged."""

    def __init__(
        self,
        bounds: Mapping[str, float],
        objectives: Sequence[tuple[str, str]],
        n_warmup_steps: int = 1,
    ) -> None:
        names = [m for m, _ in objectives]
        unknown = [m for m in bounds if m not in names]
        if unknown or not bounds:
            got = repr(unknown[0]) if unknown else "no bound"
            raise ValueError(
                f"threshold with several objectives takes a bound per objective metric "
                f"({', '.join(names)}) and n_warmup_steps, but got {got}"
            )
        self.bounds = [
            (i, float(bounds[m]), d == "maximize")
            for i, (m, d) in enumerate(objectives)
            if m in bounds
        ]
        self.n_warmup_steps = int(n_warmup_steps)

    def prune_vector(self, study: Study, number: int, epoch: int, vector: Vector) -> bool:
        if epoch <= self.n_warmup_steps:
            return False
        for i, bound, up in self.bounds:
            x = vector[i]
            if x is None:
                continue
            if math.isnan(x) or (x < bound if up else x > bound):
                return True
        return False


# --- optimistic dominance (``pareto``) -------------------------------------------------------


def upper_quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, linear between order statistics (numpy's default),
    so ``q = 1`` is the largest gain seen and ``q = 0.5`` the median one."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def optimistic_vector(
    vector: Vector, gains: Sequence[Vector], maximize: Sequence[bool], optimism: float
) -> list[float | None]:
    """``vector`` moved, per objective, by the ``optimism`` quantile of ``gains`` (each
    complete trial's final value minus its value at this epoch, signed so that > 0 is
    better), and never by less than nothing: the trial is judged as if it were about to
    make one of the best late gains a finished trial made. An objective with no known value
    or no known gain stays unknown (None), which never prunes."""
    out: list[float | None] = []
    for j, (x, up) in enumerate(zip(vector, maximize, strict=True)):
        seen = [g for row in gains if (g := _finite(row[j])) is not None]
        now = _finite(x)
        if now is None or not seen:
            out.append(None)
            continue
        gain = max(0.0, upper_quantile(seen, optimism))
        out.append(now + gain if up else now - gain)
    return out


def _gain(at_k: float | None, final: float | None, up: bool) -> float | None:
    """How much better ``final`` is than ``at_k`` in the objective's direction."""
    a, f = _finite(at_k), _finite(final)
    if a is None or f is None:
        return None
    return f - a if up else a - f


def optimistic_prune(
    vector: Vector,
    finished: Sequence[tuple[Vector, Vector]],
    front: Sequence[Vector],
    maximize: Sequence[bool],
    optimism: float = 0.45,
    n_dominators: int = 1,
) -> bool:
    """True when ``vector`` (a trial at epoch k), made optimistic by the gains of
    ``finished`` ((vector at epoch k, final values) of each complete trial), is still
    dominated by at least ``n_dominators`` of ``front`` (complete, feasible trials' final
    values). A hypervolume counts only non-dominated points, so a trial that stays dominated
    even after a finish as good as the finished trials' (at that quantile) adds nothing by
    training on; one fast enough, or still learning fast enough, is kept. No finished
    trial: no gain is known, nothing prunes."""
    if not finished or not front:
        return False
    gains = [
        [_gain(a, f, up) for a, f, up in zip(at_k, final, maximize, strict=True)]
        for at_k, final in finished
    ]
    hope = optimistic_vector(vector, gains, maximize, optimism)
    return sum(dominates(f, hope, maximize) for f in front) >= n_dominators


def _at_epoch(trial: FrozenTrial, epoch: int) -> list[float | None] | None:
    """The trial's objective vector at ``epoch``: its stored curve (several objectives) or,
    with one objective, the value Optuna's ``trial.report`` recorded; None if neither."""
    key = curve_key(epoch)
    if key in trial.user_attrs:
        return list(trial.user_attrs[key])
    if epoch in trial.intermediate_values:
        return [trial.intermediate_values[epoch]]
    return None


def _whole_number(name: str, value: object, least: int) -> int:
    """``value`` as an int, or the one-line reason the config's option is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= least:
        raise ValueError(f"{name} must be an integer >= {least}, but got {value!r}")
    if int(value) != value:
        raise ValueError(f"{name} must be an integer >= {least}, but got {value!r}")
    return int(value)


class OptimisticParetoPruner(_CurvePruner):
    """``pareto``: prune a trial that cannot reach the front even if it finishes well.

    At epoch k the trial's vector is moved by the ``optimism`` quantile (0.45: about the
    median finisher's gain; 0.9 a top-decile one, safer and slower) of the gains the
    COMPLETE trials made from epoch k to their final values, and the trial stops when that
    optimistic vector is dominated by at least ``n_dominators`` complete, feasible trials.
    Two by default: one finished trial's vector carries its own noise (one run's val/acc,
    its step time on a busy machine), and a single lucky point was what cut future front
    members in the replays (benchmarks/mo_pruning.py: on 12 tuning seeds, 1 kept 0.977x of
    the hypervolume, 2 kept 0.988x for 0.57x the epochs). Judged once ``n_startup_trials``
    complete trials recorded epoch k, after ``n_warmup_steps`` epochs: 0 by default, unlike
    the rank rules, because the gains are measured from the same epoch (an epoch 1 that is
    slow or inaccurate for every trial is made up for by the finished trials' larger gains
    from there), and a slow model is best stopped after one epoch. With one objective it is
    the same rule on the values Optuna's ``trial.report`` stores: "its value plus the
    finished trials' gain from here cannot beat the best finished trial"
    (:func:`optimistic_prune`).
    """

    def __init__(
        self,
        optimism: float = 0.45,
        n_dominators: int = 2,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 0,
    ) -> None:
        bad = isinstance(optimism, bool) or not isinstance(optimism, (int, float))
        if bad or not 0.0 <= optimism <= 1.0:
            raise ValueError(f"optimism must be a quantile between 0 and 1, but got {optimism!r}")
        self.optimism = float(optimism)
        self.n_dominators = _whole_number("n_dominators", n_dominators, 1)
        self.n_startup_trials = _whole_number("n_startup_trials", n_startup_trials, 1)
        self.n_warmup_steps = _whole_number("n_warmup_steps", n_warmup_steps, 0)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """Several objectives: the last stored curve; one: the last reported value."""
        last = _last_curve(trial)
        if last is None and trial.last_step is not None:
            last = trial.last_step, [trial.intermediate_values[trial.last_step]]
        return last is not None and self.prune_vector(study, trial.number, *last)

    def prune_vector(self, study: Study, number: int, epoch: int, vector: Vector) -> bool:
        """Whether trial ``number``, at ``epoch`` with ``vector``, stops here."""
        if epoch <= self.n_warmup_steps:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        done = [t for t in done if t.number != number and t.values is not None]
        finished = [(at_k, t.values) for t in done if (at_k := _at_epoch(t, epoch)) is not None]
        if len(finished) < self.n_startup_trials:
            return False
        front = [t.values for t in done if all(v <= 0 for v in t.constraints.values())]
        maximize = _maximize(study)
        return optimistic_prune(vector, finished, front, maximize, self.optimism, self.n_dominators)
