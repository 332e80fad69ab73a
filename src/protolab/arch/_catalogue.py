"""Small, realistic architectures that together use every layer and option.

Tests build each on both backends and check them against ``Arch.infer``; benchmarks and smoke
checks can reuse them. Tiny on purpose: building all of them takes seconds.
"""

from __future__ import annotations

from typing import NamedTuple

from protolab.arch._arch import Arch
from protolab.arch._base import Shape
from protolab.arch._layers import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    MaxPool,
)
from protolab.arch._residual import Residual
from protolab.arch._sequence import GRU, LSTM, Embedding, SelfAttention

__all__ = ["CATALOGUE", "Example"]


class Example(NamedTuple):
    name: str
    arch: Arch
    input_shape: Shape
    input_dtype: str = "float32"


CATALOGUE: tuple[Example, ...] = (
    Example(
        "mlp",
        Arch(Flatten(), Dense(16, "relu"), Dropout(0.1), Dense(3)),
        (8, 8, 1),
    ),
    Example("mlp_uint8_pixels", Arch(Flatten(), Dense(3, "sigmoid")), (8, 8, 1), "uint8"),
    Example(
        "conv2d_same_strided",
        Arch(Conv2D(4, 3, activation="relu"), Conv2D(6, 3, strides=2), Flatten(), Dense(3)),
        (7, 7, 1),
    ),
    Example(
        "conv2d_valid_rect",
        Arch(Conv2D(4, (3, 2), strides=(2, 1), padding="valid", activation="elu"), Flatten()),
        (8, 7, 2),
    ),
    Example(
        "conv2d_pools",
        Arch(
            Conv2D(4, 3, activation="gelu"),
            MaxPool(),
            Conv2D(5, 2),
            AvgPool((2, 1)),
            GlobalAvgPool(),
            Dense(3),
        ),
        (9, 8, 1),
    ),
    Example(
        "conv1d_pools",
        Arch(Conv1D(4, 3, strides=2), MaxPool(2), Conv1D(5, 2), AvgPool(), Flatten(), Dense(2)),
        (13, 3),
    ),
    Example(
        "norms_activations",
        Arch(
            Dense(8),
            BatchNorm(),
            Activation("leaky_relu"),
            LayerNorm(),
            Activation("softplus"),
            Activation("tanh"),
            Activation("linear"),
            Dense(3, "swish"),
        ),
        (5,),
    ),
    Example(
        "conv_batchnorm",
        Arch(Conv2D(4, 3), BatchNorm(), Activation("relu"), GlobalAvgPool(), Dense(2)),
        (6, 6, 2),
    ),
    Example(
        "residual_identity",
        Arch(Dense(8), Residual(Dense(8, "relu"), Dense(8)), Dense(2)),
        (5,),
    ),
    Example(
        "residual_dense_projection",
        Arch(Residual(Dense(6, "tanh")), Residual(Dense(6), Residual(Dense(3, "silu")))),
        (4,),
    ),
    Example(
        "residual_conv2d_stride2",
        Arch(
            Conv2D(4, 3),
            Residual(Conv2D(8, 3, strides=2, activation="relu"), BatchNorm(), Conv2D(8, 3)),
            GlobalAvgPool(),
            Dense(3),
        ),
        (7, 7, 1),
    ),
    Example(
        "residual_conv1d_stride2",
        Arch(Conv1D(4, 3), Residual(Conv1D(6, 3, strides=2)), Flatten(), Dense(2)),
        (9, 3),
    ),
    Example("lstm", Arch(LSTM(6, return_sequences=True), LSTM(5), Dense(2)), (12, 4)),
    Example("gru", Arch(GRU(6, return_sequences=True), GRU(5), Dense(2)), (12, 4)),
    Example(
        "attention",
        Arch(SelfAttention(2, 3), LayerNorm(), GlobalAvgPool(), Dense(2)),
        (12, 4),
    ),
    Example(
        "tokens_transformer",
        Arch(
            Embedding(20, 8),
            Residual(LayerNorm(), SelfAttention(2, 4)),
            Residual(LayerNorm(), Dense(16, "gelu"), Dense(8)),
            LSTM(5),
            Dense(2),
        ),
        (12,),
        "int32",
    ),
    Example(
        "tokens_gru",
        Arch(Embedding(20, 6), GRU(4, return_sequences=True), GlobalAvgPool(), Dense(2)),
        (12,),
        "int64",
    ),
)
