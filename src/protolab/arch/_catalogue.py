"""Small, realistic architectures that together use every layer and option.

Tests build each on both backends and check them against ``Arch.infer``; benchmarks and smoke
checks can reuse them. Tiny on purpose: building all of them takes seconds.
"""

from __future__ import annotations

from typing import NamedTuple

from protolab.arch._arch import Arch
from protolab.arch._base import Shape
from protolab.arch._composite import TransformerBlock
from protolab.arch._layers import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAvgPool,
    LayerNorm,
    MaxPool,
    UpSampling2D,
)
from protolab.arch._residual import Residual
from protolab.arch._sequence import (
    GRU,
    LSTM,
    Embedding,
    MultiHeadAttention,
    PositionalEmbedding,
    SelfAttention,
)

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
        Arch(
            Conv2D(4, 3, padding="same", activation="relu"),
            Conv2D(6, 3, strides=2, padding="same"),
            Flatten(),
            Dense(3),
        ),
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
            Conv2D(4, 3, padding="same", activation="gelu"),
            MaxPool(),
            Conv2D(5, 2, padding="same"),
            AvgPool((2, 1)),
            GlobalAvgPool(),
            Dense(3),
        ),
        (9, 8, 1),
    ),
    Example(
        "conv1d_pools",
        Arch(
            Conv1D(4, 3, strides=2, padding="same"),
            MaxPool(2),
            Conv1D(5, 2, padding="same"),
            AvgPool(),
            Flatten(),
            Dense(2),
        ),
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
        Arch(
            Conv2D(4, 3, padding="same"), BatchNorm(), Activation("relu"), GlobalAvgPool(), Dense(2)
        ),
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
            Conv2D(4, 3, padding="same"),
            Residual(
                Conv2D(8, 3, strides=2, padding="same", activation="relu"),
                BatchNorm(),
                Conv2D(8, 3, padding="same"),
            ),
            GlobalAvgPool(),
            Dense(3),
        ),
        (7, 7, 1),
    ),
    Example(
        "residual_conv1d_stride2",
        Arch(
            Conv1D(4, 3, padding="same"),
            Residual(Conv1D(6, 3, strides=2, padding="same")),
            Flatten(),
            Dense(2),
        ),
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
    # Keras 3 namesakes: valid-padded default conv, initializers, bias-free layers,
    # depthwise / transposed convolutions (k < s "valid" zero-extends), softmax output
    Example(
        "conv_transpose_depthwise",
        Arch(
            Conv2D(4, 3, use_bias=False, kernel_initializer="he_normal"),
            DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu"),
            Conv2DTranspose(3, 3, strides=2, padding="same"),
            UpSampling2D((2, 1)),
            Conv2DTranspose(2, 2, strides=3, bias_initializer="ones"),
            GlobalAveragePooling2D(),
            Dense(3, "softmax"),
        ),
        (7, 7, 1),
    ),
    Example(  # the Keras "Text classification with Transformer" model, tiny
        "text_transformer",
        Arch(
            PositionalEmbedding(20, 8, maxlen=16),
            TransformerBlock(8, 2, 16),
            GlobalAveragePooling1D(),
            Dropout(0.1),
            Dense(2, "softmax"),
        ),
        (12,),
        "int32",
    ),
    Example(
        "causal_attention",
        Arch(
            Conv1D(8, 3, kernel_initializer="lecun_uniform", bias_initializer="ones"),
            MultiHeadAttention(2, 4, value_dim=3, use_bias=False, use_causal_mask=True),
            LayerNorm(epsilon=1e-6),
            Dense(4, "log_softmax"),
            Flatten(),
            Dense(2, use_bias=False),
        ),
        (12, 4),
    ),
)
