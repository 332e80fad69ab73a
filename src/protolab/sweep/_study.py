"""Optuna storage, samplers and pruners, resolved from config names through small registries."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from protolab.errors import ConfigError

if TYPE_CHECKING:  # Optuna loads in the functions that use it: never at `import protolab`
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.trial import FrozenTrial, TrialState

    from protolab.samplers import VectorPruner

__all__ = [
    "grid_space",
    "make_pruner",
    "make_sampler",
    "vector_pruner",
]


# name -> (import path of the class, defaults). Options from the config override defaults.
_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "tpe": ("optuna.samplers:TPESampler", {"multivariate": True, "group": True}),
    "random": ("optuna.samplers:RandomSampler", {}),
    "gp": ("optuna.samplers:GPSampler", {}),
    "cmaes": ("optuna.samplers:CmaEsSampler", {"warn_independent_sampling": False}),
    "nsga2": ("optuna.samplers:NSGAIISampler", {}),
    "qmc": ("optuna.samplers:QMCSampler", {"warn_independent_sampling": False}),
    "grid": ("protolab.sweep._study:GridSampler", {}),
    "evolution": ("protolab.samplers:EvolutionSampler", {}),
    # one trial = one member's segment of ready_epochs; its state comes from the store
    "pbt": ("protolab.samplers:PBTSampler", {}),
}
_PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("optuna.pruners:NopPruner", {}),
    # Epoch 1 is never judged: a static job's first epoch is not slower in *value*, but a
    # curve needs two points before "worse than the median" means anything.
    "median": ("optuna.pruners:MedianPruner", {"n_startup_trials": 3, "n_warmup_steps": 1}),
    "percentile": (
        "optuna.pruners:PercentilePruner",
        {"percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 1},
    ),
    # Hyperband: brackets = floor(log_rf(max_resource / min_resource)) + 1, max_resource
    # "auto" = the first finished trial's epochs. For the usual 10-20 epochs, rf 5 makes two
    # brackets: most trials judged at epochs 1 and 5 (top 1/5 go on), the rest first at epoch
    # 5 (Hyperband's hedge for slow starters). Optuna's default rf 3 adds a bracket judged
    # only at epoch 9, which saves almost nothing. Digits MLP, 20 TPE trials x 10 epochs
    # (benchmarks/ `hyperband`), seeds 0-9: rf 5 trained 0.46x the unpruned epochs on average
    # (0.32-0.57 per seed), rf 4 0.55x, rf 3 0.68x (seeds 0-5); best val/acc within 1 point
    # of the unpruned sweep for 9 of 10 seeds (rf 4: 8/10, rf 3: 4/6). Small studies land
    # above Hyperband's ideal (0.31x): the first trial at each rung is always promoted.
    "hyperband": ("optuna.pruners:HyperbandPruner", {"min_resource": 1, "reduction_factor": 5}),
    "successive_halving": ("optuna.pruners:SuccessiveHalvingPruner", {"min_resource": 1}),
    "threshold": ("optuna.pruners:ThresholdPruner", {"n_warmup_steps": 1}),
    # can the trial still beat the best finished one, given the finished trials' late gain?
    # (the same class as with several objectives: README "Pruners")
    "pareto": ("protolab.samplers:OptimisticParetoPruner", {}),
}


def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler, minus its ``study.stop()`` call once the grid is done.

        ``stop()`` only works inside ``study.optimize``; protolab's ask/tell loop asks
        :meth:`is_exhausted` before each trial instead.
        """

        def after_trial(
            self,
            study: optuna.Study,
            trial: FrozenTrial,
            state: TrialState,
            values: Sequence[float] | None,
        ) -> None:
            try:
                super().after_trial(study, trial, state, values)
            except RuntimeError as e:
                if "Study.stop" not in str(e):
                    raise

    return GridSampler


def __getattr__(name: str) -> Any:  # GridSampler is built lazily: it subclasses Optuna's
    if name == "GridSampler":
        return _grid_sampler_class()
    raise AttributeError(name)


def _build(kind: str, table: dict[str, tuple[str, dict[str, Any]]], name: str, **kw: Any) -> Any:
    """Instantiate ``name`` from ``table``; bad options are a ConfigError naming the field."""
    import importlib
    import inspect

    import optuna

    target, defaults = table[name]
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    options = {**defaults, **kw}
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    unknown = [k for k in kw if k not in allowed]
    if unknown:
        raise ConfigError(
            f"study.{kind}_options: unknown option {unknown[0]!r} for {kind} {name!r}; "
            f"allowed: {', '.join(a for a in allowed if a != 'seed')}"
        )
    try:
        with warnings.catch_warnings():  # "experimental" flags of long-stable features
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**{k: v for k, v in options.items() if k in allowed})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"study.{kind}_options for {kind} {name!r}: {e}") from None


