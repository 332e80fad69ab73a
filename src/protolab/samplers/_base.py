"""What protolab's own samplers share: a seeded stream of their own beside Optuna's
``RandomSampler`` for what they draw at random, and no relative (joint) sampling, since
each decides a trial's values from earlier trials one parameter at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

__all__ = ["SeededSampler"]


class SeededSampler(BaseSampler):
    """An independent sampler with its own seeded ``_rng`` and a ``_random_sampler``."""

    def __init__(self, seed: int | None) -> None:
        self._rng = np.random.RandomState(seed)
        # A derived seed: the same seed for both streams would correlate their draws.
        random_seed = None if seed is None else int(self._rng.randint(2**31 - 1))
        self._random_sampler = RandomSampler(seed=random_seed)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}
