"""Sequence layers: token embedding, recurrent cells and self-attention.

Parameter counts follow Keras' defaults, which the torch builder reproduces: a GRU with
``reset_after=True`` (two bias vectors, as ``torch.nn.GRU``), an LSTM with one bias vector
(torch's second one is frozen at zero), attention with biased q/k/v/output projections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protolab.arch._base import INT_DTYPES, Layer, Shape, ShapeError, Traced, check_int
from protolab.errors import ArchError

__all__ = ["GRU", "LSTM", "Embedding", "SelfAttention"]


def _set(layer: Layer, name: str, value: object) -> None:
    object.__setattr__(layer, name, value)


@dataclass(frozen=True, repr=False)
class Embedding(Layer):
    """Maps integer token ids (length,) to vectors (length, dim); must be the first layer."""

    vocab_size: int
    dim: int

    expects: ClassVar[str] = "integer token ids of shape (length,)"

    def __post_init__(self) -> None:
        _set(self, "vocab_size", check_int("Embedding", "vocab_size", self.vocab_size))
        _set(self, "dim", check_int("Embedding", "dim", self.dim))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if dtype not in INT_DTYPES:
            raise ShapeError(
                "needs integer token ids (an integer input dtype, as the first layer), "
                f"but got dtype {dtype}"
            )
        if len(shape) != 1:
            raise self._fail(shape)
        return Traced((*shape, self.dim), self.vocab_size * self.dim)


@dataclass(frozen=True, repr=False)
class _Recurrent(Layer):
    units: int
    return_sequences: bool = False

    gates: ClassVar[int] = 1
    expects: ClassVar[str] = "a (length, features) input"

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, "units", check_int(name, "units", self.units))
        if not isinstance(self.return_sequences, bool):
            raise ArchError(
                f"{name}: `return_sequences` must be a bool, "
                f"but got return_sequences={self.return_sequences!r}"
            )

    def biases(self) -> int:
        raise NotImplementedError

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) != 2:
            raise self._fail(shape)
        length, features = shape
        u, g = self.units, self.gates
        params = g * (features * u + u * u) + self.biases()
        flops = 2 * length * g * (features * u + u * u)
        out = (length, u) if self.return_sequences else (u,)
        return Traced(out, params, flops)


@dataclass(frozen=True, repr=False)
class LSTM(_Recurrent):
    """Keras defaults: tanh/sigmoid, one bias vector, forget-gate bias initialised to 1."""

    gates: ClassVar[int] = 4

    def biases(self) -> int:
        return 4 * self.units


@dataclass(frozen=True, repr=False)
class GRU(_Recurrent):
    """Keras ``reset_after=True`` (== torch.nn.GRU): input and recurrent bias vectors."""

    gates: ClassVar[int] = 3

    def biases(self) -> int:
        return 2 * 3 * self.units


@dataclass(frozen=True, repr=False)
class SelfAttention(Layer):
    """Multi-head self-attention (length, dim) -> (length, dim), like Keras
    ``MultiHeadAttention(num_heads=heads, key_dim=key_dim)(x, x)``: no mask, no dropout."""

    heads: int
    key_dim: int

    expects: ClassVar[str] = "a (length, features) input"

    def __post_init__(self) -> None:
        _set(self, "heads", check_int("SelfAttention", "heads", self.heads))
        _set(self, "key_dim", check_int("SelfAttention", "key_dim", self.key_dim))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) != 2:
            raise self._fail(shape)
        length, dim = shape
        inner = self.heads * self.key_dim
        params = 3 * (dim * inner + inner) + inner * dim + dim
        projections = 2 * length * (3 * dim * inner + inner * dim)
        mixing = 2 * 2 * length * length * inner  # scores q·k and the weighted sum of v
        return Traced(shape, params, projections + mixing)
