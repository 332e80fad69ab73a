"""Build an :class:`~protolab.arch.Arch` as a functional Keras 3 model, on any Keras backend.

Shared by the Keras modes (TensorFlow graph / XLA, and Keras on JAX): only ``keras.ops`` and
``keras.layers`` appear here. The one backend-specific piece, dropout's random mask, is
passed in (``dropout``), so each backend can use its fastest stateless RNG.

Keras' defaults are the reference both families follow (channels-last, TensorFlow "same"
padding, Glorot init, GRU ``reset_after=True``, BatchNorm's momentum 0.99 and epsilon 1e-3);
only LayerNorm's epsilon defaults to PyTorch's 1e-5 (the Arch's layer says so).

Every layer type reaches its builder through :data:`BUILDERS` (``@BUILDERS.register(Cls)``
beside each builder): built-ins and custom layers alike, with no dispatch anywhere else.
Only plain Keras layers and ``keras.ops`` are used, so a saved model reloads without
protolab or custom objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras

from protolab._frameworks import KERAS
from protolab.arch import (
    GRU,
    LSTM,
    Activation,
    Arch,
    AvgPool,
    BatchNorm,
    Builders,
    Composite,
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    CustomLayer,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    MaxPool,
    MultiHeadAttention,
    PositionalEmbedding,
    Residual,
    SelfAttention,
    UpSampling2D,
    build_custom,
    counted_by,
)
from protolab.arch._arch import default_dtype, effective_dtype
from protolab.arch._base import Shape, as_tuple
from protolab.backends._keras_optim import optimizer  # moved there; kept importable here
from protolab.errors import ArchError

__all__ = ["BUILDERS", "POLICY", "DropoutFactory", "build_keras", "count_params", "optimizer"]

_L = keras.layers
# (rate, layer name) -> a Keras layer applying inverted dropout when training
DropoutFactory = Callable[[float, str], keras.layers.Layer]


class Site(NamedTuple):
    """Where a layer is applied: one sample's input shape and dtype, and its name path."""

    shape: Shape
    dtype: str
    path: str

    def name(self, layer: Layer) -> str:
        """The Keras layer name (``l3_dense``): stable, so weights can be found by name."""
        return f"{self.path}_{type(layer).__name__.lower()}"


#: (builder context, layer, input tensor, site) -> output tensor; the layer is ``Any`` because
#: each builder takes its own Layer subclass (a ``Callable`` parameter is contravariant)
KerasBuilder = Callable[["_Builder", Any, keras.KerasTensor, Site], keras.KerasTensor]
BUILDERS: Builders[KerasBuilder] = Builders("keras")


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
    Integer inputs to a first layer that does not take them are cast to float32 inside the
    model.
    """
    if input_dtype is None:
        input_dtype = default_dtype(arch.layers)
    info = arch.infer(input_shape, input_dtype)  # the readable error, before building anything
    dtype = effective_dtype(arch.layers, input_dtype)
    inputs = keras.Input(shape=info.input_shape, dtype=input_dtype, name="input")
    x = inputs if dtype == input_dtype else keras.ops.cast(inputs, "float32")
    outputs = _Builder(dropout).sequence(arch.layers, x, info.input_shape, dtype, "l")
    arch.outputs_on(KERAS, info.input_shape, input_dtype)  # custom code's head, on Keras
    return keras.Model(inputs, outputs, name=f"protolab_{arch.hash}")


# hardware.precision -> Keras' global dtype policy
POLICY = {"32": "float32", "bf16": "mixed_bfloat16", "16": "mixed_float16"}


def count_params(model: keras.Model) -> int:
    """Trainable weights: the convention ``Arch.infer`` and the torch build share."""
    return sum(math.prod(w.shape) for w in model.trainable_weights)


class _Builder:
    """Applies Arch layers to a Keras tensor; holds the backend's dropout choice."""

    def __init__(self, dropout: DropoutFactory) -> None:
        self.dropout = dropout

    def sequence(
        self,
        layers: tuple[Layer, ...],
        x: keras.KerasTensor,
        shape: Shape,
        dtype: str,
        prefix: str,
    ) -> keras.KerasTensor:
        for i, layer in enumerate(layers):
            x = BUILDERS.lookup(layer)(self, layer, x, Site(shape, dtype, f"{prefix}{i}"))
            shape, dtype = layer.trace(shape, dtype).shape, "float32"
        return x


# ---------------------------------------------------------------- registered builders


