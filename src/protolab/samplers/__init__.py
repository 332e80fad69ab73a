"""Optuna samplers and pruners of protolab's own: regularised evolution with recorded
lineage; pruning for several objectives by Pareto rank at the same epoch.

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
    ParetoMedianPruner,
    ParetoRankPruner,
    VectorPruner,
    curve_key,
    dominates,
    pareto_fronts,
    pareto_prune,
)

__all__ = [
    "CURVE_ATTR",
    "MUTATED_ATTR",
    "PARENT_ATTR",
    "EvolutionSampler",
    "ObjectiveThresholdPruner",
    "ParetoMedianPruner",
    "ParetoRankPruner",
    "VectorPruner",
    "curve_key",
    "dominates",
    "family_tree",
    "format_diff",
    "lineage",
    "mutation_diff",
    "pareto_fronts",
    "pareto_prune",
]
