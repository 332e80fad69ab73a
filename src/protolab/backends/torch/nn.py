"""Build an :class:`~protolab.arch.Arch` as a ``torch.nn.Module`` that computes what the Keras
build computes.

Modules take and return channels-last tensors ``(batch, ..., channels)``: convolutions and
pools move the channel axis internally, so a ``Flatten`` orders features as Keras does and
weights can be copied across. Initialisation mirrors Keras' defaults (Glorot-uniform kernels,
zero biases, orthogonal recurrent kernels, LSTM forget bias 1) so that a comparison between
the backends measures the frameworks, not different starting points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protolab.arch import (
    GRU,
    LEAKY_RELU_SLOPE,
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
    same_padding,
)
from protolab.arch._arch import effective_dtype
from protolab.arch._base import Shape, as_tuple
from protolab.arch._custom import CustomLayer, counted_by
from protolab.errors import ArchError

__all__ = ["TorchNet", "build_torch", "count_params"]


def _identity(x: Tensor) -> Tensor:
    return x


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "elu": F.elu,
    "gelu": F.gelu,  # exact erf form, as Keras' default
    "leaky_relu": partial(F.leaky_relu, negative_slope=LEAKY_RELU_SLOPE),
    "linear": _identity,  # module-level, so the module pickles (spawned workers)
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "softplus": F.softplus,
    "tanh": torch.tanh,
}


def build_torch(arch: Arch, input_shape: Sequence[int], input_dtype: str | None = None) -> TorchNet:
    """Build ``arch`` for per-sample ``input_shape``; raises ArchError for impossible archs.

    ``input_dtype`` (default: int64 when the first layer is an Embedding, else float32) only
    feeds the shape check: the module casts integer inputs itself (see :class:`TorchNet`).
    """
    if input_dtype is None:
        input_dtype = "int64" if isinstance(arch.layers[0], Embedding) else "float32"
    info = arch.infer(input_shape, input_dtype)  # the readable error, before building anything
    dtype = effective_dtype(arch.layers, input_dtype)
    return TorchNet(_build_sequence(arch.layers, info.input_shape, dtype), arch.layers[0])


def count_params(module: nn.Module) -> int:
    """Trainable parameters: the convention ``Arch.infer`` and the Keras build share."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _build_sequence(layers: tuple[Layer, ...], shape: Shape, dtype: str) -> nn.Sequential:
    out = nn.Sequential()
    for layer in layers:
        out.append(_build_layer(layer, shape, dtype))
        shape, dtype = layer.trace(shape, dtype).shape, "float32"
    return out


def _build_layer(layer: Layer, shape: Shape, dtype: str) -> nn.Module:
    match layer:
        case Dense(units=units, activation=act):
            return _Dense(shape[-1], units, act)
        case Conv1D() | Conv2D():
            return _Conv(layer, shape)
        case MaxPool(pool_size=size) | AvgPool(pool_size=size):
            return _Pool(isinstance(layer, MaxPool), as_tuple(size, len(shape) - 1))
        case GlobalAvgPool():
            return _GlobalAvgPool()
        case Flatten():
            return nn.Flatten()
        case Dropout(rate=rate):
            return nn.Dropout(rate)
        case BatchNorm():
            return _BatchNorm(shape[-1], eps=1e-5, momentum=0.1)
        case LayerNorm():
            return nn.LayerNorm(shape[-1], eps=1e-5)
        case Activation(name=name):
            return _Activation(name)
        case Residual():
            return _Residual(layer, shape, dtype)
        case Embedding(vocab_size=vocab, dim=dim):
            emb = nn.Embedding(vocab, dim)
            nn.init.uniform_(emb.weight, -0.05, 0.05)  # Keras' "uniform" default
            return emb
        case LSTM() | GRU():
            return _Recurrent(layer, shape[-1])
        case SelfAttention(heads=heads, key_dim=key_dim):
            return _SelfAttention(shape[-1], heads, key_dim)
        case CustomLayer():
            return _custom(layer, shape, dtype)
    raise TypeError(f"no torch builder for {layer!r}")  # a new layer type without a builder


def _custom(layer: CustomLayer, shape: Shape, dtype: str) -> nn.Module:
    """The user's torch builder, held to the parameter count the Arch reports."""
    if "torch" not in layer.frameworks():
        raise ArchError(
            f"{layer!r} has no torch builder (it defines {', '.join(layer.frameworks())}): "
            "run it on a mode of that framework, or add a torch() method"
        )
    module = layer.torch(shape)
    want = layer.trace(shape, dtype).params
    got = count_params(module)
    if got != want:
        raise ArchError(
            f"{layer!r}: the torch builder makes {got} trainable parameters, but the "
            f"{counted_by(layer, shape, dtype)} builder makes {want}; both builders must "
            "make the same model"
        )
    return module


def _glorot(weight: Tensor, fan_in: int, fan_out: int) -> None:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -limit, limit)


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(fan_in, fan_out, bias=bias)
    _glorot(lin.weight, fan_in, fan_out)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin


class TorchNet(nn.Sequential):
    """The built model: a Sequential (index it like the Arch) that first casts its input the
    way the Keras model does: integer ids for a leading Embedding, float32 for anything
    else (e.g. uint8 pixels)."""

    def __init__(self, layers: nn.Sequential, first: Layer) -> None:
        super().__init__(*layers)
        self.tokens = isinstance(first, Embedding)

    def forward(self, x: Tensor) -> Tensor:
        if self.tokens and x.dtype not in (torch.int32, torch.int64):
            x = x.long()
        elif not self.tokens and not x.is_floating_point():
            x = x.float()
        return super().forward(x)


