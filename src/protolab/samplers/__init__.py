"""Optuna samplers of protolab's own: regularised evolution with recorded lineage.

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

__all__ = [
    "MUTATED_ATTR",
    "PARENT_ATTR",
    "EvolutionSampler",
    "family_tree",
    "format_diff",
    "lineage",
    "mutation_diff",
]
