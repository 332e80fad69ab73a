"""Feed-forward, convolutional, pooling and normalisation layers.

FLOP rule (see ``protolab.arch``): 2 per multiply-add of a matmul or convolution; element-wise
work (activations, normalisation, pooling, dropout, additions, biases) counts as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

from protolab.arch._base import (
    Layer,
    Shape,
    ShapeError,
    Traced,
    as_tuple,
    check_activation,
    check_bool,
    check_choice,
    check_initializer,
    check_rate,
    check_sizes,
    conv_length,
)
from protolab.arch._base import (
    check_int as _int,
)
from protolab.errors import ArchError

__all__ = [
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool",
    "LayerNorm",
    "MaxPool",
    "UpSampling2D",
]

_PADDINGS = ("same", "valid")


def _set(layer: Layer, name: str, value: object) -> None:
    object.__setattr__(layer, name, value)  # canonicalise a field of a frozen dataclass


def _number(layer: str, name: str, value: object) -> float:
    """A finite real number (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ArchError(
            f"{layer}: `{name}` must be a finite number, but got {name}={value!r} "
            f"({type(value).__name__})"
        )
    return float(value)


def _check_weights(layer: Dense | _Conv | DepthwiseConv2D, *initializers: str) -> None:
    """``use_bias``, ``activation`` and the named initializer fields: Keras' names, checked
    once here so every layer with weights states the same rule."""
    name = type(layer).__name__
    _set(layer, "use_bias", check_bool(name, "use_bias", layer.use_bias))
    _set(layer, "activation", check_activation(name, layer.activation))
    for field in initializers:
        _set(layer, field, check_initializer(name, field, getattr(layer, field)))


@dataclass(frozen=True, repr=False)
class Dense(Layer):
    """Acts on the last axis, so it also applies per position of a sequence (as Keras)."""

    units: int
    activation: str | None = None
    use_bias: bool = True
    kernel_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"

    expects: ClassVar[str] = "an input of rank >= 1"

    def __post_init__(self) -> None:
        _set(self, "units", _int("Dense", "units", self.units))
        _check_weights(self, "kernel_initializer", "bias_initializer")

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if not shape:
            raise self._fail(shape)
        fan_in, positions = shape[-1], math.prod(shape[:-1])
        return Traced(
            (*shape[:-1], self.units),
            fan_in * self.units + self.units * self.use_bias,
            2 * positions * fan_in * self.units,
        )


Sizes = int | tuple[int, ...]


def _spatial(
    layer: Layer, shape: Shape, rank: int, kernel_size: Sizes, strides: Sizes, padding: str
) -> Shape:
    """Output positions of a convolution, or the ShapeError naming the kernel that won't fit."""
    if len(shape) != rank + 1:
        raise layer._fail(shape)
    kernel, steps = as_tuple(kernel_size, rank), as_tuple(strides, rank)
    spatial = tuple(
        conv_length(n, k, s, padding) for n, k, s in zip(shape[:-1], kernel, steps, strict=True)
    )
    if 0 in spatial:
        raise ShapeError(
            f"needs at least kernel_size={kernel_size} positions per axis with "
            f"padding 'valid', but got shape {shape}"
        )
    return spatial


@dataclass(frozen=True, repr=False)
class _Conv(Layer):
    """Keras' ``ConvND`` arguments and defaults (``padding="valid"``, bias, Glorot kernel)."""

    filters: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "valid"
    activation: str | None = None
    use_bias: bool = True
    kernel_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"

    rank: ClassVar[int] = 1

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, "filters", _int(name, "filters", self.filters))
        _set(self, "kernel_size", check_sizes(name, "kernel_size", self.kernel_size, self.rank))
        _set(self, "strides", check_sizes(name, "strides", self.strides, self.rank))
        _set(self, "padding", check_choice(name, "padding", self.padding, _PADDINGS))
        _check_weights(self, "kernel_initializer", "bias_initializer")

    def trace(self, shape: Shape, dtype: str) -> Traced:
        spatial = _spatial(self, shape, self.rank, self.kernel_size, self.strides, self.padding)
        cin, taps = shape[-1], math.prod(as_tuple(self.kernel_size, self.rank))
        params = taps * cin * self.filters + self.filters * self.use_bias
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
class Conv2DTranspose(_Conv):
    """Keras' ``Conv2DTranspose`` (no ``output_padding``): each axis grows to ``n * s``
    ("same") or ``n * s + max(k - s, 0)`` ("valid"), cropped as TensorFlow crops."""

    rank: ClassVar[int] = 2
    expects: ClassVar[str] = "a (height, width, channels) input"

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) != 3:
            raise self._fail(shape)
        kernel, strides = as_tuple(self.kernel_size, 2), as_tuple(self.strides, 2)
        spatial = tuple(
            n * s + (max(k - s, 0) if self.padding == "valid" else 0)
            for n, k, s in zip(shape[:-1], kernel, strides, strict=True)
        )
        cin, taps = shape[-1], math.prod(kernel)
        params = taps * cin * self.filters + self.filters * self.use_bias
        flops = 2 * math.prod(shape[:-1]) * taps * cin * self.filters  # every input scatters
        return Traced((*spatial, self.filters), params, flops)


