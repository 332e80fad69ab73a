"""Regularised ("aging") evolution as an Optuna sampler, plus lineage helpers.

Real et al., "Regularized Evolution for Image Classifier Architecture Search" (AAAI 2019):
keep a population of the most recent models, pick a parent by tournament, copy it with a
small mutation, and let the oldest model (not the worst) leave the population. Aging keeps
the search moving instead of clinging to one lucky early trial.

In Optuna's define-by-run setting a "model" is a trial's params. The parent and the names
chosen to change are decided in ``before_trial`` and stored on the trial as user attrs, so
every worker process sees the same state through the storage; the sampler object holds
nothing but its random number generator.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from protolab._tags import ATTR
from protolab.samplers._base import SeededSampler

__all__ = [
    "MUTATED_ATTR",
    "PARENT_ATTR",
    "EvolutionSampler",
    "family_tree",
    "format_diff",
    "lineage",
    "mutation_diff",
]

PARENT_ATTR = ATTR.PARENT_TRIAL
"""User attr: number of the trial a child was copied from (absent on random/root trials)."""
MUTATED_ATTR = ATTR.MUTATED
"""User attr: sorted names of the parent's params chosen to change in the child."""

_LOCAL_FRACTION = 0.25  # numeric mutations move at most this fraction of the (log-)range
_RETRIES = 32  # redraws before a numeric mutation falls back to a grid neighbour


