"""Sequence layers: token (and position) embeddings, recurrent cells and self-attention.

Parameter counts follow Keras' defaults, which the torch builder reproduces: a GRU with
``reset_after=True`` (two bias vectors, as ``torch.nn.GRU``), an LSTM with one bias vector
(torch's second one is frozen at zero), attention with biased q/k/v/output projections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protolab.arch._base import (
    INT_DTYPES,
    Layer,
    Shape,
    ShapeError,
    Traced,
    check_bool,
    check_initializer,
    check_int,
    check_rate,
)
from protolab.errors import ArchError

__all__ = ["GRU", "LSTM", "Embedding", "MultiHeadAttention", "PositionalEmbedding", "SelfAttention"]


def _set(layer: Layer, name: str, value: object) -> None:
    object.__setattr__(layer, name, value)


@dataclass(frozen=True, repr=False)
class Embedding(Layer):
    """Maps integer token ids (length,) to vectors (length, dim); must be the first layer."""

    vocab_size: int
    dim: int

    expects: ClassVar[str] = "integer token ids of shape (length,)"
    integer_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, "vocab_size", check_int(name, "vocab_size", self.vocab_size))
        _set(self, "dim", check_int(name, "dim", self.dim))

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
class PositionalEmbedding(Embedding):
    """Token embedding plus a learned embedding of each position (0, 1, ...), as the Keras
    example's ``TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)``; ``maxlen``
    defaults to the input length. Both tables use Keras' ``uniform`` (±0.05) init.

    A subclass of :class:`Embedding` on purpose: wherever a leading Embedding keeps integer
    inputs (both builders, the trainers), this one does too.
    """

    maxlen: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.maxlen is not None:
            _set(self, "maxlen", check_int("PositionalEmbedding", "maxlen", self.maxlen))

    def positions(self, shape: Shape) -> int:
        """Rows of the position table: ``maxlen``, or the input length when not given."""
        return self.maxlen if self.maxlen is not None else shape[0]

    def trace(self, shape: Shape, dtype: str) -> Traced:
        out = super().trace(shape, dtype)
        if self.maxlen is not None and shape[0] > self.maxlen:
            raise ShapeError(f"needs at most maxlen={self.maxlen} positions, but got shape {shape}")
        return Traced(out.shape, out.params + self.positions(shape) * self.dim)


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
        return _attention(shape, self.heads, self.key_dim, self.key_dim, True)


@dataclass(frozen=True, repr=False)
class MultiHeadAttention(Layer):
    """Keras' ``MultiHeadAttention`` applied as self-attention, ``layer(x, x)``: argument
    names and defaults are Keras' (``value_dim`` defaults to ``key_dim``; ``dropout`` acts
    on the attention weights while training); ``use_causal_mask`` is the Keras call argument
    (position i attends to positions <= i). Output (length, features), like the input.
    """

    num_heads: int
    key_dim: int
    value_dim: int | None = None
    dropout: float = 0.0
    use_bias: bool = True
    use_causal_mask: bool = False
    kernel_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"

    expects: ClassVar[str] = "a (length, features) input"

    def __post_init__(self) -> None:
        name = "MultiHeadAttention"
        _set(self, "num_heads", check_int(name, "num_heads", self.num_heads))
        _set(self, "key_dim", check_int(name, "key_dim", self.key_dim))
        if self.value_dim is not None:
            _set(self, "value_dim", check_int(name, "value_dim", self.value_dim))
        _set(self, "dropout", check_rate(name, "dropout", self.dropout))
        _set(self, "use_bias", check_bool(name, "use_bias", self.use_bias))
        _set(self, "use_causal_mask", check_bool(name, "use_causal_mask", self.use_causal_mask))
        for field in ("kernel_initializer", "bias_initializer"):
            _set(self, field, check_initializer(name, field, getattr(self, field)))

    @property
    def values(self) -> int:
        """Per-head value size (``value_dim``, else ``key_dim``, as Keras)."""
        return self.value_dim if self.value_dim is not None else self.key_dim

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) != 2:
            raise self._fail(shape)
        return _attention(shape, self.num_heads, self.key_dim, self.values, self.use_bias)


def _attention(shape: Shape, heads: int, key_dim: int, value_dim: int, bias: bool) -> Traced:
    """Keras' q/k/v kernels (features, heads, dim) and output kernel (heads, value_dim,
    features); FLOPs count the full score matrix (a causal mask is applied, not skipped)."""
    length, dim = shape
    qk, v = heads * key_dim, heads * value_dim
    params = dim * (2 * qk + v) + v * dim + bias * (2 * qk + v + dim)
    projections = 2 * length * (dim * (2 * qk + v) + v * dim)
    mixing = 2 * length * length * (qk + v)  # scores q·k and the weighted sum of v
    return Traced(shape, params, projections + mixing)
