"""Framework-neutral architectures: layers, ``Arch`` and its shape/param/FLOP inference.

Pure Python on purpose: ``import protolab`` must not load torch, TensorFlow or NumPy, and the
numbers a trial reports for its model come from here, identical for both backends.

FLOP rule: ``flops_per_sample`` counts one forward pass of one sample, 2 FLOPs per
multiply-add of every matmul/convolution (Dense, Conv1D/2D, LSTM/GRU input and recurrent
matmuls, attention projections, scores and weighted sums, Residual projections). Element-wise
work (biases, activations, normalisation, pooling, dropout, additions, gates) and embedding
lookups count 0: they are a small share of real models' compute and differ between kernels.
Conv2DTranspose counts every input position times its kernel; DepthwiseConv2D one kernel per
output channel.
"""

from protolab.arch._activations import ACTIVATIONS, ALIASES, LEAKY_RELU_SLOPE
from protolab.arch._arch import Arch, ArchInfo
from protolab.arch._base import Layer, LayerRow, same_padding
from protolab.arch._composite import Composite, TransformerBlock
from protolab.arch._custom import CustomLayer, build_custom, counted_by, layer
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
from protolab.arch._native import Native, native
from protolab.arch._registry import Builders
from protolab.arch._residual import Projection, Residual
from protolab.arch._sequence import (
    GRU,
    LSTM,
    Embedding,
    MultiHeadAttention,
    PositionalEmbedding,
    SelfAttention,
)

__all__ = [
    "ACTIVATIONS",
    "ALIASES",
    "GRU",
    "LEAKY_RELU_SLOPE",
    "LSTM",
    "Activation",
    "Arch",
    "ArchInfo",
    "AvgPool",
    "BatchNorm",
    "Builders",
    "Composite",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "CustomLayer",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool",
    "Layer",
    "LayerNorm",
    "LayerRow",
    "MaxPool",
    "MultiHeadAttention",
    "Native",
    "PositionalEmbedding",
    "Projection",
    "Residual",
    "SelfAttention",
    "TransformerBlock",
    "UpSampling2D",
    "build_custom",
    "counted_by",
    "layer",
    "native",
    "same_padding",
]