def _initializer(
    name: str, torch_fan_in: int, kernel: bool = False
) -> str | keras.initializers.Initializer:
    """Keras' initializer for protolab's ``name``: the name itself, except ``torch_default``
    (PyTorch's ``nn.Linear``/``nn.Conv*`` default, U(±1/sqrt(fan_in)) with torch's fan_in of
    the layer's kernel, for its bias too). A ``kernel`` whose Keras fan_in is torch's (Dense,
    Conv, Conv2DTranspose) gets ``VarianceScaling(1/3, "fan_in", "uniform")``, whose limit
    is sqrt(3 / 3 / fan_in); any other weight ``RandomUniform(-b, b)``, b computed here."""
    if name != "torch_default":
        return name
    if kernel:
        return keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
        )
    bound = 1.0 / math.sqrt(max(1, torch_fan_in))
    return keras.initializers.RandomUniform(-bound, bound)


def _weights(layer: Dense | Conv1D | Conv2D | Conv2DTranspose, fan_in: int) -> dict[str, Any]:
    """The Keras arguments every kernel layer shares, under Keras' own names; ``fan_in`` is
    torch's (and Keras') fan_in of the layer's kernel, for ``torch_default`` biases."""
    return {
        "activation": layer.activation,
        "use_bias": layer.use_bias,
        "kernel_initializer": _initializer(layer.kernel_initializer, fan_in, kernel=True),
        "bias_initializer": _initializer(layer.bias_initializer, fan_in),
    }