def _check(ok: bool, condition: str, got: object) -> None:
    if not ok:
        raise ValueError(f"`{condition}` must hold, but got {got!r}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class EvolutionSampler(SeededSampler):
    """Regularised (aging) evolution over a define-by-run search space.

    Each new trial after the start-up phase takes the most recent ``population_size``
    COMPLETE trials (ordered by completion time; PRUNED and FAIL trials never enter),
    samples ``tournament_size`` of them, and copies the best one with ``n_mutations`` of its
    params changed. Params the parent never had (a deeper child asks for a new layer's
    choices) are sampled at random. Numeric params move locally: uniformly within
    ±25 % of their (log-)range around the parent's value; categorical params switch to
    a different choice.

    Multi-objective studies pick the parent at random among the tournament's
    non-dominated trials. Trials created by ``enqueue_trial`` are roots (no parent).

    The parent's number and the mutated names are stored on the child as the user attrs
    ``protolab.parent_trial`` and ``protolab.mutated``; see :func:`lineage`.

    Args:
        population_size: How many of the most recent complete trials can be parents.
        tournament_size: How many population members compete to be the parent.
        n_mutations: How many of the parent's params change per child (fewer when the
            parent has fewer params that can take more than one value).
        n_startup_trials: Trials sampled at random until this many are complete;
            defaults to ``population_size``.
        seed: Seed for the random number generators.
    """

    def __init__(
        self,
        *,
        population_size: int = 20,
        tournament_size: int = 5,
        n_mutations: int = 1,
        n_startup_trials: int | None = None,
        seed: int | None = None,
    ) -> None:
        _check(
            _is_int(population_size) and population_size >= 2,
            "population_size >= 2",
            population_size,
        )
        _check(
            _is_int(tournament_size) and 1 <= tournament_size <= population_size,
            "1 <= tournament_size <= population_size",
            tournament_size,
        )
        _check(_is_int(n_mutations) and n_mutations >= 1, "n_mutations >= 1", n_mutations)
        if n_startup_trials is None:
            n_startup_trials = population_size
        _check(
            _is_int(n_startup_trials) and n_startup_trials >= 0,
            "n_startup_trials >= 0",
            n_startup_trials,
        )
        self._population_size = population_size
        self._tournament_size = tournament_size
        self._n_mutations = n_mutations
        self._n_startup_trials = n_startup_trials
        super().__init__(seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if "fixed_params" in trial.system_attrs:
            return  # an enqueued trial is the user's own starting point, not a child
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete or len(complete) < self._n_startup_trials:
            return
        # Aging: the newest complete trials, whatever their values (heapq: O(n), not a sort).
        population = heapq.nlargest(self._population_size, complete, key=_completion_order)
        size = min(self._tournament_size, len(population))
        picked = [population[i] for i in self._rng.choice(len(population), size, replace=False)]
        parent = self._winner(study, picked)
        mutable = sorted(n for n, d in parent.distributions.items() if not d.single())
        k = min(self._n_mutations, len(mutable))
        mutated = sorted(mutable[i] for i in self._rng.choice(len(mutable), k, replace=False))
        for key, value in ((PARENT_ATTR, parent.number), (MUTATED_ATTR, mutated)):
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
            # ``trial`` is the Trial's cached copy, later passed to sample_independent;
            # keep it in step with the storage as ``Trial.set_user_attr`` does.
            trial.user_attrs[key] = value

    def _winner(self, study: Study, picked: list[FrozenTrial]) -> FrozenTrial:
        """The tournament's best; ``picked`` is in random order, so ties go to chance."""
        if not study._is_multi_objective():
            sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
            return min(picked, key=lambda t: sign * float(t.values[0]))
        signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        scored = [[s * float(v) for s, v in zip(signs, t.values, strict=True)] for t in picked]
        front = [
            t
            for t, a in zip(picked, scored, strict=True)
            if not any(_dominates(b, a) for b in scored)
        ]
        return front[0]

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        parent = _find_parent(study, trial)
        if parent is None or param_name not in parent.params:
            return self._random_sampler.sample_independent(
                study, trial, param_name, param_distribution
            )
        value = parent.params[param_name]
        if not _valid(param_distribution, value):  # the space changed under this name
            return self._random_sampler.sample_independent(
                study, trial, param_name, param_distribution
            )
        if param_name in trial.user_attrs.get(MUTATED_ATTR, ()):
            return self._mutate(value, param_distribution)
        return value

    def _mutate(
        self, value: CategoricalChoiceType, dist: BaseDistribution
    ) -> CategoricalChoiceType:
        """A value of ``dist`` other than ``value`` (unless ``dist`` has just one)."""
        if dist.single():
            return value
        if isinstance(dist, CategoricalDistribution):
            current = dist.to_internal_repr(value)
            others = [i for i in range(len(dist.choices)) if i != current]
            return dist.choices[others[self._rng.randint(len(others))]]
        if isinstance(dist, (IntDistribution, FloatDistribution)):
            # ``_valid`` accepted ``value`` for this numeric distribution: a number
            return self._local_move(cast(float, value), dist)
        raise NotImplementedError(f"{type(dist).__name__} is not supported by EvolutionSampler")

    def _local_move(self, value: float, dist: IntDistribution | FloatDistribution) -> float:
        """A uniform draw in a window of ±25 % of the (log-)range, snapped to the grid.

        The window is cut at the bounds rather than clipped, so a parent at a bound does
        not pile children onto that bound. Snapping can land back on ``value`` when the
        grid is coarse; then redraw, and in the end take a grid neighbour.
        """
        forward, backward = (math.log, math.exp) if dist.log else (float, float)
        lo, hi = forward(dist.low), forward(dist.high)
        half = _LOCAL_FRACTION * (hi - lo)
        a, b = max(lo, forward(value) - half), min(hi, forward(value) + half)
        for _ in range(_RETRIES):
            new = _snap(backward(float(self._rng.uniform(a, b))), dist)
            if new != value:
                return new
        if dist.step is None:  # continuous: the far end of the window is surely different
            return _snap(backward(a if forward(value) - a > b - forward(value) else b), dist)
        neighbours = [
            v for v in (value - dist.step, value + dist.step) if dist.low <= v <= dist.high
        ]
        return _snap(neighbours[self._rng.randint(len(neighbours))], dist)


def _snap(x: float, dist: IntDistribution | FloatDistribution) -> float:
    """``x`` as a value of ``dist``: on its step grid (ints: step 1) and within bounds."""
    if isinstance(dist, IntDistribution):
        k = round((x - dist.low) / dist.step)
        return int(min(max(dist.low + k * dist.step, dist.low), dist.high))
    if dist.step is not None:
        n = round((dist.high - dist.low) / dist.step)
        k = min(max(round((x - dist.low) / dist.step), 0), n)
        return float(min(dist.low + k * dist.step, dist.high))
    return float(min(max(x, dist.low), dist.high))


def _valid(dist: BaseDistribution, value: object) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Minimisation: ``a`` is no worse everywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def _completion_order(t: FrozenTrial) -> tuple[datetime, int]:
    return (t.datetime_complete or datetime.min, t.number)


def _find_parent(study: Study, trial: FrozenTrial) -> FrozenTrial | None:
    """The trial's parent, from the trials cached for this ask (no query per param)."""
    number = trial.user_attrs.get(PARENT_ATTR)
    if number is None:
        return None
    trials = study.get_trials(deepcopy=False)
    return _by_number(trials, number)


def _by_number(trials: Sequence[FrozenTrial], number: int) -> FrozenTrial | None:
    # Storages list a study's trials by number from 0, so the index is a fast first guess.
    if 0 <= number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)


def mutation_diff(
    parent_params: Mapping[str, Any], child_params: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """What changed from parent to child, as ``{name: (old, new)}`` sorted by name.

    A name only the child has maps to ``(None, new)``, one only the parent has to
    ``(old, None)``: in a define-by-run space a changed depth adds or removes layers.
    """
    names = sorted(set(parent_params) | set(child_params))
    return {
        n: (parent_params.get(n), child_params.get(n))
        for n in names
        if n not in parent_params or n not in child_params or parent_params[n] != child_params[n]
    }


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_diff(parent_params: Mapping[str, Any], child_params: Mapping[str, Any]) -> str:
    """The diff as one short line, e.g. ``depth: 2 → 3, +units_2=64``."""
    parts = []
    for name, (old, new) in mutation_diff(parent_params, child_params).items():
        if name not in parent_params:
            parts.append(f"+{name}={_fmt(new)}")
        elif name not in child_params:
            parts.append(f"-{name} (was {_fmt(old)})")
        else:
            parts.append(f"{name}: {_fmt(old)} → {_fmt(new)}")
    return ", ".join(parts) or "(no change)"


def lineage(study: Study, trial_number: int) -> list[int]:
    """Trial numbers from ``trial_number`` back to its root: ``[trial, parent, ..., root]``.

    A root is a trial without a recorded parent (start-up, enqueued, or another sampler's).
    """
    trials = study.get_trials(deepcopy=False)
    if _by_number(trials, trial_number) is None:
        raise ValueError(f"Study {study.study_name!r} has no trial number {trial_number}.")
    chain = [trial_number]
    while True:
        current = _by_number(trials, chain[-1])
        parent = None if current is None else current.user_attrs.get(PARENT_ATTR)
        if parent is None or parent in chain or _by_number(trials, parent) is None:
            return chain
        chain.append(int(parent))


def _describe_value(t: FrozenTrial) -> str:
    if t.state != TrialState.COMPLETE or t.values is None:
        return t.state.name.lower()
    if len(t.values) == 1:
        return _fmt(float(t.values[0]))
    return "[" + ", ".join(_fmt(float(v)) for v in t.values) + "]"


def family_tree(study: Study, trial_number: int | None = None) -> str:
    """The ancestry of a trial (default: the best), root first, one generation a line.

    The root shows all its params; each later generation its value and what changed from
    its parent, so the path to a good architecture reads top to bottom::

        gen  trial  value  change
          0  #3     0.81   (root) act=relu, depth=2, width=64
          1  #25    0.85   depth: 2 → 3, +width_2=128
          2  #41    0.87   act: relu → gelu

    An ancestry is a chain, not a branching tree, so generations share one indent:
    lineages dozens of generations deep stay readable.
    """
    if trial_number is None:
        trial_number = study.best_trial.number
    trials = study.get_trials(deepcopy=False)
    chain = [_by_number(trials, n) for n in reversed(lineage(study, trial_number))]
    rows: list[tuple[str, str, str, str]] = []
    previous: FrozenTrial | None = None
    for gen, t in enumerate(chain):
        assert t is not None
        if previous is None:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
            change = f"(root) {params}".rstrip()
        else:
            change = format_diff(previous.params, t.params)
        rows.append((str(gen), f"#{t.number}", _describe_value(t), change))
        previous = t
    header = ("gen", "trial", "value", "change")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    return "\n".join(
        f"{g:>{widths[0]}}  {n:<{widths[1]}}  {v:<{widths[2]}}  {c}".rstrip()
        for g, n, v, c in [header, *rows]
    )