def evolution_defaults(options: dict[str, Any], n_trials: int | None) -> dict[str, Any]:
    """Evolution's population sized to the study, so it mutates within ``n_trials``.

    The sampler's own default (a population of 20, random until 20 trials completed)
    never mutates in a study of 20 trials or fewer. Half the study, 2 to 20, is random;
    the rest are children. Options the user gave are kept as given.
    """
    if n_trials is None or "population_size" in options:
        return options
    population = max(2, min(20, n_trials // 2), int(options.get("tournament_size", 0)))
    out = {"population_size": population, **options}
    out.setdefault("tournament_size", min(5, population))
    return out


def evolution_note(options: dict[str, Any], n_trials: int) -> str | None:
    """A warning when the options leave evolution no trial to mutate in (None: fine)."""
    opts = evolution_defaults(options, n_trials)
    startup = int(opts.get("n_startup_trials", opts.get("population_size", 20)))
    if startup < n_trials:
        return None
    return (
        f"evolution samples its first {startup} trials at random (population_size="
        f"{opts.get('population_size', 20)}, n_startup_trials={startup}), and study.n_trials is "
        f"{n_trials}: all {n_trials} trials stay random and none is mutated; lower "
        "study.sampler_options.population_size (or n_startup_trials), or raise study.n_trials"
    )


def make_sampler(
    name: str,
    seed: int,
    options: dict[str, Any] | None = None,
    grid: dict[str, list[Any]] | None = None,
    n_trials: int | None = None,
) -> BaseSampler:
    """The sampler ``name`` seeded with ``seed``; ``grid`` is the search space for ``grid``.

    ``n_trials`` (the study's budget) sizes evolution's default population to the study.
    """
    extra: dict[str, Any] = {"seed": seed}
    if name == "grid":
        extra["search_space"] = grid or {}
    if name == "evolution":
        options = evolution_defaults(dict(options or {}), n_trials)
    return _build("sampler", _SAMPLERS, name, **(options or {}), **extra)


# Several objectives (protolab.samplers, README "Pruners"): median and percentile rank each
# epoch's objective vector by Pareto fronts among the trials that recorded that epoch,
# pareto asks whether an optimistic finish could still reach the finished trials' front,
# threshold takes a bound per objective metric. Which pruners and options are allowed with
# several objectives, and why hyperband and successive halving are not, is a rule in the
# config (config/_model.py: StudyConfig).
_MO_PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("optuna.pruners:NopPruner", {}),
    "median": ("protolab.samplers:ParetoMedianPruner", {}),
    "percentile": ("protolab.samplers:ParetoRankPruner", {"percentile": 25.0}),
    # optimistic dominance: an epoch's vector plus the finished trials' late gain still behind
    # the finished trials' front stops (benchmarks/mo_pruning.py, README "Pruners")
    "pareto": ("protolab.samplers:OptimisticParetoPruner", {}),
}


def make_pruner(
    name: str,
    options: dict[str, Any] | None = None,
    objectives: Sequence[tuple[str, str]] = (),
) -> BasePruner:
    """The pruner ``name``; with several ``objectives`` ((metric, direction) pairs) one
    that judges each epoch's objective vector (:mod:`protolab.samplers`)."""
    if len(objectives) <= 1:
        return _build("pruner", _PRUNERS, name, **(options or {}))
    if name not in (*_MO_PRUNERS, "threshold"):
        raise ConfigError(f"study.pruner: {name!r} cannot prune several objectives")
    if name != "threshold":
        return _build("pruner", _MO_PRUNERS, name, **(options or {}))
    from protolab.samplers import ObjectiveThresholdPruner

    opts = dict(options or {})
    warmup = opts.pop("n_warmup_steps", 1)
    for key, value in {"n_warmup_steps": warmup, **opts}.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"study.pruner_options.{key}: pruner 'threshold' takes a number, but got {value!r}"
            )
    try:
        bounds = {k: float(v) for k, v in opts.items()}
        return ObjectiveThresholdPruner(bounds, objectives, n_warmup_steps=int(warmup))
    except ValueError as e:
        raise ConfigError(f"study.pruner_options for pruner 'threshold': {e}") from None


def vector_pruner(
    name: str, options: dict[str, Any] | None, objectives: Sequence[tuple[str, str]]
) -> VectorPruner | None:
    """What the epoch hook asks with several objectives (None: nothing prunes)."""
    from protolab.samplers import (
        ObjectiveThresholdPruner,
        OptimisticParetoPruner,
        ParetoRankPruner,
    )

    pruner = make_pruner(name, options, objectives)
    judges = (ParetoRankPruner, ObjectiveThresholdPruner, OptimisticParetoPruner)
    return pruner if isinstance(pruner, judges) else None


def grid_space(distributions: dict[str, Any], max_values: int = 256) -> dict[str, list[Any]]:
    """Every value of every declared choice, for the grid sampler (discrete spaces only)."""
    space: dict[str, list[Any]] = {}
    for name, d in distributions.items():
        if d.kind == "choice":
            space[name] = list(d.choices)
            continue
        if d.kind == "float" and not d.step:
            raise ConfigError(
                f"study.sampler: grid needs discrete values, but '{name}' is {d.describe()}; "
                "give it a step (space.float(..., step=0.1)) or use another sampler"
            )
        step = d.step or 1
        count = round((d.high - d.low) / step) + 1
        if count > max_values:
            raise ConfigError(
                f"study.sampler: grid would need {count} values for '{name}' ({d.describe()}); "
                f"at most {max_values} allowed: add a step or use another sampler"
            )
        values = [d.low + i * step for i in range(count)]
        space[name] = [int(v) for v in values] if d.kind == "int" else values
    return space