@BUILDERS.register(Dense)
def _dense(b: _Builder, layer: Dense, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return _L.Dense(layer.units, name=at.name(layer), **_weights(layer, at.shape[-1]))(x)


@BUILDERS.register(Conv1D, Conv2D, Conv2DTranspose)
def _conv(
    b: _Builder, layer: Conv1D | Conv2D | Conv2DTranspose, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    kind = {Conv1D: _L.Conv1D, Conv2D: _L.Conv2D, Conv2DTranspose: _L.Conv2DTranspose}
    taps = math.prod(as_tuple(layer.kernel_size, len(at.shape) - 1))
    # the kernel's fan_in, Keras' and torch's alike: input channels x kernel elements (a
    # transposed conv's kernel is (..., filters, input channels): filters x kernel elements)
    fans = taps * (layer.filters if isinstance(layer, Conv2DTranspose) else at.shape[-1])
    return kind[type(layer)](
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        name=at.name(layer),
        **_weights(layer, fans),
    )(x)


@BUILDERS.register(DepthwiseConv2D)
def _depthwise(
    b: _Builder, layer: DepthwiseConv2D, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    taps = math.prod(as_tuple(layer.kernel_size, 2))
    return _L.DepthwiseConv2D(
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        depth_multiplier=layer.depth_multiplier,
        activation=layer.activation,
        use_bias=layer.use_bias,
        # torch_default: torch's fan_in of a depthwise kernel is its kernel elements (one
        # input channel per group), where Keras' fan rule also counts the input channels
        depthwise_initializer=_initializer(layer.depthwise_initializer, taps),
        bias_initializer=_initializer(layer.bias_initializer, taps),
        name=at.name(layer),
    )(x)


@BUILDERS.register(MaxPool, AvgPool)
def _pool(
    b: _Builder, layer: MaxPool | AvgPool, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    one_d = len(at.shape) == 2
    if isinstance(layer, MaxPool):
        pool = _L.MaxPooling1D if one_d else _L.MaxPooling2D
    else:
        pool = _L.AveragePooling1D if one_d else _L.AveragePooling2D
    size = layer.pool_size
    return pool(size, strides=size, padding="valid", name=at.name(layer))(x)


@BUILDERS.register(GlobalAvgPool)
def _global_avg_pool(
    b: _Builder, layer: GlobalAvgPool, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    gap = _L.GlobalAveragePooling1D if len(at.shape) == 2 else _L.GlobalAveragePooling2D
    return gap(name=at.name(layer))(x)


@BUILDERS.register(UpSampling2D)
def _upsampling(
    b: _Builder, layer: UpSampling2D, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    return _L.UpSampling2D(layer.size, interpolation=layer.interpolation, name=at.name(layer))(x)


@BUILDERS.register(Flatten)
def _flatten(b: _Builder, layer: Flatten, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return _L.Flatten(name=at.name(layer))(x)


@BUILDERS.register(Dropout)
def _dropout(b: _Builder, layer: Dropout, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return b.dropout(layer.rate, at.name(layer))(x)


@BUILDERS.register(BatchNorm)
def _batch_norm(b: _Builder, layer: BatchNorm, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return _L.BatchNormalization(
        axis=layer.axis,
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        center=layer.center,
        scale=layer.scale,
        name=at.name(layer),
    )(x)


@BUILDERS.register(LayerNorm)
def _layer_norm(b: _Builder, layer: LayerNorm, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return _L.LayerNormalization(axis=-1, epsilon=layer.epsilon, name=at.name(layer))(x)


@BUILDERS.register(Activation)
def _activation(
    b: _Builder, layer: Activation, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    return _L.Activation(layer.name, name=at.name(layer))(x)


@BUILDERS.register(Residual)
def _residual(b: _Builder, layer: Residual, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    body = b.sequence(layer.layers, x, at.shape, at.dtype, f"{at.path}_")
    skip, proj, name = x, layer.projection(at.shape, at.dtype), f"{at.path}_projection"
    if proj is not None and proj.stride == 1:
        skip = _L.Dense(proj.channels, use_bias=False, name=name)(x)
    elif proj is not None:
        conv = _L.Conv1D if len(at.shape) == 2 else _L.Conv2D
        skip = conv(proj.channels, 1, strides=proj.stride, use_bias=False, name=name)(x)
    return _L.Add(name=f"{at.path}_add")([body, skip])


@BUILDERS.register(Composite)
def _composite(b: _Builder, layer: Composite, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return b.sequence(layer.expand(at.shape), x, at.shape, at.dtype, f"{at.path}_")


@BUILDERS.register(Embedding)
def _embedding(b: _Builder, layer: Embedding, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    return _L.Embedding(layer.vocab_size, layer.dim, name=at.name(layer))(x)


@BUILDERS.register(PositionalEmbedding)
def _positional_embedding(
    b: _Builder, layer: PositionalEmbedding, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    """Tokens plus an Embedding of the positions 0..length-1, computed from ``x`` with
    ``keras.ops`` (not a custom layer class, so a saved model reloads without protolab)."""
    tokens = _L.Embedding(layer.vocab_size, layer.dim, name=at.name(layer))(x)
    ids = keras.ops.cumsum(keras.ops.ones_like(x, dtype="int32"), axis=1) - 1
    rows = layer.positions(at.shape)
    positions = _L.Embedding(rows, layer.dim, name=f"{at.name(layer)}_position")(ids)
    return _L.Add(name=f"{at.path}_add")([tokens, positions])


@BUILDERS.register(LSTM, GRU)
def _recurrent(b: _Builder, layer: LSTM | GRU, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    rnn = _L.LSTM if isinstance(layer, LSTM) else _L.GRU
    return rnn(layer.units, return_sequences=layer.return_sequences, name=at.name(layer))(x)


@BUILDERS.register(SelfAttention)
def _self_attention(
    b: _Builder, layer: SelfAttention, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    return _L.MultiHeadAttention(layer.heads, layer.key_dim, name=at.name(layer))(x, x)


@BUILDERS.register(MultiHeadAttention)
def _multi_head_attention(
    b: _Builder, layer: MultiHeadAttention, x: keras.KerasTensor, at: Site
) -> keras.KerasTensor:
    mha = _L.MultiHeadAttention(
        layer.num_heads,
        layer.key_dim,
        value_dim=layer.value_dim,
        dropout=layer.dropout,
        use_bias=layer.use_bias,
        kernel_initializer=layer.kernel_initializer,
        bias_initializer=layer.bias_initializer,
        name=at.name(layer),
    )
    if layer.values == layer.key_dim:
        return mha(x, x, use_causal_mask=layer.use_causal_mask)
    # value_dim != key_dim: Keras' fused dot_product_attention path fails on JAX (it needs
    # equal q/k/v head sizes); asking for the scores takes Keras' einsum path, same maths
    out, _ = mha(x, x, use_causal_mask=layer.use_causal_mask, return_attention_scores=True)
    return out


@BUILDERS.register(CustomLayer)
def _custom(b: _Builder, layer: CustomLayer, x: keras.KerasTensor, at: Site) -> keras.KerasTensor:
    """The user's Keras builder, held to the parameter count the Arch reports."""
    if "keras" not in layer.frameworks():
        raise ArchError(
            f"{layer!r} has no keras builder (it defines {', '.join(layer.frameworks())}): "
            "run it on a mode of that framework, or add a keras() method"
        )
    built = build_custom(layer, KERAS, at.shape)  # a new layer per call, or ArchError
    if not isinstance(built, keras.layers.Layer):
        raise ArchError(
            f"{layer!r}: keras() must return a keras.layers.Layer, but returned {built!r:.80}"
        )
    out = built(x)
    want = layer.trace(at.shape, at.dtype).params
    got = sum(math.prod(w.shape) for w in built.trainable_weights)
    if got != want:
        raise ArchError(
            f"{layer!r}: the keras builder makes {got} trainable parameters, but the "
            f"{counted_by(layer, at.shape, at.dtype)} builder makes {want}; both builders "
            "must make the same model"
        )
    return out