class _Activation(nn.Module):
    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.name = name or "linear"
        self.fn = _ACTIVATIONS[self.name]

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class _Dense(nn.Module):
    def __init__(self, fan_in: int, units: int, activation: str | None) -> None:
        super().__init__()
        self.linear = _linear(fan_in, units)
        self.activation = _Activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(x))


class _Conv(nn.Module):
    """A 'valid' convolution after TensorFlow's own 'same' padding (odd pixel on the right),
    which ``nn.Conv2d(padding="same")`` does not do for strides > 1."""

    def __init__(self, layer: Conv1D | Conv2D, shape: Shape) -> None:
        super().__init__()
        rank, cin = len(shape) - 1, shape[-1]
        kernel = as_tuple(layer.kernel_size, rank)
        strides = as_tuple(layer.strides, rank)
        self.conv: nn.Conv1d | nn.Conv2d
        if rank == 1:
            self.conv = nn.Conv1d(cin, layer.filters, kernel[0], strides[0])
        else:
            self.conv = nn.Conv2d(
                cin, layer.filters, (kernel[0], kernel[1]), (strides[0], strides[1])
            )
        taps = math.prod(kernel)
        _glorot(self.conv.weight, taps * cin, taps * layer.filters)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        pads: list[int] = []
        if layer.padding == "same":  # F.pad lists the last axis first
            for n, k, s in reversed(list(zip(shape[:-1], kernel, strides, strict=True))):
                pads.extend(same_padding(n, k, s))
        self.pads = pads if any(pads) else []
        self.activation = _Activation(layer.activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x.movedim(-1, 1)
        if self.pads:
            x = F.pad(x, self.pads)
        return self.activation(self.conv(x).movedim(1, -1))


class _Pool(nn.Module):
    def __init__(self, is_max: bool, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.is_max, self.sizes = is_max, sizes

    def forward(self, x: Tensor) -> Tensor:
        x = x.movedim(-1, 1)
        if len(self.sizes) == 1:
            fn1 = F.max_pool1d if self.is_max else F.avg_pool1d
            y = fn1(x, self.sizes, self.sizes)
        else:
            fn2 = F.max_pool2d if self.is_max else F.avg_pool2d
            y = fn2(x, self.sizes, self.sizes)
        return y.movedim(1, -1)

    def extra_repr(self) -> str:
        return f"{'max' if self.is_max else 'avg'}, size={self.sizes}"


class _GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(1, x.ndim - 1)))


class _BatchNorm(nn.BatchNorm1d):
    """Statistics over batch and every position of the last axis, as Keras ``axis=-1``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class _Residual(nn.Module):
    def __init__(self, layer: Residual, shape: Shape, dtype: str) -> None:
        super().__init__()
        self.body = _build_sequence(layer.layers, shape, dtype)
        proj = layer.projection(shape, dtype)
        self.stride = proj.stride if proj else 1
        self.proj = _linear(shape[-1], proj.channels, bias=False) if proj else None

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        if self.stride > 1:  # a strided 1x1 conv == strided slicing, then the channel map
            step = slice(None, None, self.stride)
            skip = x[(slice(None), *([step] * (x.ndim - 2)), slice(None))]
        if self.proj is not None:
            skip = self.proj(skip)
        return self.body(x) + skip


class _Recurrent(nn.Module):
    def __init__(self, layer: LSTM | GRU, features: int) -> None:
        super().__init__()
        u = layer.units
        is_lstm = isinstance(layer, LSTM)
        self.rnn: nn.LSTM | nn.GRU = (nn.LSTM if is_lstm else nn.GRU)(features, u, batch_first=True)
        self.return_sequences = layer.return_sequences
        p = dict(self.rnn.named_parameters())
        with torch.no_grad():  # Keras: kernel (F, gates*u) Glorot, recurrent (u, gates*u)
            _glorot(p["weight_ih_l0"], features, p["weight_ih_l0"].shape[0])
            nn.init.orthogonal_(p["weight_hh_l0"])  # the whole matrix, as Keras does
            p["bias_ih_l0"].zero_()
            p["bias_hh_l0"].zero_()
            if is_lstm:
                p["bias_ih_l0"][u : 2 * u] = 1.0  # unit_forget_bias (torch order i,f,g,o)
        if is_lstm:  # Keras' LSTM has one bias vector: freeze torch's second one at zero
            p["bias_hh_l0"].requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return out if self.return_sequences else out[:, -1]


class _SelfAttention(nn.Module):
    """Keras ``MultiHeadAttention`` self-attention: biased q/k/v/output projections, scaled
    dot product with scale 1/sqrt(key_dim), no mask, no dropout."""

    def __init__(self, dim: int, heads: int, key_dim: int) -> None:
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        inner = heads * key_dim
        self.query, self.key, self.value = (_linear(dim, inner) for _ in range(3))
        self.output = _linear(inner, dim)
        with torch.no_grad():  # Keras' Glorot fans for its (dim, heads, key_dim) einsum kernels
            for lin in (self.query, self.key, self.value):
                _glorot(lin.weight, dim * heads, dim * key_dim)
            _glorot(self.output.weight, heads * key_dim, heads * dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(n, length, self.heads, self.key_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.output(y.transpose(1, 2).reshape(n, length, self.heads * self.key_dim))
