"""Population-based training (Jaderberg et al., 2017) as an Optuna sampler.

Optuna has no PBT because its trials cannot hand model snapshots to one another
(optuna/optuna#287). In protolab every trial is one *segment* of one population member: it
trains ``ready_epochs`` epochs, starting from the weights and optimizer state a previous
segment left in the tracking store. This sampler only decides, for each new trial, which
member it continues and from which segment's state:

* the first ``population_size`` trials start the members (generation 0, params at random);
* then the ready member furthest behind (lowest generation) goes next. If its latest value
  is in the bottom ``truncation`` fraction of the members' latest values, it *exploits*: it
  continues from the state of a member drawn from the top fraction, with that member's
  params, the movable train settings multiplied by a factor drawn from ``perturb``;
  otherwise it continues its own state with its own params.

The architecture never changes within a lineage (weights only fit their own Arch), so a
member that exploits takes its source's architecture along with the weights.

Like :class:`~protolab.samplers.EvolutionSampler`, every decision is stored on the trial as
user attrs in ``before_trial`` (member, generation, the segment it continues), so any
number of workers on one study store share the population; the parent attr is the same as
evolution's, so ``protolab lineage`` prints a member's ancestry. Loading and saving the
state is the sweep's part (``protolab.sweep``), not the sampler's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from protolab._tags import ATTR
from protolab.samplers._base import SeededSampler

__all__ = [
    "DONE_ATTR",
    "EPOCHS_ATTR",
    "EXPLOIT_ATTR",
    "GENERATION_ATTR",
    "INHERITED_ATTR",
    "MEMBER_ATTR",
    "PBTSampler",
]

MEMBER_ATTR = "protolab.pbt_member"  # which member of the population a segment trains
GENERATION_ATTR = "protolab.pbt_generation"  # its segment count: 0 for a member's start
INHERITED_ATTR = "protolab.inherited_from"  # the trial whose saved state it starts from
EXPLOIT_ATTR = "protolab.pbt_exploit"  # True: the state is another member's (and perturbed)
EPOCHS_ATTR = "protolab.pbt_epochs"  # set by the sweep: the member's epochs after this segment
DONE_ATTR = "protolab.pbt_done"  # set by the sweep: the member has trained train.epochs
_PARENT_ATTR = ATTR.PARENT_TRIAL  # evolution's: the lineage commands follow it
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
_SEGMENT_ATTRS = (MEMBER_ATTR, GENERATION_ATTR, INHERITED_ATTR, EXPLOIT_ATTR, _PARENT_ATTR)


def _check(ok: bool, condition: str, got: object) -> None:
    if not ok:
        raise ValueError(f"`{condition}` must hold, but got {got!r}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class PBTSampler(SeededSampler):
    """Population-based training: exploit (truncation selection) and explore (perturb).

    Args:
        population_size: Members trained side by side.
        ready_epochs: Epochs of one segment (the sweep trains each trial this long; the
            sampler accepts it so the study's options are checked in one place).
        truncation: The bottom fraction that copies the top fraction, in (0, 0.5].
        perturb: Factors a movable setting of an exploiting member is multiplied by
            (one drawn per setting), then clipped to its range.
        moves: Params that may move (names as the trial knows them, ``train.lr``);
            default: every numeric ``train.*`` param. The rest is copied as it is.
        seed: Seed for the random number generators.
    """

    def __init__(
        self,
        *,
        population_size: int = 4,
        ready_epochs: int = 1,
        truncation: float = 0.25,
        perturb: Sequence[float] = (0.8, 1.25),
        moves: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        _check(
            _is_int(population_size) and population_size >= 2,
            "population_size >= 2",
            population_size,
        )
        _check(_is_int(ready_epochs) and ready_epochs >= 1, "ready_epochs >= 1", ready_epochs)
        _check(
            _is_number(truncation) and 0 < truncation <= 0.5, "0 < truncation <= 0.5", truncation
        )
        factors = list(perturb) if isinstance(perturb, (list, tuple)) else []
        _check(
            bool(factors) and all(_is_number(f) and f > 0 for f in factors),
            "perturb is a list of factors > 0",
            perturb,
        )
        _check(
            moves is None
            or (isinstance(moves, (list, tuple)) and all(isinstance(m, str) for m in moves)),
            "moves is a list of train setting names",
            moves,
        )
        self.ready_epochs = ready_epochs  # read by the sweep: a segment's epochs
        self._population_size = population_size
        self._truncation = float(truncation)
        self._perturb = [float(f) for f in factors]
        self._moves = None if moves is None else {_param_name(m) for m in moves}
        super().__init__(seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Assign the trial to a member and say which saved state it continues."""
        if len(study.directions) > 1:
            raise ValueError("the pbt sampler ranks members by one objective")
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        members = _members(others)
        origin = trial.user_attrs.get(ATTR.RETRY_OF)
        lost = None if origin is None else next((t for t in others if t.number == origin), None)
        if lost is not None and MEMBER_ATTR in lost.user_attrs:  # a retried segment: the same
            attrs = {k: v for k, v in lost.user_attrs.items() if k in _SEGMENT_ATTRS}
        elif "fixed_params" in trial.system_attrs:  # the user's own params: a new member
            attrs = {MEMBER_ATTR: max(members, default=-1) + 1, GENERATION_ATTR: 0}
        else:
            attrs = self._decide(study, members)
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
            trial.user_attrs[key] = value  # the Trial's cached copy, as Trial.set_user_attr

    def _decide(self, study: Study, members: dict[int, list[FrozenTrial]]) -> dict[str, Any]:
        """This trial's member, generation and source (none: a fresh start).

        Members are compared at the same age (epochs trained): the member furthest behind
        goes next, against every member's segment that ended at its age. Copying a state
        that is further on would age the copy too, and members would use up their
        ``train.epochs`` long before the study its trials.
        """
        fresh = {MEMBER_ATTR: len(members), GENERATION_ATTR: 0}
        if len(members) < self._population_size:
            return fresh
        ready = [m for m, ts in members.items() if _ready(ts)]
        if not ready:  # all running or all done: a new member (the population grows)
            return {**fresh, MEMBER_ATTR: max(members) + 1}
        own_of = {m: _last_complete(ts) for m, ts in members.items()}
        member = min(ready, key=lambda m: (_age(own_of[m]), _generation(members[m][-1]), m))
        own = own_of[member]
        ages = [_age(t) for ts in members.values() for t in ts if t.state == TrialState.COMPLETE]
        if not ages:  # nothing trained yet: start again
            return {**fresh, MEMBER_ATTR: member}
        age = _age(own) if own is not None else min(ages)
        peers = {m: _at_age(ts, age) for m, ts in members.items()}
        ranked = self._ranked(study, {m: t for m, t in peers.items() if t is not None})
        n = len(ranked)
        cut = max(1, math.ceil(n * self._truncation))
        top = [t for t in ranked[:cut] if not t.user_attrs.get(DONE_ATTR)]
        in_top = own is not None and own.number in {t.number for t in top}
        bottom = own is None or own.number in {t.number for t in ranked[n - cut :]}
        pool = top or ([] if own is None else [own])
        if members[member][-1].state != TrialState.COMPLETE and pool:
            # its last segment failed (a NaN, an error): never retry the same settings on the
            # same state; copy a top member (itself, if that is all there is), perturbed
            source, exploit = pool[self._rng.randint(len(pool))], True
        elif bottom and n >= 2 and top and not in_top:
            source, exploit = top[self._rng.randint(len(top))], True
        elif own is not None:
            source, exploit = own, False
        else:  # no state of its own and none to copy: start again
            return {**fresh, MEMBER_ATTR: member}
        return {
            MEMBER_ATTR: member,
            GENERATION_ATTR: _generation(members[member][-1]) + 1,
            _PARENT_ATTR: source.number,
            INHERITED_ATTR: source.number,
            EXPLOIT_ATTR: exploit,
        }

    def _ranked(self, study: Study, latest: dict[int, FrozenTrial]) -> list[FrozenTrial]:
        """Members' latest complete segments, best first (NaN last)."""
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0

        def key(t: FrozenTrial) -> tuple[bool, float, int]:
            value = float(t.values[0]) if t.values else math.nan
            return (math.isnan(value), sign * value if not math.isnan(value) else 0.0, t.number)

        return sorted(latest.values(), key=key)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        source_number = trial.user_attrs.get(INHERITED_ATTR)
        source = None if source_number is None else _trial(study, int(source_number))
        if source is None or param_name not in source.params:
            return self._random_sampler.sample_independent(
                study, trial, param_name, param_distribution
            )
        value = source.params[param_name]
        if trial.user_attrs.get(EXPLOIT_ATTR) and self._movable(param_name, param_distribution):
            factor = self._perturb[self._rng.randint(len(self._perturb))]
            assert isinstance(param_distribution, (FloatDistribution, IntDistribution))
            return _clip(float(value) * factor, param_distribution)
        return value

    def _movable(self, name: str, dist: BaseDistribution) -> bool:
        numeric = isinstance(dist, (FloatDistribution, IntDistribution)) and not dist.single()
        if self._moves is not None:
            return numeric and name in self._moves
        return numeric and name.startswith("train.")


def _param_name(setting: str) -> str:
    """A ``moves`` entry as the trial's param name: ``lr`` and ``train.lr`` alike."""
    return setting if setting.startswith("train.") else f"train.{setting}"


def _clip(x: float, dist: FloatDistribution | IntDistribution) -> float:
    """``x`` within the range, on its step grid (ints: whole numbers)."""
    x = min(max(x, dist.low), dist.high)
    if isinstance(dist, IntDistribution):
        k = round((x - dist.low) / dist.step)
        return int(min(dist.low + k * dist.step, dist.high))
    if dist.step is not None:
        k = round((x - dist.low) / dist.step)
        return float(min(dist.low + k * dist.step, dist.high))
    return float(x)


def _age(t: FrozenTrial | None) -> int:
    """Epochs the segment's member had trained at its end (the sweep records it)."""
    return 0 if t is None else int(t.user_attrs.get(EPOCHS_ATTR, 0))


def _at_age(segments: list[FrozenTrial], age: int) -> FrozenTrial | None:
    """The member's latest complete segment that ended at ``age`` epochs."""
    done = [t for t in segments if t.state == TrialState.COMPLETE and _age(t) == age]
    return done[-1] if done else None


def _generation(t: FrozenTrial) -> int:
    return int(t.user_attrs.get(GENERATION_ATTR, 0))


def _members(trials: Sequence[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    """Each member's segments, oldest first (by generation, then trial number)."""
    out: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if MEMBER_ATTR in t.user_attrs:
            out.setdefault(int(t.user_attrs[MEMBER_ATTR]), []).append(t)
    for segments in out.values():
        segments.sort(key=lambda t: (_generation(t), t.number))
    return out


def _ready(segments: list[FrozenTrial]) -> bool:
    """The member's latest segment has finished, and it has epochs left to train."""
    latest = segments[-1]
    if latest.state not in _FINISHED:
        return False
    done = _last_complete(segments)
    return done is None or not done.user_attrs.get(DONE_ATTR)


def _last_complete(segments: list[FrozenTrial]) -> FrozenTrial | None:
    return next((t for t in reversed(segments) if t.state == TrialState.COMPLETE), None)


def _trial(study: Study, number: int) -> FrozenTrial | None:
    trials = study.get_trials(deepcopy=False)
    if 0 <= number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)
