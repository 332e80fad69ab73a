"""Build an :class:`~protolab.arch.Arch` as a functional Keras 3 model, on any Keras backend.

Shared by the Keras modes (TensorFlow graph / XLA, and Keras on JAX): only ``keras.ops`` and
``keras.layers`` appear here. The one backend-specific piece, dropout's random mask, is
passed in (``dropout``), so each backend can use its fastest stateless RNG.

Keras' defaults are the reference both families follow (channels-last, TensorFlow "same"
padding, Glorot init, GRU ``reset_after=True``); only the normalisation constants are set
explicitly (eps 1e-5, batch-norm momentum 0.9) to match PyTorch's defaults instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras

from protolab.arch import (
    GRU,
    LSTM,
    Activation,
    Arch,
    AvgPool,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    MaxPool,
    Residual,
    SelfAttention,
)
from protolab.arch._arch import effective_dtype
from protolab.arch._base import Shape
from protolab.arch._custom import CustomLayer, counted_by
from protolab.errors import ArchError

__all__ = ["POLICY", "DropoutFactory", "build_keras", "count_params", "optimizer"]

_L = keras.layers
# (rate, layer name) -> a Keras layer applying inverted dropout when training
DropoutFactory = Callable[[float, str], keras.layers.Layer]


def _keras_dropout(rate: float, name: str) -> keras.layers.Layer:
    return _L.Dropout(rate, name=name)


def build_keras(
    arch: Arch,
    input_shape: Sequence[int],
    input_dtype: str | None = None,
    dropout: DropoutFactory = _keras_dropout,
) -> keras.Model:
    """Build ``arch`` for per-sample ``input_shape``; raises ArchError for impossible archs.

    ``input_dtype`` defaults to int64 when the first layer is an Embedding, else float32.
    Integer inputs to any other first layer are cast to float32 inside the model.
    """
    if input_dtype is None:
        input_dtype = "int64" if isinstance(arch.layers[0], Embedding) else "float32"
    info = arch.infer(input_shape, input_dtype)  # the readable error, before building anything
    dtype = effective_dtype(arch.layers, input_dtype)
    inputs = keras.Input(shape=info.input_shape, dtype=input_dtype, name="input")
    x = inputs if dtype == input_dtype else keras.ops.cast(inputs, "float32")
    outputs = _Builder(dropout).sequence(arch.layers, x, info.input_shape, dtype, "l")
    return keras.Model(inputs, outputs, name=f"protolab_{arch.hash}")


# hardware.precision -> Keras' global dtype policy
POLICY = {"32": "float32", "bf16": "mixed_bfloat16", "16": "mixed_float16"}


def optimizer(name: str, lr: float, wd: float) -> keras.optimizers.Optimizer:
    """The optimizer named in the config; the torch side matches its defaults.

    Weight decay is decoupled on every Keras 3 optimizer.
    """
    o = keras.optimizers
    wd_arg = {"weight_decay": wd} if wd else {}
    if name in ("adam", "adamw"):
        return o.AdamW(learning_rate=lr, epsilon=1e-7, weight_decay=wd)
    if name == "sgd":
        return o.SGD(learning_rate=lr, momentum=0.9, **wd_arg)
    if name == "rmsprop":
        return o.RMSprop(learning_rate=lr, rho=0.9, epsilon=1e-7, **wd_arg)
    raise ValueError(f"unknown optimizer {name!r}")


def count_params(model: keras.Model) -> int:
    """Trainable weights: the convention ``Arch.infer`` and the torch build share."""
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def _custom(layer: CustomLayer, x: Any, shape: Shape, dtype: str) -> Any:
    """The user's Keras builder, held to the parameter count the Arch reports."""
    if "keras" not in layer.frameworks():
        raise ArchError(
            f"{layer!r} has no keras builder (it defines {', '.join(layer.frameworks())}): "
            "run it on a mode of that framework, or add a keras() method"
        )
    built = layer.keras(shape)
    out = built(x)
    want = layer.trace(shape, dtype).params
    got = sum(math.prod(w.shape) for w in built.trainable_weights)
    if got != want:
        raise ArchError(
            f"{layer!r}: the keras builder makes {got} trainable parameters, but the "
            f"{counted_by(layer, shape, dtype)} builder makes {want}; both builders must "
            "make the same model"
        )
    return out


