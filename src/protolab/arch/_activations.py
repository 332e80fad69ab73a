"""The activation names both builders understand.

The registry is deliberately tiny: each name must mean exactly the same function in PyTorch
and in Keras (GELU is the exact erf form on both, leaky ReLU uses Keras' slope of 0.2 on
both, softmax and log_softmax act on the last axis as Keras' defaults), otherwise the two
jobs of a trial would not train the same model.
"""

from __future__ import annotations

__all__ = ["ACTIVATIONS", "ALIASES", "LEAKY_RELU_SLOPE", "canonical_activation"]

#: Canonical names. ``linear`` is the identity (``None`` on layers with an ``activation``).
ACTIVATIONS: tuple[str, ...] = (
    "elu",
    "gelu",
    "leaky_relu",
    "linear",
    "log_softmax",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
)

#: Accepted spellings that mean a canonical name, so equal models hash equal.
ALIASES: dict[str, str] = {"swish": "silu"}

#: Keras' default negative slope; PyTorch's default (0.01) is overridden to match.
LEAKY_RELU_SLOPE = 0.2


def canonical_activation(name: str) -> str | None:
    """Return the canonical spelling of ``name``, or ``None`` when it is unknown."""
    name = ALIASES.get(name, name)
    return name if name in ACTIVATIONS else None
