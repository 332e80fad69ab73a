"""Optuna samplers and pruners of protolab's own: regularised evolution with recorded
lineage; population-based training (members that inherit each other's trained state);
pruning for several objectives by Pareto rank at the same epoch, or by whether an
optimistic finish could still reach the front (``pareto``).

Importing this package imports Optuna; ``import protolab`` does not import it.
"""

from protolab.samplers._evolution import (
    MUTATED_ATTR,
    PARENT_ATTR,
    EvolutionSampler,
    family_tree,
    format_diff,
    lineage,
    mutation_diff,
)
from protolab.samplers._mo_pruner import (
    CURVE_ATTR,
    ObjectiveThresholdPruner,
    OptimisticParetoPruner,
    ParetoMedianPruner,
    ParetoRankPruner,
    VectorPruner,
    curve_key,
    dominates,
    optimistic_prune,
    optimistic_vector,
    pareto_fronts,
    pareto_prune,
    upper_quantile,
)
from protolab.samplers._pbt import (
    DONE_ATTR,
    EPOCHS_ATTR,
    EXPLOIT_ATTR,
    GENERATION_ATTR,
    INHERITED_ATTR,
    MEMBER_ATTR,
    PBTSampler,
)

__all__ = [
    "CURVE_ATTR",
    "DONE_ATTR",
    "EPOCHS_ATTR",
    "EXPLOIT_ATTR",
    "GENERATION_ATTR",
    "INHERITED_ATTR",
    "MEMBER_ATTR",
    "MUTATED_ATTR",
    "PARENT_ATTR",
    "EvolutionSampler",
    "ObjectiveThresholdPruner",
    "OptimisticParetoPruner",
    "PBTSampler",
    "ParetoMedianPruner",
    "ParetoRankPruner",
    "VectorPruner",
    "curve_key",
    "dominates",
    "family_tree",
    "format_diff",
    "lineage",
    "mutation_diff",
    "optimistic_prune",
    "optimistic_vector",
    "pareto_fronts",
    "pareto_prune",
    "upper_quantile",
]