class _Builder:
    """Applies Arch layers to a Keras tensor; holds the backend's dropout choice."""

    def __init__(self, dropout: DropoutFactory) -> None:
        self.dropout = dropout

    def sequence(
        self, layers: tuple[Layer, ...], x: Any, shape: Shape, dtype: str, prefix: str
    ) -> Any:
        for i, layer in enumerate(layers):
            x = self.layer(layer, x, shape, dtype, f"{prefix}{i}")
            shape, dtype = layer.trace(shape, dtype).shape, "float32"
        return x

    def layer(self, layer: Layer, x: Any, shape: Shape, dtype: str, path: str) -> Any:
        name = f"{path}_{type(layer).__name__.lower()}"
        spatial = len(shape) - 1
        match layer:
            case Dense(units=units, activation=act):
                return _L.Dense(units, activation=act, name=name)(x)
            case Conv1D() | Conv2D():
                conv = _L.Conv1D if isinstance(layer, Conv1D) else _L.Conv2D
                return conv(
                    layer.filters,
                    layer.kernel_size,
                    strides=layer.strides,
                    padding=layer.padding,
                    activation=layer.activation,
                    name=name,
                )(x)
            case MaxPool(pool_size=size):
                pool = _L.MaxPooling1D if spatial == 1 else _L.MaxPooling2D
                return pool(size, strides=size, padding="valid", name=name)(x)
            case AvgPool(pool_size=size):
                pool = _L.AveragePooling1D if spatial == 1 else _L.AveragePooling2D
                return pool(size, strides=size, padding="valid", name=name)(x)
            case GlobalAvgPool():
                gap = _L.GlobalAveragePooling1D if spatial == 1 else _L.GlobalAveragePooling2D
                return gap(name=name)(x)
            case Flatten():
                return _L.Flatten(name=name)(x)
            case Dropout(rate=rate):
                return self.dropout(rate, name)(x)
            case BatchNorm():
                return _L.BatchNormalization(axis=-1, momentum=0.9, epsilon=1e-5, name=name)(x)
            case LayerNorm():
                return _L.LayerNormalization(axis=-1, epsilon=1e-5, name=name)(x)
            case Activation(name=act):
                return _L.Activation(act, name=name)(x)
            case Residual():
                return self.residual(layer, x, shape, dtype, path)
            case Embedding(vocab_size=vocab, dim=dim):
                return _L.Embedding(vocab, dim, name=name)(x)
            case LSTM(units=units, return_sequences=seq):
                return _L.LSTM(units, return_sequences=seq, name=name)(x)
            case GRU(units=units, return_sequences=seq):
                return _L.GRU(units, return_sequences=seq, name=name)(x)
            case SelfAttention(heads=heads, key_dim=key_dim):
                return _L.MultiHeadAttention(heads, key_dim, name=name)(x, x)
            case CustomLayer():
                return _custom(layer, x, shape, dtype)
        raise TypeError(f"no keras builder for {layer!r}")  # a new layer type without a builder

    def residual(self, layer: Residual, x: Any, shape: Shape, dtype: str, path: str) -> Any:
        body = self.sequence(layer.layers, x, shape, dtype, f"{path}_")
        skip = x
        proj = layer.projection(shape, dtype)
        if proj is not None and proj.stride == 1:
            skip = _L.Dense(proj.channels, use_bias=False, name=f"{path}_projection")(x)
        elif proj is not None:
            conv = _L.Conv1D if len(shape) == 2 else _L.Conv2D
            skip = conv(
                proj.channels, 1, strides=proj.stride, use_bias=False, name=f"{path}_projection"
            )(x)
        return _L.Add(name=f"{path}_add")([body, skip])