@dataclass(frozen=True, repr=False)
class DepthwiseConv2D(Layer):
    """Keras' ``DepthwiseConv2D``: each channel convolved with its own ``depth_multiplier``
    kernels; output channel ``c * depth_multiplier + m``, as Keras orders them."""

    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "valid"
    depth_multiplier: int = 1
    activation: str | None = None
    use_bias: bool = True
    depthwise_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"

    expects: ClassVar[str] = "a (height, width, channels) input"

    def __post_init__(self) -> None:
        name = "DepthwiseConv2D"
        _set(self, "kernel_size", check_sizes(name, "kernel_size", self.kernel_size, 2))
        _set(self, "strides", check_sizes(name, "strides", self.strides, 2))
        _set(self, "padding", check_choice(name, "padding", self.padding, _PADDINGS))
        _set(self, "depth_multiplier", _int(name, "depth_multiplier", self.depth_multiplier))
        _check_weights(self, "depthwise_initializer", "bias_initializer")

    def trace(self, shape: Shape, dtype: str) -> Traced:
        spatial = _spatial(self, shape, 2, self.kernel_size, self.strides, self.padding)
        cout, taps = shape[-1] * self.depth_multiplier, math.prod(as_tuple(self.kernel_size, 2))
        params = taps * cout + cout * self.use_bias
        return Traced((*spatial, cout), params, 2 * math.prod(spatial) * taps * cout)


@dataclass(frozen=True, repr=False)
class UpSampling2D(Layer):
    """Keras' ``UpSampling2D``: repeats rows and columns (``interpolation="nearest"`` only:
    the resize kernels of the two frameworks disagree at the borders for the others)."""

    size: int | tuple[int, ...] = 2
    interpolation: str = "nearest"

    expects: ClassVar[str] = "a (height, width, channels) input"

    def __post_init__(self) -> None:
        _set(self, "size", check_sizes("UpSampling2D", "size", self.size, 2))
        allowed = ("nearest",)
        _set(
            self,
            "interpolation",
            check_choice("UpSampling2D", "interpolation", self.interpolation, allowed),
        )

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) != 3:
            raise self._fail(shape)
        sh, sw = as_tuple(self.size, 2)
        return Traced((shape[0] * sh, shape[1] * sw, shape[2]))


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
    ranks: ClassVar[tuple[int, ...]] = (2, 3)

    def trace(self, shape: Shape, dtype: str) -> Traced:
        if len(shape) not in self.ranks:
            raise self._fail(shape)
        return Traced((shape[-1],))


@dataclass(frozen=True, repr=False)
class GlobalAveragePooling1D(GlobalAvgPool):
    """Keras' name for :class:`GlobalAvgPool` over a sequence."""

    expects: ClassVar[str] = "a (length, channels) input"
    ranks: ClassVar[tuple[int, ...]] = (2,)


@dataclass(frozen=True, repr=False)
class GlobalAveragePooling2D(GlobalAvgPool):
    """Keras' name for :class:`GlobalAvgPool` over an image."""

    expects: ClassVar[str] = "a (height, width, channels) input"
    ranks: ClassVar[tuple[int, ...]] = (3,)


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


