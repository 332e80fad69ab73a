"""Feed-forward, convolutional, pooling and normalisation layers.

FLOP rule (see ``protolab.arch``): 2 per multiply-add of a matmul or convolution; element-wise
work (activations, normalisation, pooling, dropout, additions, biases) counts as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from protolab.arch._base import (
    Layer,
    Shape,
    ShapeError,
    Traced,
    as_tuple,
    check_activation,
    check_choice,
    check_rate,
    check_sizes,
    conv_length,
)
from protolab.arch._base import (
    check_int as _int,
)

__all__ = [
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "LayerNorm",
    "MaxPool",
]


def _set(layer: Layer, name: str, value: object) -> None:
    object.__setattr__(layer, name, value)  # canonicalise a field of a frozen dataclass


@dataclass(frozen=True, repr=False)
class Dense(Layer):
    """Acts on the last axis, so it also applies per position of a sequence."""

    units: int
    activation: str | None = None

    expects: ClassVar[str] = "an input of rank >= 1"

    def __post_init__(self) -> None:
        _set(self, "units", _int("Dense", "units", self.units))
        _set(self, "activation", check_activation("Dense", self.activation))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if not shape:
            raise self._fail(shape)
        fan_in, positions = shape[-1], math.prod(shape[:-1])
        return Traced(
            (*shape[:-1], self.units),
            fan_in * self.units + self.units,
            2 * positions * fan_in * self.units,
        )


@dataclass(frozen=True, repr=False)
class _Conv(Layer):
    filters: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "same"
    activation: str | None = None

    rank: ClassVar[int] = 1

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, "filters", _int(name, "filters", self.filters))
        _set(self, "kernel_size", check_sizes(name, "kernel_size", self.kernel_size, self.rank))
        _set(self, "strides", check_sizes(name, "strides", self.strides, self.rank))
        _set(self, "padding", check_choice(name, "padding", self.padding, ("same", "valid")))
        _set(self, "activation", check_activation(name, self.activation))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) != self.rank + 1:
            raise self._fail(shape)
        kernel = as_tuple(self.kernel_size, self.rank)
        strides = as_tuple(self.strides, self.rank)
        spatial = tuple(
            conv_length(n, k, s, self.padding)
            for n, k, s in zip(shape[:-1], kernel, strides, strict=True)
        )
        if 0 in spatial:
            raise ShapeError(
                f"needs at least kernel_size={self.kernel_size} positions per axis with "
                f"padding 'valid', but got shape {shape}"
            )
        cin, taps = shape[-1], math.prod(kernel)
        params = taps * cin * self.filters + self.filters
        flops = 2 * math.prod(spatial) * taps * cin * self.filters
        return Traced((*spatial, self.filters), params, flops)


@dataclass(frozen=True, repr=False)
class Conv1D(_Conv):
    """Convolution over (length, channels); ``padding="same"`` pads like TensorFlow."""

    rank: ClassVar[int] = 1
    expects: ClassVar[str] = "a (length, channels) input"


@dataclass(frozen=True, repr=False)
class Conv2D(_Conv):
    """Convolution over (height, width, channels); ``padding="same"`` pads like TensorFlow."""

    rank: ClassVar[int] = 2
    expects: ClassVar[str] = "a (height, width, channels) input"


@dataclass(frozen=True, repr=False)
class _Pool(Layer):
    pool_size: int | tuple[int, ...] = 2

    expects: ClassVar[str] = "a (length, channels) or (height, width, channels) input"

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, "pool_size", check_sizes(name, "pool_size", self.pool_size, 2))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) not in (2, 3):
            raise self._fail(shape)
        if isinstance(self.pool_size, tuple) and len(shape) != 3:
            raise self._fail(shape, "a (height, width, channels) input for a 2-tuple pool_size")
        sizes = as_tuple(self.pool_size, len(shape) - 1)
        spatial = tuple(n // p for n, p in zip(shape[:-1], sizes, strict=True))
        if 0 in spatial:
            raise ShapeError(
                f"needs at least pool_size={self.pool_size} positions per axis, "
                f"but got shape {shape}"
            )
        return Traced((*spatial, shape[-1]))


@dataclass(frozen=True, repr=False)
class MaxPool(_Pool):
    """Stride = pool_size, padding 'valid'; 1D or 2D by the rank of its input."""


@dataclass(frozen=True, repr=False)
class AvgPool(_Pool):
    """Stride = pool_size, padding 'valid'; 1D or 2D by the rank of its input."""


@dataclass(frozen=True, repr=False)
class GlobalAvgPool(Layer):
    """Averages over all positions, leaving (channels,)."""

    expects: ClassVar[str] = "a (length, channels) or (height, width, channels) input"

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) not in (2, 3):
            raise self._fail(shape)
        return Traced((shape[-1],))


@dataclass(frozen=True, repr=False)
class Flatten(Layer):
    """Flattens in channels-last order on both backends, so a Dense after it sees the same
    feature order in PyTorch and Keras."""

    expects: ClassVar[str] = "an input of rank >= 1"

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if not shape:
            raise self._fail(shape)
        return Traced((math.prod(shape),))


@dataclass(frozen=True, repr=False)
class Dropout(Layer):
    rate: float

    def __post_init__(self) -> None:
        _set(self, "rate", check_rate("Dropout", "rate", self.rate))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        return Traced(shape)


@dataclass(frozen=True, repr=False)
class BatchNorm(Layer):
    """Normalises the last axis over batch and positions (Keras ``axis=-1``); eps 1e-5,
    running statistics momentum 0.1 (torch) == 0.9 (Keras). Only gamma/beta are trainable."""

    expects: ClassVar[str] = "an input of rank >= 1"

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if not shape:
            raise self._fail(shape)
        return Traced(shape, 2 * shape[-1])


@dataclass(frozen=True, repr=False)
class LayerNorm(Layer):
    """Normalises each position over its last axis; eps 1e-5 on both backends."""

    expects: ClassVar[str] = "an input of rank >= 1"

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if not shape:
            raise self._fail(shape)
        return Traced(shape, 2 * shape[-1])


@dataclass(frozen=True, repr=False)
class Activation(Layer):
    name: str

    def __post_init__(self) -> None:
        _set(self, "name", check_activation("Activation", self.name, allow_none=False))

    def trace(self, shape: Shape, dtype: str) -> Traced:
        return Traced(shape)
