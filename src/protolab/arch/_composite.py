"""Built-in blocks made of other built-in layers, e.g. the Keras examples' TransformerBlock.

A block is defined once, here, as the sequence of layers it stands for (:meth:`expand`):
shape inference, parameter counts, FLOPs and both native builders follow from that
sequence, so a block can never compute something different on the two frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protolab.arch._base import (
    Layer,
    Shape,
    Traced,
    check_activation,
    check_bool,
    check_int,
    check_rate,
    infer_sequence,
)
from protolab.arch._layers import Dense, Dropout, LayerNorm
from protolab.arch._residual import Residual
from protolab.arch._sequence import MultiHeadAttention
from protolab.errors import ArchError

__all__ = ["Composite", "TransformerBlock"]


def _set(layer: Layer, name: str, value: object) -> None:
    object.__setattr__(layer, name, value)


@dataclass(frozen=True, repr=False)
class _Composite(Layer):
    """A layer that stands for a sequence of built-in layers (private base: not a layer type)."""

    def check(self, shape: Shape) -> None:
        """Raise ShapeError (via ``self._fail``) for an input the block cannot take."""

    def expand(self, shape: Shape) -> tuple[Layer, ...]:
        """The layers this block is, for an input of ``shape``."""
        raise NotImplementedError

    def trace(self, shape: Shape, dtype: str) -> Traced:
        self.check(shape)
        rows, out = infer_sequence(self.expand(shape), shape, dtype)
        return Traced(out, sum(r.params for r in rows), sum(r.flops for r in rows), rows)


Composite = _Composite


@dataclass(frozen=True, repr=False)
class TransformerBlock(_Composite):
    """The Keras example's post-norm ``TransformerBlock(embed_dim, num_heads, ff_dim, rate)``::

        out1 = LayerNorm(x + Dropout(MultiHeadAttention(num_heads, key_dim)(x, x)))
        out  = LayerNorm(out1 + Dropout(Dense(embed_dim)(Dense(ff_dim, activation)(out1))))

    Defaults are the example's: ``key_dim = embed_dim``, relu FFN, LayerNorm epsilon 1e-6.
    The input must be (length, embed_dim).
    """

    embed_dim: int
    num_heads: int
    ff_dim: int
    rate: float = 0.1
    key_dim: int | None = None
    activation: str = "relu"
    epsilon: float = 1e-6
    use_causal_mask: bool = False

    expects: ClassVar[str] = "a (length, embed_dim) input"

    def __post_init__(self) -> None:
        name = "TransformerBlock"
        for field in ("embed_dim", "num_heads", "ff_dim"):
            _set(self, field, check_int(name, field, getattr(self, field)))
        if self.key_dim is not None:
            _set(self, "key_dim", check_int(name, "key_dim", self.key_dim))
        _set(self, "rate", check_rate(name, "rate", self.rate))
        _set(self, "activation", check_activation(name, self.activation, allow_none=False))
        _set(self, "use_causal_mask", check_bool(name, "use_causal_mask", self.use_causal_mask))
        try:
            _set(self, "epsilon", LayerNorm(self.epsilon).epsilon)  # LayerNorm's own rule
        except ArchError as e:
            raise ArchError(f"{name}: {e}".replace("LayerNorm: ", "")) from None

    def check(self, shape: Shape) -> None:
        if len(shape) != 2 or shape[-1] != self.embed_dim:
            raise self._fail(shape, f"a (length, embed_dim={self.embed_dim}) input")

    def expand(self, shape: Shape) -> tuple[Layer, ...]:
        key_dim = self.key_dim if self.key_dim is not None else self.embed_dim
        attention = MultiHeadAttention(
            self.num_heads, key_dim, use_causal_mask=self.use_causal_mask
        )
        return (
            Residual(attention, Dropout(self.rate)),
            LayerNorm(self.epsilon),
            Residual(
                Dense(self.ff_dim, self.activation), Dense(self.embed_dim), Dropout(self.rate)
            ),
            LayerNorm(self.epsilon),
        )