#: BatchNorm's constants before it took Keras' defaults: what an ``arch.json`` written then
#: (which left them out, as defaults) was trained with
_BATCHNORM_BEFORE = {"momentum": 0.9, "epsilon": 1e-5}


@dataclass(frozen=True, repr=False)
class BatchNorm(Layer):
    """Keras 3's ``BatchNormalization``: its argument names and defaults, so a model copied
    from a Keras example builds the same model.

    Normalises ``axis`` (Keras counts the batch axis: ``-1`` is the channels of a
    channels-last input, ``1`` the first axis of a sample) over the batch and every other
    axis. Moving statistics: ``moving = momentum * moving + (1 - momentum) * batch`` (torch's
    ``momentum`` is ``1 - momentum``). ``center`` adds the trainable offset beta, ``scale``
    the trainable factor gamma; the moving statistics are not trainable.

    ``momentum`` and ``epsilon`` are always written to ``arch.json`` (their defaults were
    0.9 and 1e-5 before this layer took Keras'), so every Arch with a BatchNorm hashes apart
    from one written before, and an old ``arch.json`` rebuilds the model it trained.
    """

    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True

    expects: ClassVar[str] = "an input of rank >= 1"

    def __post_init__(self) -> None:
        name = "BatchNorm"
        if isinstance(self.axis, bool) or not isinstance(self.axis, Integral):
            raise ArchError(f"{name}: `axis` must be an int, but got axis={self.axis!r}")
        if self.axis == 0:
            raise ArchError(
                f"{name}: `axis` 0 is the batch axis (Keras counts it); normalise a sample's "
                "axis: -1 (the channels, the default) or 1, 2, ..., but got axis=0"
            )
        _set(self, "axis", int(self.axis))
        _set(self, "momentum", _number(name, "momentum", self.momentum))
        if not 0.0 <= self.momentum <= 1.0:
            raise ArchError(
                f"{name}: `0 <= momentum <= 1` must hold (Keras' meaning: the share of the "
                f"moving statistics kept per step, e.g. 0.99), but got momentum={self.momentum!r}"
            )
        _set(self, "epsilon", _number(name, "epsilon", self.epsilon))
        if not self.epsilon > 0:
            raise ArchError(f"{name}: `epsilon > 0` must hold, but got epsilon={self.epsilon!r}")
        _set(self, "center", check_bool(name, "center", self.center))
        _set(self, "scale", check_bool(name, "scale", self.scale))

    def channels(self, shape: Shape) -> int:
        """The size of the normalised axis for one sample of ``shape``; ShapeError if the
        input has no such axis."""
        if len(shape) < abs(self.axis):  # Keras counts the batch axis: 1 is a sample's 0
            raise self._fail(
                shape, f"a sample of rank >= {abs(self.axis)} for axis={self.axis} (Keras' axis)"
            )
        return shape[self.axis - 1 if self.axis > 0 else self.axis]

    def trace(self, shape: Shape, dtype: str) -> Traced:
        return Traced(shape, self.channels(shape) * (int(self.center) + int(self.scale)))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "momentum": self.momentum, "epsilon": self.epsilon}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Layer:
        """An ``arch.json`` without ``momentum``/``epsilon`` was written before BatchNorm
        took Keras' defaults: it rebuilds with the constants it was trained with."""
        return super().from_fields({**_BATCHNORM_BEFORE, **fields})


@dataclass(frozen=True, repr=False)
class LayerNorm(Layer):
    """Normalises each position over its last axis; ``epsilon`` 1e-5 (PyTorch's default)
    unless given, e.g. 1e-6 as the Keras Transformer examples set."""

    epsilon: float = 1e-5

    expects: ClassVar[str] = "an input of rank >= 1"

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, Real):
            raise ArchError(f"LayerNorm: `epsilon` must be a number, but got {self.epsilon!r}")
        if not self.epsilon > 0:
            raise ArchError(f"LayerNorm: `epsilon > 0` must hold, but got {self.epsilon!r}")
        _set(self, "epsilon", float(self.epsilon))

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
