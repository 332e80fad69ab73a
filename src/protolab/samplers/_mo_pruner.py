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
    "ParetoMedianPruner",
    "ParetoRankPruner",
    "VectorPruner",
    "curve_key",
    "dominates",
    "pareto_fronts",
    "pareto_prune",
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
